//! What a run keeps armed for its post-script guarantee (SPEC.md §6.6):
//! its own pending records, the post guard, the record the next pre-script
//! writes — and, as the run ends, what becomes of the guard. The steps that
//! arm and settle it are in [`super::steps::guarantee`].

use super::pending::{self, Due, Entry, PendingOptions, PendingPost, Writer};
use super::postguard::PostGuard;
use crate::sandbox::guards;

/// What a run keeps about pending post-scripts.
#[derive(Default)]
pub struct PendingState {
    pub(crate) opts: Option<PendingOptions>,
    /// This run's own records, one per application whose pre-script
    /// started and whose post-script has not yet run to its end.
    pub(crate) own: Vec<PendingPost>,
    /// The guard, from before the first pre-script to the end of the run.
    pub(crate) guard: Option<PostGuard>,
    /// A post-script was cut short by a signal: the guard stays armed when
    /// the run ends, and runs what is left once this runner is gone.
    pub(crate) keep_guard: bool,
    /// A separate `pre` left post-scripts awaiting a `post` call until then:
    /// the guard stays and runs what is left at that time.
    pub(crate) awaited_due: Option<u64>,
    /// The record the next pre-script writes right before its fork.
    pub(crate) next: Option<Writer>,
}

/// The operations whose post-script a separate `quiesce post` is still
/// awaited for and not yet due: their pre-script holders are theirs until
/// then (SPEC §7), no other run ends them.
pub fn awaited_operations(state: &PendingState) -> Vec<String> {
    let Some(opts) = state.opts.as_ref() else {
        return Vec::new();
    };
    let boot = pending::boot_id();
    let now = pending::now_unix();
    awaiting_post_command(opts)
        .filter(|r| matches!(r.due(&boot, now), Due::NotYet(_)))
        .map(|r| r.operation_id)
        .collect()
}

/// The records of finished `pre` runs whose post-scripts await a separate
/// `quiesce post`.
pub fn awaiting_post_command(opts: &PendingOptions) -> impl Iterator<Item = Box<PendingPost>> {
    opts.list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) if r.awaits == pending::Awaits::PostCommand => Some(r),
            _ => None,
        })
}

/// The end of a run: the guard is stopped — unless a post-script was cut
/// short (then it runs what is left as soon as this runner has exited), or
/// a separate `pre` left post-scripts awaiting a `post` (then it stays until
/// they are due and runs what is left then: SPEC §6.6). A record still
/// pending (its post-script could not run) stays for `recover`.
pub fn at_finish(state: &mut PendingState) {
    if let Some(guard) = state.guard.take() {
        if state.keep_guard {
            guard.leave_armed();
        } else if let Some(due) = state.awaited_due {
            guard.await_post(due);
        } else {
            let pid = guard.pid;
            guard.stop();
            guards::release(pid);
        }
    }
}
