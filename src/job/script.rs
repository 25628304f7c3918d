//! Running one script phase (pre or post): retries, one timeout budget for all
//! attempts, the launch chosen per SPEC.md §4 (see executable.rs: by its path
//! after a re-check, or a pinned script from the sealed copy of its hashed
//! bytes), the reduced environment of §7, and the pre-script "holders" that
//! live until the post phase is over.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;

use super::launch;
use crate::config::Config;
use crate::error::{Fix, Problem};
use crate::freeze::state::RunDir;
use crate::job::phase::Phase;
use crate::job::preflight::CheckedScript;
use crate::job::status::{AttemptStatus, ScriptPhaseStatus};
use crate::sandbox::guards::GuardFilter;
use crate::sandbox::inspect::ProcessSandboxState;
use crate::sandbox::PreparedSandbox;
use crate::supervise::{self, CgroupRequest, Leftover, RunOptions, SpawnError, SpawnSpec};
use crate::trail::{self, Record};

use crate::sandbox::env::ScriptEnv;
pub use crate::sandbox::env::SCRIPT_PATH;

/// What every phase of one run shares.
pub struct RunContext<'a> {
    pub operation_id: String,
    /// Readable once a terminating signal reached the runner.
    pub interrupt: Option<BorrowedFd<'a>>,
    pub run_dir: RunDir,
    /// `None` only with `--no-sandbox`.
    pub sandbox: Option<Arc<PreparedSandbox>>,
    pub grace: Duration,
    pub output_cap: usize,
    pub pids_max: Option<u64>,
    /// `HOME` and `LANG` of every script (SPEC §7), decided once per run.
    pub env: ScriptEnv,
    /// A recovered post-script (SPEC §6.6): its `QUIESCE_RECOVERY`
    /// (`runner-died`, `reboot`, `post-overdue`).
    pub recovery: Option<&'static str>,
    /// The application whose script runs (SPEC §3.1): its `QUIESCE_APP`,
    /// and the key of the holders its pre-script leaves.
    pub app: Option<AppTag>,
}

/// Which application a script phase belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTag {
    /// Its place in application order (0-based).
    pub index: usize,
    pub name: String,
    pub config: std::path::PathBuf,
}

impl RunContext<'_> {
    /// The same context, for one application's scripts.
    pub fn for_app(&self, app: AppTag) -> RunContext<'_> {
        RunContext {
            operation_id: self.operation_id.clone(),
            interrupt: self.interrupt,
            run_dir: self.run_dir.clone(),
            sandbox: self.sandbox.clone(),
            grace: self.grace,
            output_cap: self.output_cap,
            pids_max: self.pids_max,
            env: self.env.clone(),
            recovery: self.recovery,
            app: Some(app),
        }
    }
}

/// How a script phase ended.
pub struct PhaseResult {
    pub status: ScriptPhaseStatus,
    /// The phase's error (300/301, 306/307, 308/309), if it failed.
    pub problem: Option<Problem>,
    /// The runner got this signal during the phase (the tree was killed).
    pub interrupted: Option<i32>,
    /// Descendants left running after a successful or failed exit.
    pub leftovers: Vec<Leftover>,
}

impl PhaseResult {
    /// A phase of `script` with nothing done yet (or nothing to do: its
    /// post-script already ran).
    pub fn not_run(script: &CheckedScript) -> PhaseResult {
        PhaseResult {
            status: ScriptPhaseStatus {
                script: script.file.path.display().to_string(),
                sha256: script.sha256.clone(),
                ..Default::default()
            },
            problem: None,
            interrupted: None,
            leftovers: Vec::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.problem.is_none() && self.interrupted.is_none()
    }
}

/// Builds the spawn spec for one attempt (everything prepared before fork).
fn spawn_spec(
    ctx: &RunContext<'_>,
    script: &CheckedScript,
    sealed: Option<&OwnedFd>,
    started_mark: Option<Arc<CString>>,
    attempt: u32,
    left: Duration,
) -> Result<(SpawnSpec, String), String> {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
    let mut params = script
        .settings
        .params
        .iter()
        .map(|p| cstr(p))
        .collect::<Result<Vec<_>, _>>()?;
    if script.workload {
        // Where the workload's holder listens (SPEC §3.2).
        params.push(cstr("--run-dir")?);
        params.push(cstr(&ctx.run_dir.path.display().to_string())?);
    }
    let copy = sealed
        .map(|fd| fd.try_clone())
        .transpose()
        .map_err(|e| format!("cannot duplicate the script's sealed copy: {e}"))?;
    let launch = launch::plan(script, &params, copy)
        .map_err(|e| format!("cannot prepare the script's launch: {e}"))?;
    let mut spec = SpawnSpec::new(launch.program, launch.argv);
    spec.identity_check = launch.identity;
    // A child stuck before its exec must not outlast the phase.
    spec.startup_timeout = left.clamp(Duration::from_secs(1), supervise::DEFAULT_STARTUP_TIMEOUT);
    // Never the caller's HOME or LANG (SPEC §7): see sandbox/env.rs.
    spec.env = [
        format!("PATH={SCRIPT_PATH}"),
        format!("LANG={}", ctx.env.lang),
        format!("HOME={}", ctx.env.home.display()),
        format!("QUIESCE_PHASE={}", script.phase.name()),
        format!("QUIESCE_OPERATION_ID={}", ctx.operation_id),
        format!("QUIESCE_ATTEMPT={attempt}"),
        format!(
            "QUIESCE_DEADLINE_SECONDS={}",
            left.as_secs_f64().ceil() as u64
        ),
        format!("{}={}", launch::SCRIPT_PATH_VAR, script.file.path.display()),
    ]
    .iter()
    .chain(ctx.recovery.map(|r| format!("QUIESCE_RECOVERY={r}")).iter())
    .chain(
        ctx.app
            .as_ref()
            .map(|a| format!("QUIESCE_APP={}", a.name))
            .iter(),
    )
    .map(|e| cstr(e))
    .collect::<Result<_, _>>()?;
    // One cgroup per application, phase and attempt of the run.
    let app = ctx
        .app
        .as_ref()
        .map_or(String::new(), |a| format!("{}-", a.index));
    spec.cgroup = Some(CgroupRequest::new(
        format!(
            "{}-{app}{}-{attempt}",
            ctx.operation_id,
            script.phase.name()
        ),
        ctx.pids_max,
    ));
    let sandbox = match &ctx.sandbox {
        // Built now, from the guards that exist now (SPEC §8): every guard
        // of the run was started before its first script.
        Some(sandbox) => Some((
            Arc::clone(sandbox),
            GuardFilter::now().map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    if sandbox.is_some() || started_mark.is_some() {
        // INVARIANT: unlink(2) and apply_in_child are async-signal-safe and
        // allocation-free.
        spec.pre_exec = Some(Box::new(move || {
            if let Some(mark) = &started_mark {
                // SAFETY: a NUL-terminated path prepared before the fork;
                // unlink is async-signal-safe. Its result does not matter:
                // the mark is gone, or was never made.
                unsafe { libc::unlink(mark.as_ptr()) };
            }
            match &sandbox {
                Some((sandbox, guards)) => sandbox.apply_in_child(Some(guards)).map_err(Into::into),
                None => Ok(()),
            }
        }));
    }
    Ok((spec, launch.how))
}

/// The error-table row of a failed start (SPEC §4). The re-check of an
/// unpinned script's path found it gone: not found (302/303), as the
/// pre-check would have. It found a symbolic link, another file, or could
/// not look: the file that would run has not passed the §4 trust checks, a
/// permission failure (306/307), as a symbolic link is at the pre-check.
/// (312 is only for a configured pin, whose sealed copy cannot change.)
/// Running out of descriptors (a pipe, /dev/null, a pidfd) is what it is,
/// never the script's failure. Anything else is the script failing to
/// start (300/301).
fn spawn_error_code(phase: Phase, e: &SpawnError) -> crate::error::ErrorCode {
    use nix::errno::Errno::{EMFILE, ENFILE};
    let errno = match e {
        SpawnError::OpenDevNull(n) | SpawnError::Pipe(n) | SpawnError::Descriptor(n) => Some(*n),
        SpawnError::PidfdOpen { errno, .. }
        | SpawnError::Exec { errno, .. }
        | SpawnError::ChildSetup { errno, .. } => Some(*errno),
        _ => None,
    };
    if matches!(errno, Some(EMFILE | ENFILE)) {
        return crate::error::ErrorCode::TooManyOpenFiles;
    }
    match e {
        SpawnError::IdentityCheck {
            errno: nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR,
            ..
        } => phase.not_found(),
        SpawnError::ScriptReplaced { .. } | SpawnError::IdentityCheck { .. } => phase.permission(),
        _ => phase.execution_failed(),
    }
}

fn attempt_status(attempt: u32, r: &supervise::AttemptReport) -> AttemptStatus {
    AttemptStatus {
        attempt,
        pid: Some(r.pid),
        exit_code: r.exit_code,
        signal: r.signal,
        timed_out: r.timed_out,
        duration_ms: r.duration.as_secs_f64() * 1000.0,
        killed_pids: r.killed_pids.clone(),
        left_running_pids: r.left_running.iter().map(|l| l.pid).collect(),
        stdout_tail: r.stdout.text(),
        stderr_tail: r.stderr.text(),
        spawn_error: None,
        sandbox: None,
    }
}

/// What a run records at the edges of a script phase, durably and at once,
/// with nothing in between (SPEC §6.6): the pending post-script record says
/// the pre-script started right before its first fork; a post-script's
/// record is settled right after the reap that ends its phase, so a runner
/// killed a moment later does not have it run a second time.
pub trait Edges {
    /// Right before the phase's first attempt is started; returns a file
    /// the child removes right before its exec: while it exists, the
    /// script was never started (for a runner killed at this very moment).
    fn starting(&mut self) -> Option<CString> {
        None
    }
    /// Right after the phase's last attempt was reaped (or could not
    /// start): `ok` it succeeded, `interrupted` a signal cut it short.
    fn reaped(&mut self, _ok: bool, _interrupted: bool) {}
}

/// Runs one phase to its end: attempts until success, a timeout, the retries
/// are used up, or the runner is interrupted; `edges` at its start and end.
pub fn run_phase(
    ctx: &RunContext<'_>,
    script: &CheckedScript,
    config: &Config,
    edges: &mut dyn Edges,
) -> PhaseResult {
    let result = attempt_all(ctx, script, config, edges);
    if crate::fault::active("post-reaped-delay") && script.phase == Phase::Post {
        // Widens the moment between the reap and the return, where a runner
        // killed used to leave the record of a post-script that had run.
        std::thread::sleep(Duration::from_secs(2));
    }
    result
}

fn attempt_all(
    ctx: &RunContext<'_>,
    script: &CheckedScript,
    config: &Config,
    edges: &mut dyn Edges,
) -> PhaseResult {
    let deadline = Instant::now() + Duration::from_secs(config.timeout_secs);
    let attempts_allowed = script.settings.retries.saturating_add(1);
    let mut result = PhaseResult::not_run(script);
    let sealed = match sealed_copy(script) {
        Ok(sealed) => sealed,
        Err(p) => {
            result.problem = Some(p);
            edges.reaped(false, false);
            return result;
        }
    };
    let started_mark = edges.starting();
    let attempts = Attempts {
        ctx,
        script,
        sealed: sealed.as_ref(),
        started_mark: started_mark.map(Arc::new),
        allowed: attempts_allowed,
        deadline,
        poll: Duration::from_secs(config.poll_secs),
    };
    // A success is recorded at its reap (SPEC §6.6): a runner killed a
    // moment later must not have the post-script run a second time.
    let mut reaped_ok = false;
    for attempt in 1..=attempts_allowed {
        let mut on_success = || {
            edges.reaped(true, false);
            reaped_ok = true;
        };
        let report = match attempts.run(attempt, &mut result.status, &mut on_success) {
            Ok(r) => r,
            Err(p) => {
                result.problem = Some(p);
                edges.reaped(false, false);
                break;
            }
        };
        result.leftovers.extend(report.left_running.iter().cloned());
        let config_path = ctx.app.as_ref().map(|a| a.config.as_path());
        match judge(
            &report,
            script,
            config,
            config_path,
            (attempt, attempts_allowed),
        ) {
            Verdict::Succeeded => {
                if !reaped_ok {
                    edges.reaped(true, false);
                }
                result.problem = None;
                break;
            }
            Verdict::Interrupted => {
                edges.reaped(false, true);
                result.interrupted = crate::freeze::signals::pending().or(Some(libc::SIGTERM));
                break;
            }
            Verdict::Failed { problem, retry } => {
                let last = !retry || Instant::now() >= deadline || attempt == attempts_allowed;
                if last {
                    edges.reaped(false, false);
                }
                result.problem = Some(problem);
                if last {
                    break;
                }
            }
        }
    }
    result
}

/// A pinned script runs from one sealed copy of its hashed bytes, for every
/// attempt of the phase; an unpinned one by its path (no copy).
fn sealed_copy(script: &CheckedScript) -> Result<Option<OwnedFd>, Problem> {
    if !script.pinned {
        return Ok(None);
    }
    let executable = launch::needs_executable_copy(script);
    launch::sealed_copy(script.phase.name(), &script.content, executable)
        .map(Some)
        .map_err(|e| {
            Problem::new(
                script.phase.execution_failed(),
                format!(
                    "{}: cannot make a sealed copy of the checked script: {e}",
                    script.file.path.display()
                ),
            )
            .with_fix(Fix::ScriptStart(script.file.path.clone()))
        })
}

/// How an attempt ended, for the phase.
enum Verdict {
    Succeeded,
    Interrupted,
    /// `retry`: a non-zero exit, which the next attempt may mend; never a
    /// timeout (the budget is spent).
    Failed {
        problem: Problem,
        retry: bool,
    },
}

/// The attempt's verdict. `config_path` is the application's config file
/// (the timeout's fix names it); `(attempt, allowed)` its place among the
/// attempts.
fn judge(
    report: &supervise::AttemptReport,
    script: &CheckedScript,
    config: &Config,
    config_path: Option<&Path>,
    (attempt, allowed): (u32, u32),
) -> Verdict {
    let phase = script.phase;
    let path = script.file.path.display();
    if report.interrupted {
        return Verdict::Interrupted;
    }
    if report.timed_out {
        let fix = match config_path {
            Some(c) => Fix::Timeout {
                phase: phase.name(),
                config: c.to_path_buf(),
            },
            None => Fix::Row,
        };
        let problem = Problem::new(
            phase.timeout(),
            format!(
                "{path} ran past timeoutInSeconds ({} s); its process tree was killed (pids {:?})",
                config.timeout_secs, report.killed_pids
            ),
        )
        .with_fix(fix);
        return Verdict::Failed {
            problem,
            retry: false,
        };
    }
    if report.exit_code == Some(0) {
        return Verdict::Succeeded;
    }
    let how = match (report.exit_code, report.signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended without a status".to_string(),
    };
    if let Some(code) = script
        .workload
        .then_some(report.exit_code)
        .flatten()
        .map(|c| {
            crate::workload::error_code(c).unwrap_or(match phase {
                Phase::Pre => crate::error::ErrorCode::WorkloadPreFailed,
                Phase::Post => crate::error::ErrorCode::WorkloadPostFailed,
            })
        })
    {
        let said = last_line(&report.stderr);
        return Verdict::Failed {
            problem: Problem::new(code, format!("{} workload: {said}", phase.name())),
            retry: true,
        };
    }
    Verdict::Failed {
        problem: Problem::new(
            phase.execution_failed(),
            format!("{path} {how} (attempt {attempt} of {allowed})"),
        )
        .with_fix(Fix::ScriptLog {
            phase: phase.name(),
            last_result: None,
        }),
        retry: true,
    }
}

/// The last line a workload helper wrote on stderr: its named failure.
fn last_line(c: &supervise::Captured) -> String {
    let bytes = if c.tail.is_empty() { &c.head } else { &c.tail };
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("quiesce workload: ")
        .to_string()
}

/// What every attempt of one phase shares.
struct Attempts<'a, 'c> {
    ctx: &'a RunContext<'c>,
    script: &'a CheckedScript,
    sealed: Option<&'a OwnedFd>,
    /// Removed by the child first thing: see [`Edges::starting`].
    started_mark: Option<Arc<CString>>,
    allowed: u32,
    deadline: Instant,
    poll: Duration,
}

impl Attempts<'_, '_> {
    /// Runs attempt `attempt` under supervision, its start and exit in the
    /// trail, its line in `status`. A script that cannot be started is the
    /// phase's problem.
    /// `on_success` is called the moment the script is reaped with exit
    /// status 0, before anything else is done.
    fn run(
        &self,
        attempt: u32,
        status: &mut ScriptPhaseStatus,
        on_success: &mut dyn FnMut(),
    ) -> Result<supervise::AttemptReport, Problem> {
        let (ctx, script) = (self.ctx, self.script);
        let name = script.phase.name();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let (spec, how) = spawn_spec(
            ctx,
            script,
            self.sealed,
            self.started_mark.clone(),
            attempt,
            left,
        )
        .map_err(|e| {
            Problem::new(script.phase.execution_failed(), e)
                .with_fix(Fix::ScriptStart(script.file.path.clone()))
        })?;
        // Rounded up, as QUIESCE_DEADLINE_SECONDS is: a 3 s phase starts
        // with 3 s left, not 2 (the microseconds already spent).
        trail::human(format!(
            "{name}-script {} attempt {attempt}/{} ({} s left)",
            status.script,
            self.allowed,
            left.as_secs_f64().ceil() as u64
        ));
        let mut on_tick = |p: &supervise::Progress| {
            trail::event(
                Level::Info,
                Record::ScriptProgress,
                name,
                &[
                    ("pid", p.pid.to_string()),
                    ("elapsedMs", p.elapsed.as_millis().to_string()),
                    ("remainingMs", p.remaining.as_millis().to_string()),
                ],
                &format!("{name}-script still running"),
            );
        };
        let mut held = None;
        let mut on_spawn = |pid: i32| {
            crate::freeze::signals::track_child_group(pid);
            held = ProcessSandboxState::read(pid).ok();
            audit_start(ctx, script, attempt, pid, &spec, &how, held.as_ref());
        };
        let opts = RunOptions {
            deadline: self.deadline,
            poll_interval: self.poll,
            grace: ctx.grace,
            output_cap: ctx.output_cap,
            interrupt_fd: ctx.interrupt,
            on_tick: Some(&mut on_tick),
            on_spawn: Some(&mut on_spawn),
            on_exit: Some(&mut |st: supervise::ExitStatus| {
                if st.code() == Some(0) {
                    on_success();
                }
            }),
        };
        let outcome = supervise::run(&spec, opts);
        crate::freeze::signals::track_child_group(0);
        match outcome {
            Ok(report) => {
                audit_exit(script, &report);
                let mut a = attempt_status(attempt, &report);
                a.sandbox = held;
                status.attempts.push(a);
                Ok(report)
            }
            Err(e) => Err(spawn_failed(script, attempt, status, &e)),
        }
    }
}

/// A script that could not be started: in the trail and the status, and
/// the phase's problem with the row the failure belongs to (SPEC §4).
fn spawn_failed(
    script: &CheckedScript,
    attempt: u32,
    status: &mut ScriptPhaseStatus,
    e: &SpawnError,
) -> Problem {
    let name = script.phase.name();
    trail::event(
        Level::Error,
        Record::ScriptSpawnFailed,
        name,
        &[("script", status.script.clone()), ("error", e.to_string())],
        &format!("{name}-script could not be started"),
    );
    status.attempts.push(AttemptStatus {
        attempt,
        spawn_error: Some(e.to_string()),
        ..Default::default()
    });
    let code = spawn_error_code(script.phase, e);
    let path = script.file.path.clone();
    let fix = if code == script.phase.not_found() {
        Fix::PlaceScript {
            key: format!("{name}ScriptLocation"),
            path,
        }
    } else if code == script.phase.permission() {
        Fix::ScriptChanged(path)
    } else {
        Fix::ScriptStart(path)
    };
    Problem::new(code, format!("{}: {e}", status.script)).with_fix(fix)
}

fn audit_start(
    ctx: &RunContext<'_>,
    script: &CheckedScript,
    attempt: u32,
    pid: i32,
    spec: &SpawnSpec,
    how: &str,
    held: Option<&ProcessSandboxState>,
) {
    let name = script.phase.name();
    let argv: Vec<String> = spec
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let sandbox = match &ctx.sandbox {
        Some(_) => "policy",
        None => "DISABLED (--no-sandbox)",
    };
    trail::event(
        Level::Info,
        Record::ScriptStart,
        name,
        &[
            ("script", script.file.path.display().to_string()),
            ("sha256", script.sha256.clone()),
            ("argv", format!("{argv:?}")),
            ("pid", pid.to_string()),
            ("attempt", attempt.to_string()),
            ("sandbox", sandbox.to_string()),
            ("how", how.to_string()),
            (
                "capEff",
                held.map_or("unknown".into(), |h| h.cap_eff.join(",")),
            ),
            (
                "capBnd",
                held.map_or("unknown".into(), |h| h.cap_bnd.join(",")),
            ),
            (
                "noNewPrivs",
                held.and_then(|h| h.no_new_privs)
                    .map_or("unknown".into(), |b| b.to_string()),
            ),
            (
                "seccomp",
                held.and_then(|h| h.seccomp)
                    .map_or("unknown".into(), |m| m.to_string()),
            ),
        ],
        &format!("{name}-script started"),
    );
}

fn audit_exit(script: &CheckedScript, r: &supervise::AttemptReport) {
    let name = script.phase.name();
    let level = if r.exit_code == Some(0) {
        Level::Info
    } else {
        Level::Error
    };
    trail::event(
        level,
        Record::ScriptExit,
        name,
        &[
            ("pid", r.pid.to_string()),
            ("exit", r.exit_code.map_or("none".into(), |c| c.to_string())),
            ("signal", r.signal.map_or("none".into(), |s| s.to_string())),
            (
                "durationMs",
                format!("{:.1}", r.duration.as_secs_f64() * 1000.0),
            ),
            ("timedOut", r.timed_out.to_string()),
            ("killed", format!("{:?}", r.killed_pids)),
            (
                "leftRunning",
                format!(
                    "{:?}",
                    r.left_running.iter().map(|l| l.pid).collect::<Vec<_>>()
                ),
            ),
        ],
        &format!(
            "{name}-script {}",
            match (r.exit_code, r.signal, r.timed_out) {
                (_, _, true) => "timed out; its tree was killed".to_string(),
                (Some(c), _, _) => format!("exited {c}"),
                (None, Some(s), _) => format!("killed by signal {s}"),
                _ => "ended".to_string(),
            }
        ),
    );
    for (stream, cap) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if cap.total > 0 {
            trail::event(
                Level::Debug,
                Record::ScriptOutput,
                name,
                &[("stream", stream.into()), ("bytes", cap.total.to_string())],
                &cap.text(),
            );
        }
    }
    let human = match (r.exit_code, r.signal, r.timed_out) {
        (_, _, true) => format!(
            "{name}-script timed out after {:.1} s; killed {} process(es)",
            r.duration.as_secs_f64(),
            r.killed_pids.len()
        ),
        (Some(c), _, _) => format!(
            "{name}-script exited {c} in {:.1} ms",
            r.duration.as_secs_f64() * 1000.0
        ),
        (None, Some(s), _) => format!("{name}-script killed by signal {s}"),
        _ => format!("{name}-script ended"),
    };
    trail::human(human);
    let failed = r.timed_out || r.exit_code != Some(0);
    if failed && r.stderr.total > 0 {
        say_stderr_tail(name, &r.stderr);
    }
    for l in &r.left_running {
        trail::human(format!(
            "{name}-script left pid {} running: {}",
            l.pid, l.cmdline
        ));
    }
}

/// How many of the last lines of a failed script's stderr the human output
/// shows (the status and the trail keep the whole tail).
pub const STDERR_LINES: usize = 10;

/// The last lines of a failed attempt's stderr, on the human output, each
/// cut at 300 characters: what an operator reads first.
fn say_stderr_tail(name: &str, stderr: &supervise::Captured) {
    let text = stderr.tail_text(16 * 1024);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let shown = &lines[lines.len().saturating_sub(STDERR_LINES)..];
    trail::human(format!(
        "{name}-script stderr, last {} line(s) of {} byte(s):",
        shown.len(),
        stderr.total
    ));
    for l in shown {
        let cut: String = l.chars().take(300).collect();
        let more = if cut.len() < l.len() { " …" } else { "" };
        trail::human(format!("  | {cut}{more}"));
    }
}
