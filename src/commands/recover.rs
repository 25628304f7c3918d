//! `quiesce recover`: runs what dead runners left pending — their
//! post-scripts (SPEC.md §6.6) — and thaws what they left frozen (§6.4).
//! Safe at any time; the packaged `quiesce-recover.service` runs it at boot,
//! and a dead runner's post guard runs it the moment the runner dies.

use crate::job::{recover, Context, Finished};

pub fn run(cx: &Context, retry: bool) -> Finished {
    recover::recover(cx, retry)
}
