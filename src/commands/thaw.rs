//! `quiesce thaw [--mount M]...`: the emergency thaw (SPEC.md §6.4 point 5),
//! safe at any time.

use std::path::PathBuf;

use crate::job::{thaw, Common, Finished, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, mounts: &[PathBuf]) -> Finished {
    thaw::emergency_thaw(common, ropts, mounts)
}
