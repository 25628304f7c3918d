//! `quiesce audit [--json]`: the capability and sandbox audit (SPEC.md §8):
//! what the runner holds, the rules in force for scripts, and what a script
//! really holds (a probe is run).

use crate::job::{inspection, Context, Finished};

pub fn run(cx: &Context) -> Finished {
    inspection::audit(cx)
}
