//! Consistency groups across VMs (SPEC.md §11): a round of several
//! members, each one quiesce run on its own VM, moved through barriers
//! together by an etcd v3 cluster the operator already runs — never a
//! coordinator of quiesce's own.
//!
//! - `settings`: the group file, checked like every trusted file;
//! - `etcd`: the few etcd v3 calls a round needs, over HTTPS;
//! - `round`: joining, the barriers, aborts, the lease kept alive, the
//!   proof of the common instant;
//! - `report`: the status's `group` object;
//! - `serve`: the helper binary `quiesce-group` that holds all of the
//!   above in a process of its own; `link`: the runner's side of it (one
//!   JSON line per request and reply, every wait bounded).
//!
//! The runner itself only ever uses `link`, `report` and `settings`'s
//! constants: a run without `--group` maps no network code.
//!
//! The engine knows nothing of runs: the job decides what a barrier
//! passed or failed means (`job::steps::group`).

pub mod etcd;
pub mod link;
pub mod report;
pub mod round;
pub mod serve;
pub mod settings;
