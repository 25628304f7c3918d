//! The freeze window (SPEC.md §6.2–§6.5): from the first `FIFREEZE` to the
//! last `FITHAW`, every way out thaws.
//!
//! Layers, each enough on its own for the failures it covers:
//! 1. `thaw_all` on the normal path, in exact reverse of what froze;
//! 2. the window's deadline, enforced by the caller's wait (thaw, then kill);
//! 3. the signal handlers and the panic hook thaw through the
//!    [`guard`](super::guard) table;
//! 4. `Drop` thaws on any early return or unwinding;
//! 5. the [`watchdog`](super::watchdog) thaws when the runner dies, SIGKILL
//!    included;
//! 6. [`state`](super::state) lets the next run or `quiesce thaw` recover.
//!
//! During the window the runner writes no file: `state.json` is written
//! before the first freeze and removed after the last thaw (it is on tmpfs
//! anyway), and log records are held in memory by the caller.
//!
//! One file, one job: `targets.rs` the mounts and their descriptors,
//! `standby.rs` what runs before the first script, `freeze.rs` the window
//! prepared and frozen stage by stage, `thaw.rs` its thaw and close.

mod freeze;
mod standby;
mod targets;
mod thaw;

pub use freeze::{
    FreezeWindow, WindowOptions, DEFAULT_MAX_FREEZE, MAX_MAX_FREEZE, PER_CALL_DEADLINE,
};
pub use standby::{page_file, WindowStandby};
pub use targets::MountTarget;
pub use thaw::{MountReport, WindowReport, PENDING_GRACE};
