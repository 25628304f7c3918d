//! Consistency groups across VMs (SPEC.md §11): a round of several
//! members, each one quiesce run on its own VM, moved through barriers
//! together by an etcd v3 cluster the operator already runs — never a
//! coordinator of quiesce's own.
//!
//! - `settings`: the group file, checked like every trusted file;
//! - `etcd`: the few etcd v3 calls a round needs, over HTTPS;
//! - `round`: joining, the barriers, aborts, the lease kept alive, the
//!   proof of the common instant.
//!
//! The engine knows nothing of runs: the job decides what a barrier
//! passed or failed means (`job::steps::group`).

pub mod etcd;
pub mod round;
pub mod settings;
