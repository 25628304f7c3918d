//! `quiesce pre` and `quiesce post`: one script with its retries and timeout,
//! as the existing extension calls them (SPEC.md §2, §7).

use crate::job::{pipeline, Common, Finished, Phase, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, phase: Phase) -> Finished {
    pipeline::script_phase(common, ropts, phase)
}
