//! `quiesce check [--mount M]...`: every check, nothing executed, nothing
//! frozen. Exit 0 only if a snapshot would be application-consistent.

use std::path::PathBuf;

use crate::job::{check, Context, Finished};

pub fn run(cx: &Context, mounts: &[PathBuf]) -> Finished {
    check::check(cx, mounts)
}
