//! `quiesce snapshot -- CMD`: the whole job of SPEC.md §1, as its steps;
//! every transition is decided by [`decide`] (§5).
//!
//! The post-script runs whenever the pre-check passed, whatever failed in
//! between, and even after a signal to the runner (a database left paused
//! because a post-script was skipped is the outcome this tool exists to
//! prevent); a second signal stops the post-script too.

use std::path::PathBuf;

use crate::error::Problem;
use crate::freeze::mounts::MountPlan;
use crate::freeze::window::WindowStandby;
use crate::job::apps::{App, Apps};
use crate::job::context::Context;
use crate::job::decide::{self, Facts, Next, Settings};
use crate::job::run::{Finished, Job};
use crate::job::runner::Runner;
use crate::job::script::RunContext;
use crate::job::status::{say, Decision};
use crate::job::steps::group::{self, GroupGate};
use crate::job::steps::snapshot_command as command;
use crate::job::steps::snapshot_window::{self as window, mount_plan, Shot, WindowRequest};
use crate::job::steps::{applications, guarantee, phases, workloads};
use crate::trail;

/// `quiesce snapshot -- CMD`: preflight → pre-scripts → window →
/// post-scripts → conclude. The pre-scripts run in application order, the
/// post-scripts in reverse, for every application whose pre-script started.
pub fn run(cx: &Context, req: &WindowRequest) -> Finished {
    let (mut job, runner) = match Job::start("snapshot", cx, true) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    let (early, standby) = guards_first(&mut job, &runner, cx, &req.mounts);
    if let Err(p) = guarantee::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let mut apps = match applications::load(&mut job, cx) {
        Ok(apps) => apps,
        Err(p) => return job.fail(&p),
    };
    let settings = Settings::of_apps(&apps, |a| !a.pc.passed());
    // What can fail fast does so before any script runs: the mount plan and
    // the lock. Nothing is left half done.
    let (plan, _lock) = match window::prepare(&mut job, cx, settings, early) {
        Ok(ready) => ready,
        Err(p) => return job.fail(&p),
    };
    // A database not wholly frozen in this window runs no method (SPEC §3.2).
    workloads::cover(
        &mut job,
        cx,
        &mut apps,
        plan.as_ref(),
        runner.sandbox.as_ref(),
    );
    let settings = Settings::of_apps(&apps, |a| !a.pc.passed());
    say_precheck(&mut job, &apps, settings);
    // A consistency group's round is joined before any script runs: a
    // member that cannot join runs nothing.
    let mut round = match group::join(&mut job, cx) {
        Ok(round) => round,
        Err(p) => return job.fail(&p),
    };
    let ctx = runner.context();
    let started = if decide::scripts_may_run(&apps) {
        phases::pres(&mut job, cx, &ctx, &apps)
    } else {
        Vec::new()
    };
    // An application failed when its pre-check or its pre-script did.
    let settings = Settings::of_apps(&apps, |a| failed(&job, a));
    let pres_ok = apps.list.iter().all(|a| started_ok(&job, a));
    let together = group::pres_done(&mut job, round.as_mut(), apps.passed() && pres_ok);
    let next = if job.status.signal.is_some() || !together {
        decide::after_signal()
    } else {
        decide::after_pre(settings, apps.passed(), pres_ok)
    };
    if !next.snapshot && apps.passed() && job.status.signal.is_none() {
        say("no snapshot is taken (see the errors above)");
    }
    // A failed freeze is every application's: the snapshot is then taken
    // without it only if every application allows it.
    let everyone = Settings::of_apps(&apps, |_| true);
    let shot = window_step(
        &mut job,
        &runner,
        (everyone, next),
        (plan.as_ref(), standby),
        req,
        round.as_mut().map(GroupGate::new),
    );
    group::finish(&mut job, round, shot.froze);
    let post_failed = post(&mut job, &runner, &ctx, &apps, &started);
    let settings = Settings::of_apps(&apps, |a| failed(&job, a));
    let facts = Facts {
        pre_ok: apps.passed() && pres_ok,
        froze: shot.froze,
        snapshot_ok: shot.snapshot_ok,
        post_failed,
        any_error: !job.status.errors.is_empty(),
    };
    conclude(job, settings, facts)
}

/// The application has an error: its pre-check, or a script that failed.
fn failed(job: &Job, app: &App) -> bool {
    !job.status.applications[app.index].errors.is_empty()
}

/// The application's pre-script ran and succeeded.
fn started_ok(job: &Job, app: &App) -> bool {
    let entry = &job.status.applications[app.index];
    entry.pre.is_some() && entry.errors.is_empty()
}

/// Every guard of a `snapshot` exists before its first script — the
/// post-scripts of dead runs that the start of the run executes included —
/// so that every script's filter names them (SPEC §8): the post guard, and
/// for the freeze the watchdog and the freeze threads, which need the mount
/// plan (its widest stage). The plan is kept for later; a plan that cannot
/// be made is reported only if the freeze is on.
fn guards_first(
    job: &mut Job,
    runner: &Runner,
    cx: &Context,
    mounts: &[PathBuf],
) -> (
    Result<MountPlan, Problem>,
    Option<Result<WindowStandby, Problem>>,
) {
    let early = mount_plan(cx, mounts);
    let mut warnings = Vec::new();
    let standby = early
        .as_ref()
        .ok()
        .map(|p| window::standby(runner, p, &mut warnings));
    job.warn_all(warnings);
    guarantee::start_guard(job, cx);
    (early, standby)
}

/// The pre-check's problems in the status, and what they mean for the run.
fn say_precheck(job: &mut Job, apps: &Apps, settings: Settings) {
    applications::report_problems(job, apps);
    if !apps.passed() {
        say(if settings.continue_on_failure {
            "pre-check failed: no script of that application runs; continuing without application consistency (continueBackupOnFailure)"
        } else {
            "pre-check failed: no script runs and no snapshot is taken (continueBackupOnFailure=false)"
        });
    }
}

/// The plan and the window's standby, as the start of the run made them.
type Prepared<'p> = (
    Option<&'p MountPlan>,
    Option<Result<WindowStandby, Problem>>,
);

/// Freeze and snapshot, as `next` says. Mounts that cannot be opened are a
/// failed freeze (§5 row 4). With `group`, the window's barriers are the
/// group's too.
fn window_step(
    job: &mut Job,
    runner: &Runner,
    (settings, next): (Settings, Next),
    (plan, standby): Prepared<'_>,
    req: &WindowRequest,
    group: Option<GroupGate<'_>>,
) -> Shot {
    let freeze = next.snapshot && next.freeze;
    let (ready, failed) = match (plan.filter(|_| freeze), standby) {
        (Some(plan), Some(Ok(standby))) => match window::open_targets(plan) {
            Ok(t) => (Some((t, standby)), None),
            Err(p) => {
                command::dismiss(standby);
                (None, Some(p))
            }
        },
        (Some(_), Some(Err(p))) => (None, Some(p)),
        (_, standby) => {
            if let Some(Ok(standby)) = standby {
                command::dismiss(standby);
            }
            (None, None)
        }
    };
    if !next.snapshot {
        return Shot::default();
    }
    if let Some(p) = failed {
        job.problem(&p);
        if !decide::snapshot_after_freeze_failure(settings, false) {
            return Shot::default();
        }
    }
    // A panic in the window or the snapshot is contained here, so the
    // post-script still runs: by then the panic hook thawed through the
    // guard and the window's Drop closed it while unwinding. The run then
    // exits 70.
    let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        command::take_snapshot(runner, ready, &req.cmd, req.max_freeze, settings, group)
    }));
    let run = taken.unwrap_or_else(|_| {
        trail::release();
        crate::freeze::signals::track_child_group(0);
        job.status.internal_error = true;
        say("internal error (a bug) in the freeze window; filesystems were thawed; running the post-script");
        command::SnapshotRun::default()
    });
    window::file_window(job, run)
}

/// The post-scripts, in reverse application order: always, for every
/// application whose pre-script started; what earlier runs of the others
/// left holding is still ended. Whether any post-script failed.
fn post(
    job: &mut Job,
    runner: &Runner,
    ctx: &RunContext<'_>,
    apps: &Apps,
    started: &[&App],
) -> bool {
    if let Some(sig) = job.status.signal {
        if !started.is_empty() {
            say(format!(
                "signal {sig} received: running the post-script(s) to resume the application(s), then stopping (a second signal stops them)"
            ));
        }
        runner.signals.drain();
    }
    phases::posts(job, ctx, apps, |a| {
        started.iter().any(|s| s.index == a.index)
    })
}

/// The result and consistency, from what happened (§5). The line says
/// what the table gave; after a signal or a contained bug the run is still
/// a failure.
fn conclude(job: Job, settings: Settings, facts: Facts) -> Finished {
    let consistency = decide::consistency(settings, facts);
    let outcome = decide::outcome(settings, facts);
    say(format!(
        "snapshot {}: consistency {}",
        outcome.name(),
        consistency.name()
    ));
    job.conclude(Decision::Table(outcome, consistency))
}
