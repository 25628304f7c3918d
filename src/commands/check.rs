//! `quiesce check [--mount M]...`: every check, nothing executed, nothing
//! frozen. Exit 0 only if a snapshot would be application-consistent.

use std::path::PathBuf;

use crate::job::{check, Common, Finished, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, mounts: &[PathBuf]) -> Finished {
    check::check(common, ropts, mounts)
}
