//! quiesce — runs a Linux VM's application-consistency scripts around a
//! filesystem freeze and a snapshot (crate docs are completed in a later step).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod audit;
pub mod bridge;
pub mod commands;
pub mod config;
pub mod error;
pub mod flow;
pub mod freeze;
pub mod integrity;
pub mod precheck;
pub mod report;
pub mod sandbox;
pub mod signals;
pub mod supervise;
