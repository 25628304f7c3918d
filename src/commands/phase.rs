//! `quiesce pre` and `quiesce post`: one script with its retries and timeout,
//! as the existing extension calls them (SPEC.md §2, §7).

use crate::job::{pipeline, Context, Finished, Phase};

pub fn run(cx: &Context, phase: Phase) -> Finished {
    pipeline::script_phase(cx, phase)
}
