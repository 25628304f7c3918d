//! Running what a dead runner left pending (SPEC.md §6.6), and the hooks
//! that keep the pending records of a run: armed before its pre-script,
//! settled after its post-script.
//!
//! `quiesce recover` (at boot, from the packaged unit; from a dead runner's
//! guard; by hand) thaws what a dead run left frozen and runs every pending
//! post-script that is due; the start of every run that executes anything
//! runs the due post-scripts too. A recovered post-script passes the same
//! checks as any (and must still be the script, and the config the config,
//! that the record's digests name), runs supervised and sandboxed in the
//! same way, with `QUIESCE_RECOVERY` in its environment and a
//! `post-recovery` record in the trail.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use log::Level;
use serde_json::json;

use super::apps::{App, Apps};
use super::pending::{self, Claim, Damaged, Due, Entry, PendingOptions, PendingPost, Writer};
use super::postguard::PostGuard;
use super::preflight::{self, InputPaths, Prechecked};
use super::script::{self, AppTag, RunContext};
use super::status::say;
use super::{Common, Finished, Job, Phase, Runner, RunnerOptions};
use crate::error::{ErrorCode, Problem};
use crate::freeze::state::RunDir;
use crate::sandbox::guards;
use crate::trail::{self, Record};

/// What a run keeps about pending post-scripts.
#[derive(Default)]
pub struct PendingState {
    opts: Option<PendingOptions>,
    /// This run's own records, one per application whose pre-script
    /// started and whose post-script has not yet run to its end.
    own: Vec<PendingPost>,
    /// The guard, from before the first pre-script to the end of the run.
    guard: Option<PostGuard>,
    /// A post-script was cut short by a signal: the guard stays armed when
    /// the run ends, and runs what is left once this runner is gone.
    keep_guard: bool,
}

/// The start of a run that executes anything: the state directory is
/// checked (304 refuses the run) and every due post-script is run first.
pub fn at_start(job: &mut Job, runner: &Runner, common: &Common) -> Result<(), Problem> {
    common.pending.check()?;
    job.pending.opts = Some(common.pending.clone());
    run_due(job, runner, &common.pending, None);
    Ok(())
}

/// `quiesce recover`: thaws what a dead run left frozen, then runs every
/// pending post-script that is due. The status lists what it ran.
pub fn recover(common: &Common, opts: &RunnerOptions) -> Finished {
    let (mut job, runner) = match Job::start("recover", opts, &common.run_dir, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if let Err(p) = common.pending.check() {
        return job.fail(&p);
    }
    job.pending.opts = Some(common.pending.clone());
    let mut warnings = Vec::new();
    match super::window::lock_and_recover(common, &mut warnings) {
        Ok(lock) => drop(lock),
        // A live freeze holds the lock: its runner thaws by its own
        // deadline; the post-scripts are still looked at.
        Err(p) => warnings.push(format!("thaw recovery not attempted: {}", p.detail)),
    }
    job.warn_all(warnings);
    let ran = run_due(&mut job, &runner, &common.pending, Some(()));
    if ran == 0 {
        say("no pending post-script is due");
    }
    job.conclude()
}

/// Runs every due record; `strict`: a refusal or failure is an error of
/// this run (`recover`), else a warning (the start of another run). Returns
/// how many post-scripts ran.
fn run_due(job: &mut Job, runner: &Runner, opts: &PendingOptions, strict: Option<()>) -> usize {
    let entries = match opts.list() {
        Ok(e) => e,
        Err(p) => {
            report(job, strict.is_some(), p);
            return 0;
        }
    };
    let boot = pending::boot_id();
    let mut ran = 0;
    for entry in entries {
        match entry {
            Entry::Damaged(d) => report(job, strict.is_some(), damaged(opts, &d)),
            // Its post-script ran: never again; said each time until removed.
            Entry::Settled(d) => unsettled(job, &d.why),
            Entry::Record(rec) => {
                let Due::Now(_) = rec.due(&boot, pending::now_unix()) else {
                    continue;
                };
                match run_record(job, runner, opts, &rec.name(), &boot) {
                    Ok(true) => ran += 1,
                    Ok(false) => {}
                    Err(p) => report(job, strict.is_some(), p),
                }
            }
        }
    }
    ran
}

/// A post-script ran but its record could not be removed: said loudly, on
/// stderr, in the status and in the trail (SPEC §6.6: a record that cannot
/// be settled never makes its post-script run again).
fn unsettled(job: &mut Job, why: &str) {
    trail::event(
        Level::Error,
        Record::PostUnsettled,
        job.status.operation,
        &[],
        why,
    );
    say(format!("WARNING: {why}"));
    job.warn(why.to_string());
}

fn report(job: &mut Job, strict: bool, p: Problem) {
    if strict {
        job.problem(&p);
    } else {
        say(format!("warning: {}", p.detail));
        job.warn(p.detail);
    }
}

fn damaged(opts: &PendingOptions, d: &Damaged) -> Problem {
    Problem::new(
        ErrorCode::IncorrectPluginhostFile,
        format!(
            "pending post-script record {}: {}; it was kept and nothing was run: check that the application was resumed (run its post-script by hand), then remove the record",
            opts.state_dir.file(&d.name).display(),
            d.why
        ),
    )
}

/// Claims one record and, if it is still there and due, runs its
/// post-script: whether it ran.
fn run_record(
    job: &mut Job,
    runner: &Runner,
    opts: &PendingOptions,
    name: &str,
    boot: &str,
) -> Result<bool, Problem> {
    let Some(claim) = opts.claim(name).map_err(|d| damaged(opts, &d))? else {
        return Ok(false); // someone else ran it meanwhile
    };
    let Some(rec) = claim.record().map_err(|d| damaged(opts, &d))? else {
        return Ok(false);
    };
    let Due::Now(why) = rec.due(boot, pending::now_unix()) else {
        return Ok(false);
    };
    let file = opts.state_dir.file(name);
    let pc = preflight::run(&InputPaths {
        config: rec.config.clone(),
        host_config: rec.host_config.clone(),
    });
    let (script, config) = verified(&rec, &pc, &file)?;
    trail::event(
        Level::Warn,
        Record::PostRecovery,
        job.status.operation,
        &[
            ("recoveredOperation", rec.operation_id.clone()),
            ("recovery", why.name().to_string()),
            ("deadRunner", rec.runner_pid.to_string()),
            ("appName", rec.application.clone().unwrap_or_default()),
            ("script", rec.post_script.display().to_string()),
            ("sha256", rec.post_sha256.clone()),
        ],
        "running a pending post-script",
    );
    say(format!(
        "operation {} ({}) left its post-script pending ({}): running it",
        rec.operation_id,
        rec.operation,
        why.name()
    ));
    let base = runner.context();
    let name = rec
        .application
        .clone()
        .unwrap_or_else(|| config.plugin_name.clone());
    let ctx = RunContext {
        operation_id: rec.operation_id.clone(),
        run_dir: RunDir::new(&rec.run_dir),
        recovery: Some(why.name()),
        app: Some(AppTag {
            index: rec.app_index,
            name: name.clone(),
            config: rec.config.clone(),
        }),
        ..base
    };
    trail::set_application(name);
    let res = script::run_phase(&ctx, script, config);
    trail::set_application("");
    let (killed, warnings) = super::holders::terminate(&ctx);
    job.warn_all(warnings);
    // Killed before it could finish (a signal to this runner): the record
    // stays, so the next recovery runs it again (post-scripts are idempotent).
    if res.interrupted.is_none() {
        if let Err(why) = claim.done() {
            unsettled(job, &why);
        }
    }
    let mut phase = res.status.clone();
    phase.holders_terminated = killed;
    job.status.recovered.push(json!({
        "operationId": rec.operation_id,
        "operation": rec.operation,
        "appName": rec.application,
        "recovery": why.name(),
        "result": if res.ok() { "success" } else { "failure" },
        "post": phase,
    }));
    if let Some(p) = res.problem {
        return Err(p);
    }
    Ok(true)
}

/// The record's post-script and config, when they still pass their checks
/// and are what the record's digests name; else why not, with the action.
fn verified<'a>(
    rec: &PendingPost,
    pc: &'a Prechecked,
    file: &Path,
) -> Result<(&'a preflight::CheckedScript, &'a crate::config::Config), Problem> {
    let kept = format!(
        "the record {} was kept; once the application is resumed by hand (run its post-script), remove it",
        file.display()
    );
    let config_gone = !rec.config.exists();
    let Some(config) = pc.config.as_ref() else {
        let why = pc
            .problems
            .first()
            .map_or(String::new(), |p| p.detail.clone());
        let what = if config_gone {
            "is gone"
        } else {
            "fails its checks"
        };
        return Err(Problem::new(
            ErrorCode::IncorrectJSONConfigFile,
            format!(
                "pending post-script of operation {}: its config {} {what} ({why}); {kept}",
                rec.operation_id,
                rec.config.display()
            ),
        ));
    };
    if pc.config_sha256.as_deref() != Some(rec.config_sha256.as_str()) {
        return Err(Problem::new(
            ErrorCode::IncorrectJSONConfigFile,
            format!(
                "pending post-script of operation {}: {} changed since its pre-script ran (sha256 {}); nothing was run; {kept}",
                rec.operation_id,
                rec.config.display(),
                rec.config_sha256
            ),
        ));
    }
    let Some(script) = pc.post.as_ref() else {
        let p = pc
            .problems
            .iter()
            .find(|p| {
                matches!(
                    p.code,
                    ErrorCode::PostScriptNotFound
                        | ErrorCode::InsufficientPermissionforPostScript
                        | ErrorCode::ScriptChecksumMismatch
                )
            })
            .cloned()
            .unwrap_or_else(|| Problem::new(ErrorCode::PostScriptNotFound, "no post-script"));
        return Err(Problem::new(
            p.code,
            format!(
                "pending post-script of operation {}: {}; {kept}",
                rec.operation_id, p.detail
            ),
        ));
    };
    if script.sha256 != rec.post_sha256 || script.file.path != rec.post_script {
        return Err(Problem::new(
            ErrorCode::ScriptChecksumMismatch,
            format!(
                "pending post-script of operation {}: {} is not the script its pre-script was paired with (sha256 {} then, {} now); nothing was run; {kept}",
                rec.operation_id,
                script.file.path.display(),
                rec.post_sha256,
                script.sha256
            ),
        ));
    }
    Ok((script, config))
}

/// Before an application's pre-script starts: the durable record of its
/// post-script, and — before the first — the guard that runs what is pending
/// if this runner dies. A record that cannot be written is said loudly; the
/// pre-script still runs (the runner itself still runs the post-script on
/// every path it survives).
pub fn arm(job: &mut Job, common: &Common, opts: &RunnerOptions, app: &App) {
    if app.pc.ready(Phase::Pre).is_none() {
        return;
    }
    let (Some(popts), Some(post), Some(sha)) = (
        job.pending.opts.clone(),
        app.pc.post.as_ref(),
        app.pc.config_sha256.as_ref(),
    ) else {
        return;
    };
    let w = Writer {
        operation: job.status.operation,
        operation_id: &job.status.operation_id,
        application: Some(app.name.clone()),
        app_index: app.index,
        config: &app.config_path,
        config_sha256: sha,
        host_config: &common.apps.host_config,
        post_script: &post.file.path,
        post_sha256: &post.sha256,
        run_dir: &common.run_dir.path,
    };
    let rec = match popts.begin(&w) {
        Ok(r) => r,
        Err(e) => {
            let w = format!("cannot record the pending post-script of {} ({e}); if this runner dies before the post-script, run it by hand", app.name);
            say(format!("WARNING: {w}"));
            job.warn(w);
            return;
        }
    };
    job.pending.own.push(rec);
    start_guard(job, common, opts);
}

/// Starts the post guard, unless it runs: at the start of a run that may
/// run pre-scripts, before any script of the run (the post-scripts of dead
/// runs it runs first included), so every script's filter names it (SPEC
/// §8). It is protected from the scripts from here on.
pub fn start_guard(job: &mut Job, common: &Common, opts: &RunnerOptions) {
    if job.pending.guard.is_some() {
        return;
    }
    match PostGuard::start(&guard_args(common, opts)) {
        Ok(g) => {
            guards::protect(g.pid, "post guard");
            job.pending.guard = Some(g);
        }
        Err(e) => {
            let w = format!("cannot start the post guard ({e}); if this runner dies before the post-script, `quiesce recover` runs it");
            say(format!("warning: {w}"));
            job.warn(w);
        }
    }
}

/// The command line the guard executes: `quiesce recover` with this run's
/// state and run directories, trail and sandbox options.
fn guard_args(common: &Common, opts: &RunnerOptions) -> Vec<CString> {
    let c = |s: &[u8]| CString::new(s).unwrap_or_default();
    let mut args = vec![
        c(b"--state-dir"),
        c(common.pending.state_dir.path.as_os_str().as_bytes()),
        c(b"--run-dir"),
        c(common.run_dir.path.as_os_str().as_bytes()),
        c(b"--syslog-socket"),
        c(opts.syslog_socket.as_os_str().as_bytes()),
        c(b"--syslog-facility"),
        c(opts.facility.to_string().as_bytes()),
        c(b"--post-due"),
        c(common.pending.post_due.as_secs().to_string().as_bytes()),
    ];
    if let Some(p) = &opts.policy {
        args.push(c(b"--policy"));
        args.push(c(p.as_os_str().as_bytes()));
    }
    if opts.no_sandbox {
        args.push(c(b"--no-sandbox"));
    }
    args.push(c(b"recover"));
    args
}

/// The records of finished `pre` runs whose post-scripts await a separate
/// `quiesce post`.
fn awaiting_post_command(opts: &PendingOptions) -> impl Iterator<Item = Box<PendingPost>> {
    opts.list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) if r.awaits == pending::Awaits::PostCommand => Some(r),
            _ => None,
        })
}

/// For a separate `quiesce post`: the applications whose pre-script a
/// separate `pre` started, by their records awaiting this call (SPEC §3.1:
/// only those run their post-script). `None` when no application of `apps`
/// has one — a `post` on its own (by hand, or after the records were
/// settled) runs every post-script, as the extension does.
pub fn started_by_pre(state: &PendingState, apps: &Apps) -> Option<Vec<usize>> {
    let opts = state.opts.as_ref()?;
    let configs: Vec<PathBuf> = awaiting_post_command(opts).map(|r| r.config).collect();
    let started: Vec<usize> = apps
        .list
        .iter()
        .filter(|a| configs.contains(&a.config_path))
        .map(|a| a.index)
        .collect();
    (!started.is_empty()).then_some(started)
}

/// The records a script phase of this run settles, locked while it runs:
/// for a post phase, the application's own record of this run, or — for a
/// separate `quiesce post` — every record of a `pre` of the same config
/// awaiting it.
pub struct Settling {
    claims: Vec<Claim>,
    /// Records that could not be locked: why, said before the post-script.
    unlocked: Vec<String>,
}

/// Before a script phase of `app`: which records its end settles (claimed
/// now).
pub fn before_phase(state: &PendingState, phase: Phase, app: &App) -> Settling {
    let mut claims = Vec::new();
    let mut unlocked = Vec::new();
    if let (Phase::Post, Some(opts)) = (phase, state.opts.as_ref()) {
        let own: Vec<String> = state
            .own
            .iter()
            .filter(|r| r.app_index == app.index)
            .map(PendingPost::name)
            .collect();
        let names: Vec<String> = if !state.own.is_empty() {
            own
        } else {
            awaiting_post_command(opts)
                .filter(|r| r.config == app.config_path)
                .map(|r| r.name())
                .collect()
        };
        for n in &names {
            match opts.claim(n) {
                Ok(Some(c)) => claims.push(c),
                Ok(None) => {}
                Err(d) => unlocked.push(format!(
                    "cannot lock the pending post-script record {} ({}): the post-script runs all the same; if a recovery races it, it may run twice",
                    opts.state_dir.file(&d.name).display(),
                    d.why
                )),
            }
        }
    }
    Settling { claims, unlocked }
}

/// After a script phase of `app`: a post phase that ran to its end removes
/// what it settled; one that a signal to the runner cut short leaves the
/// record pending and the guard armed, so the post-script runs again once
/// this runner is gone. A separate `pre` leaves its record awaiting the
/// `post` call.
pub fn after_phase(job: &mut Job, phase: Phase, settling: Settling, interrupted: bool, app: &App) {
    if phase == Phase::Post && interrupted {
        // Dropping the claims unlocks the records and keeps them.
        drop(settling);
        if !job.pending.own.is_empty() {
            job.pending.keep_guard = true;
        }
        return;
    }
    for why in &settling.unlocked {
        say(format!("WARNING: {why}"));
        job.warn(why.clone());
    }
    let mut done = 0;
    for claim in settling.claims {
        match claim.done() {
            Ok(()) => done += 1,
            Err(why) => unsettled(job, &why),
        }
    }
    if phase == Phase::Post {
        job.pending.own.retain(|r| r.app_index != app.index);
        if done > 0 {
            trail::event(
                Level::Info,
                Record::PostSettled,
                job.status.operation,
                &[("settled", done.to_string())],
                "the pending post-script record was settled",
            );
        }
        return;
    }
    if job.status.operation != "pre" {
        return;
    }
    let Some(opts) = job.pending.opts.clone() else {
        return;
    };
    let Some(rec) = job
        .pending
        .own
        .iter_mut()
        .find(|r| r.app_index == app.index)
    else {
        return;
    };
    if let Err(e) = opts.await_post_command(rec) {
        let w = format!("cannot record that the post-script awaits `quiesce post` ({e})");
        say(format!("warning: {w}"));
        job.warn(w);
    }
}

/// The end of a run: the guard is stopped — unless a post-script was cut
/// short, then it runs what is left as soon as this runner has exited. A
/// record still pending (its post-script could not run) stays for
/// `recover`.
pub fn at_finish(state: &mut PendingState) {
    if let Some(guard) = state.guard.take() {
        if state.keep_guard {
            guard.leave_armed();
        } else {
            let pid = guard.pid;
            guard.stop();
            guards::release(pid);
        }
    }
}

/// `check`: every pending post-script, its age and whether it is due.
pub fn describe(opts: &PendingOptions) -> Result<Vec<serde_json::Value>, Problem> {
    let boot = pending::boot_id();
    let now = pending::now_unix();
    Ok(opts
        .list()?
        .into_iter()
        .map(|e| match e {
            Entry::Record(r) => {
                let state = match r.due(&boot, now) {
                    Due::Now(why) => format!("due ({}): `quiesce recover` runs it", why.name()),
                    Due::NotYet(why) => format!("pending: {why}"),
                };
                json!({
                    "record": opts.state_dir.file(&r.name()),
                    "operationId": r.operation_id,
                    "operation": r.operation,
                    "appName": r.application,
                    "postScript": r.post_script,
                    "ageSeconds": r.age(now),
                    "state": state,
                })
            }
            Entry::Damaged(d) => json!({
                "record": opts.state_dir.file(&d.name),
                "state": format!("damaged: {}", d.why),
            }),
            Entry::Settled(d) => json!({
                "record": opts.state_dir.file(&d.name),
                "state": format!("settled: {}", d.why),
            }),
        })
        .collect())
}
