//! Starting a supervised child: everything is built before `fork()`, the
//! child only runs async-signal-safe syscalls on prebuilt data, and reports a
//! failure before `exec` through a close-on-exec pipe.
//!
//! One file, one job: `spec.rs` what a child is (built before the fork),
//! `child.rs` the child between fork and exec, `parent.rs` the parent's
//! side of the fork and the wait for the exec.

mod child;
mod parent;
mod spec;

pub use parent::{record_oom_score_adj, spawn};
pub use spec::{
    Exec, IdentityCheck, PreExecHook, SpawnError, SpawnSpec, DEFAULT_STARTUP_TIMEOUT, EXEC_FD,
    EXEC_FD_PATH,
};
