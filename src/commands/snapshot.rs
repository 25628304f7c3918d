//! `quiesce snapshot [--mount M]... -- CMD...`: the whole job of SPEC.md §1.

use crate::job::snapshot::{self, WindowRequest};
use crate::job::{Common, Finished, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, req: &WindowRequest) -> Finished {
    snapshot::snapshot(common, ropts, req)
}
