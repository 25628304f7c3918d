//! `quiesce freeze [--mount M]... [--max-freeze SECS] -- CMD...`: freeze,
//! run CMD, thaw. No scripts.

use crate::job::snapshot::{self, WindowRequest};
use crate::job::{Context, Finished};

pub fn run(cx: &Context, req: &WindowRequest) -> Finished {
    snapshot::freeze(cx, req)
}
