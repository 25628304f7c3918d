//! The main children of live [`Supervised`](super::Supervised) handles.
//! Reaping and orphan adoption are process-wide (one subreaper), so handles
//! must know about each other: an orphan sweep never reaps a child that a
//! live handle still waits for.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<i32>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn register(pid: i32) {
    live().insert(pid);
}

pub(crate) fn unregister(pid: i32) {
    live().remove(&pid);
}

pub(crate) fn is_live(pid: i32) -> bool {
    live().contains(&pid)
}

/// How many handles are live.
pub(crate) fn count() -> usize {
    live().len()
}
