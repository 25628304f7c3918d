//! `quiesce recover` (SPEC.md §6.6): at boot from the packaged unit, from a
//! dead runner's post guard, or by hand — thaws what a dead run left frozen,
//! then runs every pending post-script that is due; with `--retry`, until
//! no failed one waits for its retry.

use crate::job::context::Context;
use crate::job::pending::{self, Entry, PendingOptions};
use crate::job::run::{Finished, Job};
use crate::job::status::{say, Decision};
use crate::job::steps::lock;
use crate::job::steps::recovery::{self, Failures};

/// `quiesce recover`: thaws what a dead run left frozen, then runs every
/// pending post-script that is due. The status lists what it ran.
pub fn run(cx: &Context, retry: bool) -> Finished {
    let (mut job, runner) = match Job::start("recover", cx, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    let mut warnings = Vec::new();
    match lock::lock_and_recover(cx, &mut warnings) {
        Ok(lock) => drop(lock),
        // A live freeze holds the lock: its runner thaws by its own
        // deadline; the post-scripts are still looked at.
        Err(p) => warnings.push(format!("thaw recovery not attempted: {}", p.detail)),
    }
    job.warn_all(warnings);
    match cx.pending.check_for_recovery() {
        Err(p) => return job.fail(&p),
        Ok(false) => {
            say(format!(
                "no state directory {}: nothing was ever recorded there, so no post-script is pending",
                cx.pending.state_dir.path.display()
            ));
            return job.conclude(Decision::ByErrors);
        }
        Ok(true) => {}
    }
    job.pending.opts = Some(cx.pending.clone());
    let mut ran = recovery::run_due(&mut job, &runner, &cx.pending, Failures::AreErrors);
    // A recovered post-script failed (its database is not up yet?): with
    // --retry, try again after its backoff, until it works or the record is
    // removed.
    while let Some(at) = next_retry(&cx.pending).filter(|_| retry) {
        let wait = at.saturating_sub(pending::now_unix()) + 1;
        say(format!("a pending post-script is retried in {wait} s"));
        if runner.signals.wait(std::time::Duration::from_secs(wait)) {
            break; // a signal: stop here, the record stays
        }
        ran += recovery::run_due(&mut job, &runner, &cx.pending, Failures::AreErrors);
    }
    if ran == 0 {
        say("no pending post-script is due");
    }
    job.conclude(Decision::ByErrors)
}

/// When the earliest record waiting for a retry is due again.
fn next_retry(opts: &PendingOptions) -> Option<u64> {
    opts.list()
        .ok()?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) => r.retry_unix,
            _ => None,
        })
        .min()
}
