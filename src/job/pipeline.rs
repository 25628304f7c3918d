//! The runs, each a short sequence of steps (SPEC.md §1, §2): the script
//! phases (`pre`, `post`) over every application, and the steps every run
//! shares — the pre-check of the applications, one application's script
//! phase, its holders.

use super::apps::{self, App, Apps};
use super::decide;
use super::script::{self, AppTag, PhaseResult, RunContext};
use super::status::{self, ApplicationStatus, Outcome, ScriptPhaseStatus};
use super::{holders, Context, Finished, Job, Phase};
use crate::error::Problem;
use crate::trail;

/// The pre-check of every application: each check recorded in the trail
/// (naming its application), each warning said and kept, and one entry per
/// application in the status. A source that fails closed is the error.
pub fn precheck(job: &mut Job, cx: &Context) -> Result<Apps, Problem> {
    let apps = apps::precheck(&cx.apps)?;
    job.status.application_source =
        Some(serde_json::to_value(&apps.source).expect("source serialises"));
    for app in &apps.list {
        trail::set_application(app.name.clone());
        super::preflight::record(job.status.operation, &app.pc);
        let warnings: Vec<String> = app
            .pc
            .warnings
            .iter()
            .map(|w| {
                if apps.several() {
                    format!("{}: {w}", app.name)
                } else {
                    w.clone()
                }
            })
            .collect();
        for w in &warnings {
            status::say(format!("warning: {w}"));
        }
        job.warn_all(warnings);
        job.status.applications.push(application_status(app));
    }
    leave(&apps);
    for w in &apps.warnings {
        status::say(format!("warning: {w}"));
    }
    job.warn_all(apps.warnings.iter().cloned());
    Ok(apps)
}

/// The status entry of an application, before any of its scripts ran.
fn application_status(app: &App) -> ApplicationStatus {
    let c = app.pc.config.as_ref();
    ApplicationStatus {
        name: app.name.clone(),
        config: app.config_path.display().to_string(),
        config_sha256: app.pc.config_sha256.clone(),
        continue_backup_on_failure: app.continue_on_failure(),
        fs_freeze_enabled: app.fs_freeze_enabled(),
        timeout_in_seconds: c.map(|c| c.timeout_secs),
        errors: app.pc.problems.iter().map(Into::into).collect(),
        ..ApplicationStatus::default()
    }
}

/// From here the trail names `app` on every record (with one application,
/// it names it throughout the run).
pub fn enter(apps: &Apps, app: &App) {
    trail::set_application(app.name.clone());
    if apps.several() {
        status::say(format!(
            "application {} of {}: {} ({})",
            app.index + 1,
            apps.list.len(),
            app.name,
            app.config_path.display()
        ));
    }
}

/// The records that follow belong to the run, not to one of several
/// applications.
pub fn leave(apps: &Apps) {
    if apps.several() {
        trail::set_application("");
    }
}

/// Every application's pre-check problems in the status, in application
/// order (a problem they share, the plugin-host file's, once).
pub fn report_precheck(job: &mut Job, apps: &Apps) {
    for app in &apps.list {
        for p in &app.pc.problems {
            if !job.status.has_error(p) {
                job.problem(p);
            }
        }
    }
}

/// `quiesce pre` / `quiesce post`: every application's script with its
/// retries and timeout, as the extension calls them — pre-scripts in
/// application order, post-scripts in reverse. Pre-script leftovers are
/// recorded; each application's post phase ends its own.
pub fn script_phase(cx: &Context, phase: Phase) -> Finished {
    let (mut job, runner) = match Job::start(phase.name(), cx, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if phase == Phase::Pre {
        // Before any script, the post-scripts of dead runs included (SPEC §8).
        super::recover::start_guard(&mut job, cx);
    }
    if let Err(p) = super::recover::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let ctx = runner.context();
    let apps = match precheck(&mut job, cx) {
        Ok(apps) => apps,
        Err(p) => {
            if phase == Phase::Post {
                // Nothing may run, but what earlier pre-scripts left holding
                // must not outlive the backup.
                release_holders(&mut job, &ctx);
            }
            return job.fail(&p);
        }
    };
    report_precheck(&mut job, &apps);
    match phase {
        Phase::Pre => {
            if decide::scripts_may_run(&apps) {
                pres(&mut job, cx, &ctx, &apps);
            }
        }
        Phase::Post => {
            let post_of = super::recover::started_by_pre(&job.pending, &apps);
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
            posts(&mut job, &ctx, &apps, runs);
        }
    }
    if !job.status.errors.is_empty() {
        job.status.result = Outcome::Failure;
    }
    job.finish()
}

/// The pre-scripts, one after another in application order, of every
/// application that passed its pre-check; a failure whose application does
/// not allow going on stops the later ones, and so does a signal. Returns
/// the applications whose pre-script started.
pub fn pres<'a>(job: &mut Job, cx: &Context, ctx: &RunContext<'_>, apps: &'a Apps) -> Vec<&'a App> {
    let mut started = Vec::new();
    for app in &apps.list {
        if app.pc.ready(Phase::Pre).is_none() {
            continue;
        }
        super::recover::arm(job, cx, app);
        started.push(app);
        let res = run_script(job, ctx, Phase::Pre, apps, app);
        if let Some(sig) = res.interrupted {
            status::say(format!(
                "stopped by signal {sig}; the script's process tree was killed"
            ));
            job.interrupted(sig);
            break;
        }
        if !res.ok() && !app.continue_on_failure() {
            let later = apps.list.len() - app.index - 1;
            if later > 0 {
                status::say(format!(
                    "{}: continueBackupOnFailure=false, so the pre-scripts of the {later} later application(s) do not run",
                    app.name
                ));
            }
            break;
        }
    }
    started
}

/// The post-scripts, in reverse application order, of every application
/// that `runs` (whatever the others did); the others run none, but their
/// holders are still ended in their place in the order. A signal during
/// one stops the rest: they stay pending, and the post guard runs them once
/// this runner is gone. Returns whether any post-script failed.
pub fn posts(
    job: &mut Job,
    ctx: &RunContext<'_>,
    apps: &Apps,
    runs: impl Fn(&App) -> bool,
) -> bool {
    let mut failed = false;
    for app in apps.list.iter().rev() {
        let actx = ctx.for_app(tag(app));
        if !runs(app) || app.pc.ready(Phase::Post).is_none() {
            let killed = release_holders(job, &actx);
            if !killed.is_empty() {
                file_phase(
                    job,
                    apps,
                    app,
                    Phase::Post,
                    ScriptPhaseStatus {
                        holders_terminated: killed,
                        ..Default::default()
                    },
                );
            }
            continue;
        }
        let res = run_script(job, ctx, Phase::Post, apps, app);
        failed |= !res.ok();
        if let Some(sig) = res.interrupted {
            job.interrupted(sig);
            break;
        }
    }
    failed
}

/// The application of a script phase, as its context carries it.
pub fn tag(app: &App) -> AppTag {
    AppTag {
        index: app.index,
        name: app.name.clone(),
        config: app.config_path.clone(),
    }
}

/// Runs one application's script phase and files its outcome in the
/// status: before a pre-script, the holders of runs that are over are ended;
/// after it, what it left running is recorded; after a post-script, the
/// application's holders are ended. A failure is the phase's error, and the
/// run's result.
pub fn run_script(
    job: &mut Job,
    ctx: &RunContext<'_>,
    phase: Phase,
    apps: &Apps,
    app: &App,
) -> PhaseResult {
    let Some((script, config)) = app.pc.ready(phase) else {
        unreachable!("run_script is called for applications that passed their pre-check");
    };
    enter(apps, app);
    let ctx = ctx.for_app(tag(app));
    if phase == Phase::Pre && holders::any_recorded(&ctx) {
        let awaited = super::recover::awaited_operations(&job.pending);
        job.warn_all(holders::end_stale(&ctx, &awaited));
    }
    let mut settling = super::recover::before_phase(&job.pending, phase, app);
    if settling.gone {
        // Another `post`, or a recovery, ran it while this one waited.
        status::say(format!(
            "{}: its post-script already ran for the pre run this post completes (another post or a recovery settled it meanwhile): not run again",
            app.name
        ));
        leave(apps);
        return PhaseResult::not_run(script);
    }
    let res = script::run_phase(&ctx, script, config, &mut settling);
    super::recover::after_phase(job, phase, settling, res.interrupted.is_some(), app);
    let mut s = res.status.clone();
    match phase {
        Phase::Pre => job.warn_all(holders::record(&ctx, &res.leftovers)),
        Phase::Post => s.holders_terminated = release_holders(job, &ctx),
    }
    file_phase(job, apps, app, phase, s);
    if let Some(p) = &res.problem {
        let p = job.naming_last_result(p.clone());
        job.problem(&p);
        job.status.applications[app.index].errors.push((&p).into());
        job.status.result = Outcome::Failure;
    }
    leave(apps);
    res
}

/// Files a script phase of `app` in the status: in its `applications`
/// entry, and — with one application — in `phases`, as always.
fn file_phase(job: &mut Job, apps: &Apps, app: &App, phase: Phase, s: ScriptPhaseStatus) {
    let single = !apps.several();
    let entry = &mut job.status.applications[app.index];
    match phase {
        Phase::Pre => {
            entry.pre = Some(s.clone());
            if single {
                job.status.phases.pre = Some(s);
            }
        }
        Phase::Post => {
            entry.post = Some(s.clone());
            if single {
                job.status.phases.post = Some(s);
            }
        }
    }
}

/// Ends the holders this run may end (its own, and those of runs that are
/// over; of the context's application when it names one); returns their
/// pids.
pub fn release_holders(job: &mut Job, ctx: &RunContext<'_>) -> Vec<i32> {
    if !holders::any_recorded(ctx) {
        return Vec::new();
    }
    let awaited = super::recover::awaited_operations(&job.pending);
    let (killed, warnings) = holders::terminate(ctx, &awaited);
    job.warn_all(warnings);
    killed
}
