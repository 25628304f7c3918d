//! The freeze window (SPEC.md §6): which filesystems are frozen and in what
//! order ([`mounts`]), the lock that keeps two freezers apart ([`lock`]), the
//! ioctls ([`ioctl`]), the thaw table the signal handlers use ([`guard`]), the
//! window itself ([`window`]), the watchdog that survives the runner
//! ([`watchdog`]), the recovery record ([`state`]) and the runner's signal
//! handlers, which thaw before anything else ([`signals`]).

pub mod crew;
pub mod error;
pub mod guard;
pub mod ioctl;
pub mod lock;
pub mod mounts;
pub mod signals;
pub mod state;
pub mod watchdog;
pub mod window;
