//! Running what dead runs left pending (SPEC.md §6.6): every due
//! post-script, by `quiesce recover` and at the start of every run that
//! executes anything. A recovered post-script passes the same
//! checks as any (and must still be the script, and the config the config,
//! that the record's digests name), runs supervised and sandboxed in the
//! same way, with `QUIESCE_RECOVERY` in its environment and a
//! `post-recovery` record in the trail.

use std::path::Path;

use crate::error::{ErrorCode, Problem};
use crate::freeze::state::RunDir;
use crate::job::armed;
use crate::job::holders;
use crate::job::pending::{self, Claim, Damaged, Due, Entry, PendingOptions, PendingPost};
use crate::job::preflight::{self, InputPaths, Prechecked};
use crate::job::run::Job;
use crate::job::runner::Runner;
use crate::job::script::{self, AppTag, RunContext};
use crate::job::status::{say, Outcome, RecoveredStatus};
use crate::trail::{self, Record};
use log::Level;

/// What a record that cannot be run, or a recovered post-script that
/// fails, is to the run that meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    /// `quiesce recover`: an error of this run, which then fails.
    AreErrors,
    /// The start of another run: a warning, and that run goes on.
    AreWarnings,
}

/// Runs every due record; `failures` says what a refusal or a failure is
/// to this run. Returns how many post-scripts ran.
pub fn run_due(job: &mut Job, runner: &Runner, opts: &PendingOptions, failures: Failures) -> usize {
    let entries = match opts.list() {
        Ok(e) => e,
        Err(p) => {
            report(job, failures, p);
            return 0;
        }
    };
    let boot = pending::boot_id();
    let mut ran = 0;
    for entry in entries {
        match entry {
            Entry::Damaged(d) => report(job, failures, damaged(opts, &d)),
            // Its post-script ran: never again; said each time until removed.
            Entry::Settled(d) => unsettled(job, &d.why),
            Entry::Record(rec) => {
                let Due::Now(_) = rec.due(&boot, pending::now_unix()) else {
                    continue;
                };
                match run_record(job, runner, opts, &rec.name(), &boot) {
                    Ok(true) => ran += 1,
                    Ok(false) => {}
                    Err(p) => report(job, failures, p),
                }
            }
        }
    }
    ran
}

/// A post-script ran but its record could not be removed: said loudly, on
/// stderr, in the status and in the trail (SPEC §6.6: a record that cannot
/// be settled never makes its post-script run again).
pub fn unsettled(job: &mut Job, why: &str) {
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

pub fn report(job: &mut Job, failures: Failures, p: Problem) {
    match failures {
        Failures::AreErrors => job.problem(&p),
        Failures::AreWarnings => {
            say(format!("warning: {}", p.detail));
            job.warn(p.detail);
        }
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
    let awaited = armed::awaited_operations(&job.pending);
    let (killed, warnings) = holders::terminate(&ctx, &awaited);
    job.warn_all(warnings);
    let mut phase = res.status.clone();
    phase.holders_terminated = killed;
    job.status.recovered.push(RecoveredStatus {
        operation_id: rec.operation_id.clone(),
        operation: rec.operation.clone(),
        app_name: rec.application.clone(),
        recovery: why,
        result: if res.ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        post: phase,
    });
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
/// a `pre` wrote it (a later `post` of that `pre` then runs it no second
/// time), then the record goes.
pub fn settle(
    claim: Claim,
    rec: &PendingPost,
    by: &str,
    report: &mut Vec<(Level, String)>,
) -> bool {
    // A `pre`'s record, finished or not: a `post` may still come for that
    // `pre` (an agent whose timeout killed it mid-script still sends one),
    // and must find that the post-script ran.
    if rec.awaits == pending::Awaits::PostCommand || rec.operation == "pre" {
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
