//! `quiesce freeze [--mount M]... [--max-freeze SECS] -- CMD...`: freeze,
//! run CMD, thaw. No scripts.

use crate::job::snapshot::{self, WindowRequest};
use crate::job::{Common, Finished, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, req: &WindowRequest) -> Finished {
    snapshot::freeze(common, ropts, req)
}
