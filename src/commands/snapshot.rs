//! `quiesce snapshot [--mount M]... -- CMD...`: the whole job of SPEC.md §1.

use crate::job::snapshot::{self, WindowRequest};
use crate::job::{Context, Finished};

pub fn run(cx: &Context, req: &WindowRequest) -> Finished {
    snapshot::snapshot(cx, req)
}
