//! The freeze window (SPEC.md §6): which filesystems are frozen and in what
//! order ([`mounts`]), and the lock that keeps two freezers apart ([`lock`]).

pub mod lock;
pub mod mounts;
