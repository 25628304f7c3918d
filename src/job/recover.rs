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
    /// A separate `pre` left post-scripts awaiting a `post` call until then:
    /// the guard stays and runs what is left at that time.
    awaited_due: Option<u64>,
    /// The record the next pre-script writes right before its fork.
    next: Option<Writer>,
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
pub fn recover(common: &Common, opts: &RunnerOptions, retry: bool) -> Finished {
    let (mut job, runner) = match Job::start("recover", opts, &common.run_dir, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    let mut warnings = Vec::new();
    match super::window::lock_and_recover(common, &mut warnings) {
        Ok(lock) => drop(lock),
        // A live freeze holds the lock: its runner thaws by its own
        // deadline; the post-scripts are still looked at.
        Err(p) => warnings.push(format!("thaw recovery not attempted: {}", p.detail)),
    }
    job.warn_all(warnings);
    match common.pending.check_for_recovery() {
        Err(p) => return job.fail(&p),
        Ok(false) => {
            say(format!(
                "no state directory {}: nothing was ever recorded there, so no post-script is pending",
                common.pending.state_dir.path.display()
            ));
            return job.conclude();
        }
        Ok(true) => {}
    }
    job.pending.opts = Some(common.pending.clone());
    let mut ran = run_due(&mut job, &runner, &common.pending, Some(()));
    // A recovered post-script failed (its database is not up yet?): with
    // --retry, try again after its backoff, until it works or the record is
    // removed.
    while let Some(at) = next_retry(&common.pending).filter(|_| retry) {
        let wait = at.saturating_sub(pending::now_unix()) + 1;
        say(format!("a pending post-script is retried in {wait} s"));
        if runner.signals.wait(std::time::Duration::from_secs(wait)) {
            break; // a signal: stop here, the record stays
        }
        ran += run_due(&mut job, &runner, &common.pending, Some(()));
    }
    if ran == 0 {
        say("no pending post-script is due");
    }
    job.conclude()
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
    if never_started(job, runner, &rec, why) {
        if let Err(e) = claim.done() {
            unsettled(job, &e);
        }
        return Ok(false);
    }
    let file = opts.state_dir.file(name);
    let pc = preflight::run(&InputPaths {
        config: rec.config.clone(),
        host_config: rec.host_config.clone(),
    });
    let (script, config) = verified(&rec, &pc, &file)?;
    announce(job, &rec, why);
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
    let mut edges = Recovering {
        claim: Some(claim),
        rec: rec.clone(),
        by: why.name(),
        report: Vec::new(),
    };
    let res = script::run_phase(&ctx, script, config, &mut edges);
    trail::set_application("");
    for (level, why) in edges.report {
        match level {
            Level::Error => unsettled(job, &why),
            _ => {
                say(format!("warning: {why}"));
                job.warn(why);
            }
        }
    }
    let awaited = awaited_operations(&job.pending);
    let (killed, warnings) = super::holders::terminate(&ctx, &awaited);
    job.warn_all(warnings);
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

/// The trail record and the line of a recovery about to run.
fn announce(job: &Job, rec: &PendingPost, why: pending::Recovery) {
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
}

/// The runner of `rec` died before its pre-script's exec (the mark it
/// made right before the record is still in the run directory — this
/// boot's, the one this process checked): that pre-script never ran, so
/// its post-script must not (SPEC §6.6). Said, and the mark removed.
fn never_started(
    job: &mut Job,
    runner: &Runner,
    rec: &PendingPost,
    why: pending::Recovery,
) -> bool {
    let run_dir = &runner.context().run_dir;
    let mark = pending::unstarted_name(&rec.name());
    if why != pending::Recovery::RunnerDied || run_dir.path != rec.run_dir || !run_dir.has(&mark) {
        return false;
    }
    run_dir.remove(&mark);
    let w = format!(
        "operation {} ({}): its runner died before the pre-script of {} started, so its post-script is not run; the record is removed",
        rec.operation_id,
        rec.operation,
        rec.application.as_deref().unwrap_or("the application")
    );
    trail::event(
        Level::Warn,
        Record::PostRecovery,
        job.status.operation,
        &[
            ("recoveredOperation", rec.operation_id.clone()),
            ("recovery", "pre-never-started".to_string()),
            ("deadRunner", rec.runner_pid.to_string()),
        ],
        &w,
    );
    say(format!("warning: {w}"));
    job.warn(w);
    true
}

/// The edges of a recovered post-script (SPEC §6.6): right after the reap
/// its record is settled (with a tombstone when it awaited a `post` call);
/// a failure keeps it, for a retry after a backoff; a signal keeps it as it
/// was, for the next recovery.
struct Recovering {
    claim: Option<Claim>,
    rec: PendingPost,
    by: &'static str,
    /// What to report once the phase is over (`Error`: a settlement that
    /// failed, said loudly).
    report: Vec<(Level, String)>,
}

impl script::Edges for Recovering {
    fn reaped(&mut self, ok: bool, interrupted: bool) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        if interrupted {
            return; // dropping the claim keeps the record
        }
        if ok {
            settle(claim, &self.rec, self.by, &mut self.report);
            return;
        }
        match claim.retry_later(self.rec.clone(), "the post-script failed") {
            Ok(wait) => self.report.push((
                Level::Warn,
                format!(
                    "the pending post-script of operation {} failed; its record is kept and it is retried in {wait} s (then with a growing backoff, until it succeeds or the record is removed)",
                    self.rec.operation_id
                ),
            )),
            Err(e) => self.report.push((
                Level::Warn,
                format!(
                    "the pending post-script of operation {} failed, and its record could not be updated for a retry ({e}): it is retried at the next recovery",
                    self.rec.operation_id
                ),
            )),
        }
    }
}

/// Settles a claimed record whose post-script ran: a tombstone first when
/// it awaited a separate `post` (a later `post` of that `pre` then runs it
/// no second time), then the record goes.
fn settle(claim: Claim, rec: &PendingPost, by: &str, report: &mut Vec<(Level, String)>) -> bool {
    if rec.awaits == pending::Awaits::PostCommand {
        if let Err(e) = claim.leave_tombstone(rec, by) {
            report.push((
                Level::Warn,
                format!(
                    "cannot record that the post-script of operation {} ran ({e}): a `quiesce post` still to come for it would run it again",
                    rec.operation_id
                ),
            ));
        }
    }
    match claim.done() {
        Ok(()) => true,
        Err(why) => {
            report.push((Level::Error, why));
            false
        }
    }
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

/// Before an application's pre-script: the guard that runs what is pending
/// if this runner dies (started at the start of the run, unless that
/// failed), and what the durable record of its post-script will hold. The
/// record is written as the very last step before the pre-script's fork
/// (see [`Settling`]): a record exists only for a pre-script that was
/// started — a runner killed in the microseconds between the two has its
/// post-script run without its pre-script, which idempotent post-scripts
/// tolerate. A record that cannot be written is said loudly; the pre-script
/// still runs (the runner itself still runs the post-script on every path
/// it survives).
pub fn arm(job: &mut Job, common: &Common, opts: &RunnerOptions, app: &App) {
    start_guard(job, common, opts);
    let (Some(post), Some(sha)) = (app.pc.post.as_ref(), app.pc.config_sha256.as_ref()) else {
        return;
    };
    if app.pc.ready(Phase::Pre).is_none() || job.pending.opts.is_none() {
        return;
    }
    job.pending.next = Some(Writer {
        operation: job.status.operation.to_string(),
        operation_id: job.status.operation_id.clone(),
        application: Some(app.name.clone()),
        app_index: app.index,
        config: app.config_path.clone(),
        config_sha256: sha.clone(),
        host_config: common.apps.host_config.clone(),
        post_script: post.file.path.clone(),
        post_sha256: post.sha256.clone(),
        run_dir: common.run_dir.path.clone(),
        guard: job.pending.guard.as_ref().map(|g| {
            let start = crate::supervise::procfs::read_stat(g.pid).map_or(0, |s| s.start);
            (g.pid, start)
        }),
    });
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
    args.push(c(b"--retry"));
    args
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
fn awaiting_post_command(opts: &PendingOptions) -> impl Iterator<Item = Box<PendingPost>> {
    opts.list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) if r.awaits == pending::Awaits::PostCommand => Some(r),
            _ => None,
        })
}

/// What a separate `quiesce post` completes (SPEC §3.1, §6.6).
#[derive(Debug, Default)]
pub struct PostOf {
    /// The applications whose post-script this `post` runs: those a
    /// separate `pre` started, by their records awaiting this call. `None`:
    /// no `pre` is awaiting a `post` nor was completed lately — a `post` on
    /// its own (by hand) runs every post-script, as the extension does.
    pub runs: Option<Vec<usize>>,
    /// Applications whose post-script already ran for the `pre` this `post`
    /// completes (by an earlier or racing `post`, or by a recovery once it
    /// was due): how, for the message. Their tombstones are consumed.
    pub already_ran: Vec<(usize, String)>,
}

/// For a separate `quiesce post`: what it completes — the applications
/// whose record awaits it, and those whose post-script already ran for that
/// `pre` (their tombstones). One `pre` gets one post-script run however many
/// `post` and `recover` calls race.
pub fn started_by_pre(state: &PendingState, apps: &Apps) -> PostOf {
    let Some(opts) = state.opts.as_ref() else {
        return PostOf::default();
    };
    let configs: Vec<PathBuf> = awaiting_post_command(opts).map(|r| r.config).collect();
    let tombstones = opts.tombstones();
    let mut out = PostOf::default();
    let mut runs = Vec::new();
    for a in &apps.list {
        if configs.contains(&a.config_path) {
            runs.push(a.index);
        } else if let Some((_, t)) = tombstones.iter().find(|(_, t)| t.config == a.config_path) {
            out.already_ran.push((
                a.index,
                format!(
                    "its post-script already ran for operation {} ({})",
                    t.operation_id, t.settled_by
                ),
            ));
        }
    }
    if !runs.is_empty() || !out.already_ran.is_empty() {
        out.runs = Some(runs);
    }
    out
}

/// The records a script phase of this run settles, locked while it runs:
/// for a post phase, the application's own record of this run, or — for a
/// separate `quiesce post` — every record of a `pre` of the same config
/// awaiting it; for a pre phase, its own record, marked started right
/// before the fork. It acts at the edges of the phase (script::Edges).
pub struct Settling {
    claims: Vec<(Claim, PendingPost)>,
    /// The record of this application's pre-script, written right before
    /// its fork; then what was written, or why not.
    start: Option<(PendingOptions, Writer)>,
    written: Option<Result<PendingPost, String>>,
    /// Records that could not be locked: why, said before the post-script.
    unlocked: Vec<String>,
    /// Every record this post phase was to settle was settled by someone
    /// else while it waited for the lock: its post-script already ran.
    pub gone: bool,
    /// What happened at the edges, reported after the phase.
    report: Vec<(Level, String)>,
    settled: usize,
    /// The post guards of the separate `pre`s whose records were settled.
    guards: Vec<(String, (i32, u64))>,
    /// The pre-script's "not started yet" mark (run directory, name).
    unstarted: Option<(RunDir, String)>,
}

impl script::Edges for Settling {
    fn starting(&mut self) -> Option<CString> {
        let (opts, w) = self.start.take()?;
        // The mark first, then the record: a record without a mark is one
        // whose pre-script may have started.
        let run_dir = RunDir::new(&w.run_dir);
        let mark = pending::unstarted_name(&pending::record_name(&w.operation_id, w.app_index));
        // Not synced: the mark is read only while this boot lasts (a dead
        // runner's recovery, `never_started`), from the run directory.
        let marked = run_dir.replace_json(&mark, &json!({})).is_ok();
        self.written = Some(opts.begin(&w).map_err(|e| {
            format!(
                "cannot record the pending post-script of {} ({e}); if this runner dies before the post-script, run it by hand",
                w.application.as_deref().unwrap_or("the application")
            )
        }));
        if crate::fault::active("pre-start-delay") {
            // Widens the moment between the record and the fork, where a
            // runner killed used to leave a post-script to run for a
            // pre-script that never started.
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let path = CString::new(run_dir.file(&mark).as_os_str().as_bytes()).ok();
        self.unstarted = Some((run_dir, mark));
        path.filter(|_| marked)
    }

    fn reaped(&mut self, _ok: bool, interrupted: bool) {
        if let Some((run_dir, mark)) = self.unstarted.take() {
            // Gone already if the child got to its exec; if it never did,
            // this runner goes on knowing it and its post phase says so.
            run_dir.remove(&mark);
        }
        if interrupted {
            // Dropping the claims unlocks the records and keeps them.
            self.claims.clear();
            return;
        }
        for (claim, rec) in self.claims.drain(..) {
            if !settle(claim, &rec, "post", &mut self.report) {
                continue;
            }
            self.settled += 1;
            if rec.awaits == pending::Awaits::PostCommand {
                self.guards
                    .extend(rec.guard.map(|g| (rec.operation_id.clone(), g)));
            }
        }
    }
}

/// Before a script phase of `app`: which records its end settles (claimed
/// now), and the pre-script's record to mark started.
pub fn before_phase(state: &PendingState, phase: Phase, app: &App) -> Settling {
    let mut s = Settling {
        claims: Vec::new(),
        start: None,
        unlocked: Vec::new(),
        gone: false,
        report: Vec::new(),
        settled: 0,
        written: None,
        guards: Vec::new(),
        unstarted: None,
    };
    let Some(opts) = state.opts.as_ref() else {
        return s;
    };
    if phase == Phase::Pre {
        s.start = state
            .next
            .clone()
            .filter(|w| w.app_index == app.index)
            .map(|w| (opts.clone(), w));
        return s;
    }
    let names: Vec<String> = if !state.own.is_empty() {
        state
            .own
            .iter()
            .filter(|r| r.app_index == app.index)
            .map(PendingPost::name)
            .collect()
    } else {
        awaiting_post_command(opts)
            .filter(|r| r.config == app.config_path)
            .map(|r| r.name())
            .collect()
    };
    for n in &names {
        match opts.claim(n) {
            Ok(Some(c)) => {
                if let Ok(Some(rec)) = c.record() {
                    s.claims.push((c, rec));
                }
            }
            Ok(None) => {}
            Err(d) => s.unlocked.push(format!(
                "cannot lock the pending post-script record {} ({}): the post-script runs all the same; if a recovery races it, it may run twice",
                opts.state_dir.file(&d.name).display(),
                d.why
            )),
        }
    }
    // A separate `post` that waited for a lock another `post` or a recovery
    // held: they ran it.
    s.gone =
        state.own.is_empty() && !names.is_empty() && s.claims.is_empty() && s.unlocked.is_empty();
    s
}

/// A separate `pre`'s guard waits for the due time of its post-scripts;
/// once a `post` settled the last record of that operation, it has nothing
/// left to guard: it is ended (re-identified by pid and start time; it is
/// not this runner's child to reap).
fn end_pre_guards(state: &PendingState, guards: &[(String, (i32, u64))]) {
    let Some(opts) = state.opts.as_ref() else {
        return;
    };
    let left: Vec<String> = opts
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) => Some(r.operation_id),
            _ => None,
        })
        .collect();
    for (op, (pid, start)) in guards {
        if left.contains(op) {
            continue;
        }
        crate::supervise::kill_if_same(*pid, *start);
    }
}

/// After a script phase of `app`: what its edges did is reported; a post
/// phase that a signal cut short leaves the record pending and the guard
/// armed, so the post-script runs again once this runner is gone. A
/// separate `pre` leaves its record awaiting the `post` call, and its guard
/// armed until that call is due.
pub fn after_phase(job: &mut Job, phase: Phase, settling: Settling, interrupted: bool, app: &App) {
    for why in &settling.unlocked {
        say(format!("WARNING: {why}"));
        job.warn(why.clone());
    }
    for (level, why) in &settling.report {
        match level {
            Level::Error => unsettled(job, why),
            _ => {
                say(format!("warning: {why}"));
                job.warn(why.clone());
            }
        }
    }
    if phase == Phase::Post {
        if interrupted {
            if !job.pending.own.is_empty() {
                job.pending.keep_guard = true;
            }
            return;
        }
        job.pending.own.retain(|r| r.app_index != app.index);
        end_pre_guards(&job.pending, &settling.guards);
        if settling.settled > 0 {
            trail::event(
                Level::Info,
                Record::PostSettled,
                job.status.operation,
                &[("settled", settling.settled.to_string())],
                "the pending post-script record was settled",
            );
        }
        return;
    }
    job.pending.next = None;
    match settling.written {
        Some(Ok(rec)) => job.pending.own.push(rec),
        Some(Err(w)) => {
            say(format!("WARNING: {w}"));
            job.warn(w);
        }
        None => {}
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
    if job.status.operation != "pre" {
        return;
    }
    match opts.await_post_command(rec) {
        Ok(()) => {
            let due = rec.due_unix.unwrap_or(0);
            job.pending.awaited_due = Some(job.pending.awaited_due.map_or(due, |d| d.max(due)));
        }
        Err(e) => {
            let w = format!("cannot record that the post-script awaits `quiesce post` ({e})");
            say(format!("warning: {w}"));
            job.warn(w);
        }
    }
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
                    Due::Now(why) if r.failures > 0 => format!(
                        "due again ({}): its post-script failed {} time(s) (last: {}); `quiesce recover` retries it",
                        why.name(),
                        r.failures,
                        r.last_error.as_deref().unwrap_or("?")
                    ),
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
                    "failures": r.failures,
                    "lastError": r.last_error,
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
