//! `quiesce pre` and `quiesce post` (SPEC.md §2, §7): every application's
//! script with its retries and timeout, as the extension calls them.

use crate::error::Problem;
use crate::job::apps::{App, Apps};
use crate::job::context::Context;
use crate::job::decide;
use crate::job::phase::Phase;
use crate::job::run::{Finished, Job};
use crate::job::runner::Runner;
use crate::job::status::{self, Decision};
use crate::job::steps::snapshot_window::mount_plan;
use crate::job::steps::{applications, guarantee, phases, workloads};

/// `quiesce pre` / `quiesce post`: every application's script with its
/// retries and timeout, as the extension calls them — pre-scripts in
/// application order, post-scripts in reverse. Pre-script leftovers are
/// recorded; each application's post phase ends its own.
pub fn run(cx: &Context, phase: Phase) -> Finished {
    let (mut job, runner) = match begin(cx, phase) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    match scripts(&mut job, &runner, cx, phase) {
        Ok(_) => job.conclude(Decision::ByErrors),
        Err(p) => job.fail(&p),
    }
}

/// The start of a `pre` or `post` run (also a hook's): the runner set up,
/// for a pre the post guard before any script, and what dead runs left
/// pending run first.
pub fn begin(cx: &Context, phase: Phase) -> Result<(Job, Runner), Box<Finished>> {
    let (mut job, runner) = Job::start(phase.name(), cx, false)?;
    if phase == Phase::Pre {
        // Before any script, the post-scripts of dead runs included (SPEC §8).
        guarantee::start_guard(&mut job, cx);
    }
    if let Err(p) = guarantee::at_start(&mut job, &runner, cx) {
        return Err(Box::new(job.fail(&p)));
    }
    Ok((job, runner))
}

/// Every application's script of `phase`: the pre-scripts in order, or
/// the post-scripts in reverse (after a separate `pre`, only of those it
/// started). The applications, and for a pre phase the indexes of those
/// whose pre-script started; a problem loading them is the run's.
pub fn scripts(
    job: &mut Job,
    runner: &Runner,
    cx: &Context,
    phase: Phase,
) -> Result<(Apps, Vec<usize>), Problem> {
    let ctx = runner.context();
    let mut apps = match applications::load(job, cx) {
        Ok(apps) => apps,
        Err(p) => {
            if phase == Phase::Post {
                // Nothing may run, but what earlier pre-scripts left holding
                // must not outlive the backup.
                phases::release_holders(job, &ctx);
            }
            return Err(p);
        }
    };
    if phase == Phase::Pre {
        // The freeze is another tool's: its files are checked against what
        // discovery would freeze (SPEC §3.2, §6.1).
        let plan = mount_plan(cx, &[]).ok();
        workloads::cover(job, cx, &mut apps, plan.as_ref(), runner.sandbox.as_ref());
    }
    applications::report_problems(job, &apps);
    let mut started = Vec::new();
    match phase {
        Phase::Pre => {
            if decide::scripts_may_run(&apps) {
                started = phases::pres(job, cx, &ctx, &apps)
                    .iter()
                    .map(|a| a.index)
                    .collect();
            }
        }
        Phase::Post => separate_post(job, runner, &apps),
    }
    Ok((apps, started))
}

/// A separate `post`: the post-scripts of what the `pre` it completes
/// started (every one after no `pre`), each said when it does not run.
fn separate_post(job: &mut Job, runner: &Runner, apps: &Apps) {
    let ctx = runner.context();
    let post_of = guarantee::started_by_pre(&job.pending, apps);
    let runs = |a: &App| post_of.runs.as_ref().is_none_or(|s| s.contains(&a.index));
    for app in apps.list.iter().filter(|a| !runs(a)) {
        match post_of.already_ran.iter().find(|(i, _)| *i == app.index) {
            Some((_, how)) => status::say(format!(
                "{}: {how}, for the pre run this post completes: not run again",
                app.name
            )),
            None => status::say(format!(
                "{}: its pre-script did not start in the pre run this post completes, so its post-script does not run",
                app.name
            )),
        }
    }
    phases::posts(job, &ctx, apps, runs);
}

/// The rollback of a pre phase that will have no separate `post` (a hook
/// whose agent gives up after a failed call): the post-scripts of the
/// applications whose pre-script `started`, in reverse, right now; the
/// post guard then has nothing left to await.
pub fn rollback(job: &mut Job, runner: &Runner, apps: &Apps, started: &[usize]) -> bool {
    if job.status.signal.is_some() {
        runner.signals.drain();
    }
    let ctx = runner.context();
    let failed = phases::posts(job, &ctx, apps, |a| started.contains(&a.index));
    if job.pending.own.is_empty() {
        job.pending.awaited_due = None;
    }
    failed
}
