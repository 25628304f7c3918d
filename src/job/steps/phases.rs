//! A script phase over every application (SPEC.md §1, §3.1, §7): the
//! pre-scripts in application order, the post-scripts in reverse; one
//! application's script phase with the guarantee around it, filed in the
//! status; the holders it leaves and ends.

use super::applications::{enter, leave};
use super::guarantee;
use crate::job::apps::{App, Apps};
use crate::job::armed;
use crate::job::context::Context;
use crate::job::holders;
use crate::job::phase::Phase;
use crate::job::run::Job;
use crate::job::script::{self, AppTag, PhaseResult, RunContext};
use crate::job::status::{self, ScriptPhaseStatus};

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
        guarantee::arm(job, cx, app);
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
/// application's holders are ended. A failure is the phase's error, and so
/// the run's: what it makes of it is decided at the run's end
/// ([`Job::conclude`]).
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
        let awaited = armed::awaited_operations(&job.pending);
        job.warn_all(holders::end_stale(&ctx, &awaited));
    }
    let mut settling = guarantee::before_phase(&job.pending, phase, app);
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
    guarantee::after_phase(job, phase, settling, res.interrupted.is_some(), app);
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
    let awaited = armed::awaited_operations(&job.pending);
    let (killed, warnings) = holders::terminate(ctx, &awaited);
    job.warn_all(warnings);
    killed
}
