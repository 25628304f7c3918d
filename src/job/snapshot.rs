//! The runs around a freeze window: `quiesce snapshot`, the whole job of
//! SPEC.md §1, and `quiesce freeze`, the window alone. Each is a short
//! sequence of steps; every transition is decided by [`decide`] (§5).
//!
//! The post-script runs whenever the pre-check passed, whatever failed in
//! between, and even after a signal to the runner (a database left paused
//! because a post-script was skipped is the outcome this tool exists to
//! prevent); a second signal stops the post-script too.

use std::path::PathBuf;
use std::time::Duration;

use super::apps::{App, Apps};
use super::decide::{self, Facts, Next, Settings};
use super::pipeline;
use super::runner::Runner;
use super::script::RunContext;
use super::status::{self, say};
use super::window::{self, freeze_phase_json, SnapshotRun};
use super::{mount_plan, Context, Finished, Job};
use crate::error::Problem;
use crate::freeze::lock::RunLock;
use crate::freeze::mounts::MountPlan;
use crate::freeze::window::WindowStandby;
use crate::trail;

/// What the operator asked of the window.
#[derive(Debug, Clone)]
pub struct WindowRequest {
    /// `--mount`: replaces discovery when not empty.
    pub mounts: Vec<PathBuf>,
    /// `--max-freeze`.
    pub max_freeze: Duration,
    /// The snapshot command.
    pub cmd: Vec<String>,
}

/// `quiesce snapshot -- CMD`: preflight → pre-scripts → window →
/// post-scripts → conclude. The pre-scripts run in application order, the
/// post-scripts in reverse, for every application whose pre-script started.
pub fn snapshot(cx: &Context, req: &WindowRequest) -> Finished {
    let (mut job, runner) = match Job::start("snapshot", cx, true) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    let (early, standby) = guards_first(&mut job, &runner, cx, &req.mounts);
    if let Err(p) = super::recover::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let apps = match pipeline::precheck(&mut job, cx) {
        Ok(apps) => apps,
        Err(p) => return job.fail(&p),
    };
    let settings = Settings::of_apps(&apps, |a| !a.pc.passed());
    // What can fail fast does so before any script runs: the mount plan and
    // the lock. Nothing is left half done.
    let (plan, _lock) = match prepare(&mut job, cx, settings, early) {
        Ok(ready) => ready,
        Err(p) => return job.fail(&p),
    };
    report_precheck(&mut job, &apps, settings);
    let ctx = runner.context();
    let started = if decide::scripts_may_run(&apps) {
        pipeline::pres(&mut job, cx, &ctx, &apps)
    } else {
        Vec::new()
    };
    // An application failed when its pre-check or its pre-script did.
    let settings = Settings::of_apps(&apps, |a| failed(&job, a));
    let pres_ok = apps.list.iter().all(|a| started_ok(&job, a));
    let next = if job.status.signal.is_some() {
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
        everyone,
        next,
        plan.as_ref(),
        standby,
        req,
    );
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

/// `quiesce freeze -- CMD`: freeze, run CMD, thaw. No scripts.
pub fn freeze(cx: &Context, req: &WindowRequest) -> Finished {
    let (mut job, runner) = match Job::start("freeze", cx, true) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if let Err(p) = super::recover::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let settings = Settings::FREEZE_ONLY;
    let (plan, _lock) = match prepare(&mut job, cx, settings, mount_plan(cx, &req.mounts)) {
        Ok(ready) => ready,
        Err(p) => return job.fail(&p),
    };
    let targets = plan.as_ref().map(window::open_targets).transpose();
    let targets = match targets {
        Ok(t) => t,
        Err(p) => return job.fail(&p),
    };
    let mut warnings = Vec::new();
    let standby = plan
        .as_ref()
        .map(|p| window::standby(&runner, p, &mut warnings));
    job.warn_all(warnings);
    let ready = match (targets, standby) {
        (Some(t), Some(Ok(standby))) => Some((t, standby)),
        (_, Some(Err(p))) => return job.fail(&p),
        _ => None,
    };
    let run = window::take_snapshot(&runner, ready, &req.cmd, req.max_freeze, settings);
    let shot = file_window(&mut job, run);
    if let Some(sig) = job.status.signal {
        say(format!("stopped by signal {sig} after thawing"));
    }
    let facts = Facts {
        pre_ok: false,
        froze: shot.froze,
        snapshot_ok: shot.snapshot_ok,
        post_failed: false,
        any_error: !job.status.errors.is_empty(),
    };
    let (outcome, consistency) = decide::freeze_only(facts);
    job.status.result = outcome;
    job.status.consistency = Some(consistency);
    if job.status.signal.is_some() || job.status.internal_error {
        job.status.result = status::Outcome::Failure;
    }
    job.finish()
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
    super::recover::start_guard(job, cx);
    (early, standby)
}

/// The mount plan (when the freeze is on) and the freeze lock, before
/// anything runs; what a dead runner left frozen is recovered here.
fn prepare(
    job: &mut Job,
    cx: &Context,
    settings: Settings,
    plan: Result<MountPlan, Problem>,
) -> Result<(Option<MountPlan>, RunLock), Problem> {
    let plan = if settings.fs_freeze_enabled {
        let plan = plan?;
        job.say_warnings(plan.warnings.iter().cloned());
        Some(plan)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let lock = window::lock_and_recover(cx, &mut warnings);
    job.warn_all(warnings);
    Ok((plan, lock?))
}

/// The pre-check's problems in the status, and what they mean for the run.
fn report_precheck(job: &mut Job, apps: &Apps, settings: Settings) {
    pipeline::report_precheck(job, apps);
    if !apps.passed() {
        say(if settings.continue_on_failure {
            "pre-check failed: no script of that application runs; continuing without application consistency (continueBackupOnFailure)"
        } else {
            "pre-check failed: no script runs and no snapshot is taken (continueBackupOnFailure=false)"
        });
    }
}

/// What the window achieved.
#[derive(Default)]
struct Shot {
    froze: bool,
    snapshot_ok: bool,
}

/// Freeze and snapshot, as `next` says. Mounts that cannot be opened are a
/// failed freeze (§5 row 4).
fn window_step(
    job: &mut Job,
    runner: &Runner,
    settings: Settings,
    next: Next,
    plan: Option<&MountPlan>,
    standby: Option<Result<WindowStandby, Problem>>,
    req: &WindowRequest,
) -> Shot {
    let freeze = next.snapshot && next.freeze;
    let (ready, failed) = match (plan.filter(|_| freeze), standby) {
        (Some(plan), Some(Ok(standby))) => match window::open_targets(plan) {
            Ok(t) => (Some((t, standby)), None),
            Err(p) => {
                window::dismiss(standby);
                (None, Some(p))
            }
        },
        (Some(_), Some(Err(p))) => (None, Some(p)),
        (_, standby) => {
            if let Some(Ok(standby)) = standby {
                window::dismiss(standby);
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
        window::take_snapshot(runner, ready, &req.cmd, req.max_freeze, settings)
    }));
    let run = taken.unwrap_or_else(|_| {
        trail::release();
        crate::freeze::signals::track_child_group(0);
        job.status.internal_error = true;
        say("internal error (a bug) in the freeze window; filesystems were thawed; running the post-script");
        SnapshotRun::default()
    });
    file_window(job, run)
}

/// Files what the window did in the job: warnings, errors, phases.
fn file_window(job: &mut Job, run: SnapshotRun) -> Shot {
    // Gathered in the window, where nothing is said: said now.
    job.say_warnings(run.warnings.iter().cloned());
    for p in &run.problems {
        job.problem(p);
    }
    if let Some(w) = &run.window {
        job.status.phases.freeze = Some(freeze_phase_json(w));
    }
    if let Some(s) = &run.snapshot {
        job.status.phases.snapshot = Some(serde_json::to_value(s).expect("serialises"));
    }
    if let Some(sig) = run.interrupted {
        job.interrupted(sig);
    }
    Shot {
        froze: run.froze,
        snapshot_ok: run.snapshot_ok,
    }
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
    pipeline::posts(job, ctx, apps, |a| {
        started.iter().any(|s| s.index == a.index)
    })
}

/// The result and consistency, from what happened (§5).
fn conclude(mut job: Job, settings: Settings, facts: Facts) -> Finished {
    let consistency = decide::consistency(settings, facts);
    job.status.consistency = Some(consistency);
    job.status.result = decide::outcome(settings, facts);
    say(format!(
        "snapshot {}: consistency {}",
        job.status.result.name(),
        consistency.name()
    ));
    if job.status.signal.is_some() || job.status.internal_error {
        job.status.result = status::Outcome::Failure;
    }
    job.finish()
}
