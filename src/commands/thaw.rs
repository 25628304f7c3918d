//! `quiesce thaw [--mount M]...`: the emergency thaw (SPEC.md §6.4 point 5),
//! safe at any time.

use std::path::PathBuf;

use crate::job::{thaw, Context, Finished};

pub fn run(cx: &Context, mounts: &[PathBuf]) -> Finished {
    thaw::emergency_thaw(cx, mounts)
}
