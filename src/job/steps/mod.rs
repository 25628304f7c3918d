//! The steps several runs share, each in a file of its own.

pub mod agent_deadline;
pub mod applications;
pub mod group;
pub mod guarantee;
pub mod held;
pub mod lock;
pub mod phases;
pub mod recovery;
pub mod snapshot_command;
pub mod snapshot_window;
pub mod window_order;
pub mod workloads;
