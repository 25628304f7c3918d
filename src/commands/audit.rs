//! `quiesce audit [--json]`: the capability and sandbox audit (SPEC.md §8):
//! what the runner holds, the rules in force for scripts, and what a script
//! really holds (a probe is run).

use crate::job::{inspection, Finished, RunnerOptions};

pub fn run(ropts: &RunnerOptions) -> Finished {
    inspection::audit(ropts)
}
