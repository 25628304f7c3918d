//! The runs, one file each: what `main.rs` calls with the run's
//! [`Context`](super::context::Context). Each is a short sequence of steps
//! ([`super::steps`]) that returns the status document and the exit code.

pub mod audit;
pub mod check;
pub mod freeze;
pub mod hook;
pub mod prepost;
pub mod recover;
pub mod snapshot;
pub mod thaw;
