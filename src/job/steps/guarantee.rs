//! The post-script guarantee around a run's script phases (SPEC.md §6.6):
//! the post guard started before any script, the durable record armed right
//! before a pre-script's fork and settled right after its post-script's
//! reap, and what a separate `post` completes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use log::Level;

use super::recovery::{run_due, settle, unsettled, Failures};
use crate::error::Problem;
use crate::freeze::state::RunDir;
use crate::job::apps::{App, Apps};
use crate::job::armed::awaiting_post_command;
use crate::job::armed::PendingState;
use crate::job::context::Context;
use crate::job::pending::{self, Claim, Entry, PendingOptions, PendingPost, Writer};
use crate::job::phase::Phase;
use crate::job::postguard::PostGuard;
use crate::job::run::Job;
use crate::job::runner::Runner;
use crate::job::script;
use crate::job::status::say;
use crate::sandbox::guards;
use crate::trail::{self, Record};
use serde_json::json;

/// The start of a run that executes anything: the state directory is
/// checked (304 refuses the run) and every due post-script is run first.
pub fn at_start(job: &mut Job, runner: &Runner, cx: &Context) -> Result<(), Problem> {
    cx.pending.check()?;
    job.pending.opts = Some(cx.pending.clone());
    run_due(job, runner, &cx.pending, Failures::AreWarnings);
    Ok(())
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
pub fn arm(job: &mut Job, cx: &Context, app: &App) {
    start_guard(job, cx);
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
        host_config: cx.apps.host_config.clone(),
        post_script: post.file.path.clone(),
        post_sha256: post.sha256.clone(),
        run_dir: cx.run_dir.path.clone(),
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
pub fn start_guard(job: &mut Job, cx: &Context) {
    if job.pending.guard.is_some() {
        return;
    }
    match PostGuard::start(&guard_args(cx)) {
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

/// The command line the guard executes: `quiesce recover --retry` with
/// this run's options, every one (its directories, trail, metrics,
/// sandbox), as the parser gives them back.
fn guard_args(cx: &Context) -> Vec<CString> {
    let mut args = cx.options.to_args();
    args.extend(["recover".into(), "--retry".into()]);
    args.into_iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect()
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
        let marked = run_dir.write_json_unsynced(&mark, &json!({})).is_ok();
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
