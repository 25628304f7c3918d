//! Taking the snapshot inside a freeze window (SPEC.md §6), the steps
//! `quiesce freeze -- CMD` and `quiesce snapshot -- CMD` share: the mount
//! plan and the lock before anything runs ([`prepare`]), the window's
//! standby, the snapshot command inside the window, and what the window did
//! filed in the job ([`file_window`]).
//!
//! Order, every path: thaw first, then kill (a process blocked writing to a
//! frozen filesystem cannot die until the thaw); log records and human lines
//! are held from just before the first freeze until after the last thaw.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::ioctl::KernelFreeze;
use crate::freeze::lock::RunLock;
use crate::freeze::mounts::{self, MountPlan, SysBlockInfo};
use crate::freeze::signals;
use crate::freeze::window::{
    FreezeWindow, MountTarget, WindowOptions, WindowReport, WindowStandby, PER_CALL_DEADLINE,
};
use crate::job::context::Context;
use crate::job::decide::{self, Settings};
use crate::job::run::Job;
use crate::job::runner::Runner;
use crate::job::status::{self as report, FreezePhase, SnapshotStatus};
use crate::sandbox::guards;
use crate::supervise::{self, Exec, SpawnSpec, WaitOutcome};
use crate::trail::{self, Record};
use log::Level;

/// What one attempt at the snapshot produced.
#[derive(Default)]
pub struct SnapshotRun {
    pub window: Option<WindowReport>,
    pub snapshot: Option<SnapshotStatus>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// Every planned filesystem was frozen while the command ran.
    pub froze: bool,
    pub snapshot_ok: bool,
    pub interrupted: Option<i32>,
}

/// Resolves the snapshot command before the window opens, so nothing is
/// looked up on a frozen filesystem: a bare name is searched in `PATH`.
pub fn resolve_program(name: &str) -> Result<PathBuf, Problem> {
    let not_found = |why: String| {
        Problem::new(ErrorCode::SnapshotCommandFailed, why)
            .with_fix(Fix::SnapshotCommand(name.to_string()))
    };
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = std::path::absolute(name).unwrap_or_else(|_| PathBuf::from(name));
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(not_found(format!(
                "snapshot command {name} is not an executable file"
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_exec(p))
        .ok_or_else(|| not_found(format!("snapshot command {name} not found in PATH")))
}

/// The snapshot command's spawn spec: the operator's own command, run with
/// the operator's environment and working directory (it is not a script
/// from the config, so it is not sandboxed), in its own session.
fn command_spec(op: &str, program: &Path, argv: &[String]) -> Result<SpawnSpec, Problem> {
    let bad = |w: &str| Problem::new(ErrorCode::SnapshotCommandFailed, format!("NUL byte in {w}"));
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| bad("the command"));
    let args = argv
        .iter()
        .map(|a| cstr(OsStr::new(a)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = SpawnSpec::new(Exec::Path(cstr(program.as_os_str())?), args);
    spec.env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| bad("the environment"))
        })
        .chain(std::iter::once(
            CString::new(format!("QUIESCE_OPERATION_ID={op}")).map_err(|_| bad("the id")),
        ))
        .collect::<Result<_, _>>()?;
    if let Ok(cwd) = std::env::current_dir() {
        spec.cwd = cstr(cwd.as_os_str())?;
    }
    Ok(spec)
}

/// Opens every mount of the plan, in freeze order, before the window, each
/// checked to still be the planned mount (123 otherwise).
pub fn open_targets(plan: &MountPlan) -> Result<Vec<MountTarget>, Problem> {
    let order = plan.freeze_order();
    if order.is_empty() {
        return Err(Problem::new(
            ErrorCode::FsFreezeFailed,
            "no filesystem to freeze was found",
        )
        .with_fix(Fix::NameMounts));
    }
    order
        .into_iter()
        .map(|e| MountTarget::open_planned(e).map_err(Problem::from))
        .collect()
}

/// How the snapshot command ended, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    Exited,
    /// `--max-freeze` passed.
    DeadlinePassed,
    /// A signal reached the runner.
    Interrupted,
}

/// The steps of a window, behind a trait so that their order — above all
/// thaw before kill — and the decisions are unit-tested without root.
pub trait WindowSteps {
    /// Whether there is a window to freeze (a freeze was asked and its
    /// preparation succeeded).
    fn has_window(&self) -> bool;
    /// Freezes every target; on failure nothing of ours is left frozen.
    fn freeze(&mut self) -> Result<(), Problem>;
    /// Thaws what is frozen (idempotent).
    fn thaw(&mut self);
    /// Closes the window — thaws, dismisses the watchdog — then releases
    /// the held trail (idempotent).
    fn close(&mut self);
    fn start_command(&mut self) -> Result<(), Problem>;
    fn wait_command(&mut self) -> CommandEnd;
    /// Kills the command's whole tree.
    fn kill_command(&mut self);
    /// The signal the runner got, if any.
    fn signal(&self) -> Option<i32>;
}

/// What carrying a window out came to.
#[derive(Debug, Default)]
pub struct Carried {
    /// Every planned filesystem was frozen while the command ran.
    pub froze: bool,
    /// The command was started.
    pub ran: bool,
    /// The command was killed (deadline or signal) and cannot count.
    pub killed: bool,
    /// The command could not be started.
    pub start_failed: bool,
    pub problems: Vec<Problem>,
    pub interrupted: Option<i32>,
}

/// Carries a window out: freeze, run the command, thaw, kill — thaw always
/// before kill (a process blocked on a frozen filesystem cannot die before
/// the thaw). When the freeze fails, [`decide::snapshot_after_freeze_failure`]
/// decides under `settings` whether the command still runs (§5 row 4).
/// `prepared`: the window's preparation failed with this problem.
pub fn carry_out(
    steps: &mut impl WindowSteps,
    settings: Settings,
    max_freeze: Duration,
    prepared: Option<Problem>,
) -> Carried {
    let mut c = Carried::default();
    c.problems.extend(prepared);
    if steps.has_window() {
        match steps.freeze() {
            Ok(()) => c.froze = true,
            Err(p) => c.problems.push(p),
        }
    }
    if !c.problems.is_empty() {
        steps.close();
        if !decide::snapshot_after_freeze_failure(settings, steps.signal().is_some()) {
            c.interrupted = steps.signal();
            return c;
        }
        report::say(
            "snapshot without freeze (crash-consistent), as continueBackupOnFailure allows",
        );
    }
    if let Err(p) = steps.start_command() {
        steps.close();
        c.problems.push(p);
        c.start_failed = true;
        return c;
    }
    c.ran = true;
    match steps.wait_command() {
        CommandEnd::Exited => {}
        CommandEnd::DeadlinePassed => {
            steps.thaw();
            c.problems.push(Problem::new(
                ErrorCode::FsFreezeTimeout,
                format!(
                    "the freeze window reached --max-freeze ({} s): filesystems thawed, then the snapshot command was killed",
                    max_freeze.as_secs()
                ),
            ));
            c.killed = true;
        }
        CommandEnd::Interrupted => {
            steps.thaw();
            c.interrupted = steps.signal().or(Some(libc::SIGTERM));
            c.killed = true;
        }
    }
    if c.killed {
        steps.kill_command();
    }
    steps.close();
    c
}

/// The window's steps on the real kernel: the freeze window, the trail held
/// from just before the first freeze until after the last thaw, and the
/// snapshot command.
struct KernelWindow<'r> {
    runner: &'r Runner,
    /// Declared before `hold`: dropped first, so a window dropped while
    /// unwinding thaws before the trail is released.
    window: Option<FreezeWindow>,
    hold: Option<trail::Hold>,
    report: Option<WindowReport>,
    max_freeze: Duration,
    spec: SpawnSpec,
    child: Option<supervise::Supervised>,
    status: SnapshotStatus,
    warnings: Vec<String>,
}

impl WindowSteps for KernelWindow<'_> {
    fn has_window(&self) -> bool {
        self.window.is_some()
    }

    fn freeze(&mut self) -> Result<(), Problem> {
        let Some(w) = self.window.as_mut() else {
            return Ok(());
        };
        let names: Vec<String> = w
            .targets()
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        report::say(format!(
            "freezing {} (max {} s; watchdog pid {})",
            names.join(", "),
            self.max_freeze.as_secs(),
            w.watchdog_pid().unwrap_or(0)
        ));
        // From here until the release nothing is written anywhere.
        self.hold = Some(trail::Hold::start());
        let started = Instant::now();
        let frozen = w.freeze_all();
        let frozen = frozen.map_err(Problem::from);
        freeze_records(w, &names, started, frozen.as_ref().err());
        frozen
    }

    fn thaw(&mut self) {
        if let Some(w) = self.window.as_mut() {
            w.thaw_all();
        }
    }

    fn close(&mut self) {
        if let Some(w) = self.window.take() {
            self.report = Some(w.close());
        }
        drop(self.hold.take());
    }

    fn start_command(&mut self) -> Result<(), Problem> {
        let mut child =
            supervise::spawn(&self.spec, self.runner.policy.output_cap()).map_err(|e| {
                Problem::new(
                    ErrorCode::SnapshotCommandFailed,
                    format!("cannot start {}: {e}", self.status.command[0]),
                )
                .with_fix(Fix::SnapshotCommand(self.status.command[0].clone()))
            })?;
        if let Some(w) = &self.window {
            if let Some(wd) = w.watchdog_pid() {
                child.exclude(&[wd]);
            }
            w.shared().set_snapshot_pgid(child.pid());
        }
        self.status.pid = Some(child.pid());
        signals::track_child_group(child.pid());
        self.child = Some(child);
        if crate::fault::active("panic-in-window") {
            // Let the command get going first, so the test sees it killed.
            std::thread::sleep(Duration::from_millis(300));
            panic!("injected fault: panic inside the freeze window");
        }
        Ok(())
    }

    fn wait_command(&mut self) -> CommandEnd {
        let Some(child) = self.child.as_mut() else {
            return CommandEnd::Exited;
        };
        // The command is bounded by the window's deadline, when it has one.
        let deadline = self
            .window
            .as_ref()
            .and_then(|w| w.deadline())
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let mut tick = |p: &supervise::Progress| {
            trail::event(
                Level::Info,
                Record::SnapshotProgress,
                "snapshot",
                &[
                    ("pid", p.pid.to_string()),
                    ("elapsedMs", p.elapsed.as_millis().to_string()),
                ],
                "snapshot command still running",
            );
        };
        let end = child.wait(
            deadline,
            Duration::from_secs(1),
            Some(self.runner.signals.fd()),
            &mut tick,
        );
        if let Some(w) = &self.window {
            if !w.watchdog_alive() {
                self.warnings.push("the watchdog died during the freeze window; only the runner's own deadline guarded it".into());
            }
            w.shared().set_snapshot_pgid(0);
        }
        match end {
            WaitOutcome::Exited(_) => CommandEnd::Exited,
            WaitOutcome::DeadlinePassed => CommandEnd::DeadlinePassed,
            WaitOutcome::Interrupted => CommandEnd::Interrupted,
        }
    }

    fn kill_command(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let k = child.kill_tree(self.runner.policy.kill_grace());
        self.status.killed_pids = k.killed;
        if !k.survivors.is_empty() {
            self.warnings.push(format!(
                "snapshot command processes survived SIGKILL: {:?}",
                k.survivors
            ));
        }
    }

    fn signal(&self) -> Option<i32> {
        signals::pending()
    }
}

/// The freeze's records, held until the thaw: each mount frozen and the
/// whole freeze, or the failure.
fn freeze_records(w: &FreezeWindow, names: &[String], started: Instant, failed: Option<&Problem>) {
    if let Some(p) = failed {
        trail::event(
            Level::Error,
            Record::FreezeFailed,
            "freeze",
            &[("error", p.to_string())],
            "freeze failed; everything frozen was thawed",
        );
        return;
    }
    for (t, ms) in w.frozen_mounts() {
        trail::event(
            Level::Info,
            Record::Freeze,
            "freeze",
            &[
                ("mount", t.path.display().to_string()),
                ("device", t.device.clone()),
                ("fsType", t.fs_type.clone()),
                ("durationMs", format!("{ms:.3}")),
            ],
            "filesystem frozen",
        );
    }
    trail::event(
        Level::Info,
        Record::FreezeComplete,
        "freeze",
        &[
            ("mounts", names.join(",")),
            (
                "durationMs",
                format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
            ),
        ],
        "every filesystem frozen",
    );
}

/// Runs the snapshot command, inside a freeze window of the given targets
/// when there is one (see [`carry_out`]).
pub fn take_snapshot(
    runner: &Runner,
    window: Option<(Vec<MountTarget>, WindowStandby)>,
    cmd: &[String],
    max_freeze: Duration,
    settings: Settings,
) -> SnapshotRun {
    let mut run = SnapshotRun::default();
    let spec = match resolve_program(&cmd[0])
        .and_then(|program| command_spec(&runner.operation_id, &program, cmd))
    {
        Ok(s) => s,
        Err(p) => {
            if let Some((_, standby)) = window {
                dismiss(standby);
            }
            run.problems.push(p);
            return run;
        }
    };
    let watchdog = window.as_ref().and_then(|(_, s)| s.watchdog_pid());
    let (window, prepared) = match window {
        Some((t, standby)) => match open_window(runner, t, standby, max_freeze) {
            Ok(w) => (Some(w), None),
            Err(p) => (None, Some(p)),
        },
        None => (None, None),
    };
    let mut k = KernelWindow {
        runner,
        window,
        hold: None,
        report: None,
        max_freeze,
        spec,
        child: None,
        status: SnapshotStatus {
            command: cmd.to_vec(),
            ..Default::default()
        },
        warnings: Vec::new(),
    };
    let started = Instant::now();
    let carried = carry_out(&mut k, settings, max_freeze, prepared);
    signals::track_child_group(0);
    let finished = k.child.take().map(|c| c.finish());
    if let Some(f) = &finished {
        k.status.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        k.status.exit_code = f.status.and_then(|s| s.code());
        k.status.signal = f.status.and_then(|s| s.signal());
        k.status.stdout_tail = f.stdout.text();
        k.status.stderr_tail = f.stderr.text();
    }
    run.froze = carried.froze;
    run.interrupted = carried.interrupted;
    run.problems = carried.problems;
    run.warnings = std::mem::take(&mut k.warnings);
    finish_window(&mut run, k.report.take());
    watchdog.into_iter().for_each(guards::release);
    k.status.frozen = run.froze;
    if carried.ran {
        command_exit(&mut run, k.status, carried.killed);
    } else if carried.start_failed {
        run.snapshot = Some(k.status);
    }
    run
}

/// Starts what the window of `plan` needs before the run's first script:
/// the watchdog (under its filter) and the freeze threads (SPEC §8: every
/// script's guard filter names them). The watchdog is protected from the
/// scripts from here on.
pub fn standby(
    runner: &Runner,
    plan: &MountPlan,
    warnings: &mut Vec<String>,
) -> Result<WindowStandby, Problem> {
    let mut widths = std::collections::BTreeMap::new();
    for e in plan.freeze_order() {
        *widths.entry(e.stage.unwrap_or(1)).or_insert(0usize) += 1;
    }
    let threads = widths.values().copied().max().unwrap_or(0);
    let filter_fn;
    let filter: Option<crate::freeze::watchdog::ChildFilter<'_>> = match &runner.watchdog_filter {
        Some(f) => {
            filter_fn = move || f.apply().map_or_else(|e| e.errno as i32, |_| 0);
            Some(&filter_fn)
        }
        None => None,
    };
    let standby = WindowStandby::start(Some(&runner.run_dir), threads, true, filter)?;
    if let Some(pid) = standby.watchdog_pid() {
        guards::protect(pid, "watchdog");
        // Out of the runner's cgroup: a freeze of the runner's unit must
        // not freeze the watchdog with it.
        if let Err(e) = supervise::move_to_root_cgroup(pid) {
            let w = format!("the watchdog stays in the runner's cgroup ({e}): a freeze of that cgroup (systemctl freeze) would stop it too");
            report::say(format!("warning: {w}"));
            trail::event(Level::Warn, Record::Log, "freeze", &[], &w);
            warnings.push(w);
        }
    }
    Ok(standby)
}

/// A standby no window used: the watchdog and the threads end.
pub fn dismiss(standby: WindowStandby) {
    let pid = standby.watchdog_pid();
    standby.dismiss();
    pid.into_iter().for_each(guards::release);
}

/// Prepares the window: state record, OOM shield, the watchdog armed.
fn open_window(
    runner: &Runner,
    targets: Vec<MountTarget>,
    standby: WindowStandby,
    max_freeze: Duration,
) -> Result<FreezeWindow, Problem> {
    let opts = WindowOptions {
        max_freeze,
        per_call: PER_CALL_DEADLINE,
        run_dir: Some(runner.run_dir.clone()),
        operation_id: runner.operation_id.clone(),
        standby,
    };
    FreezeWindow::prepare(targets, Arc::new(KernelFreeze), opts).map_err(Problem::from)
}

/// The command's exit in the run: whether the snapshot counts, its record.
fn command_exit(run: &mut SnapshotRun, status: SnapshotStatus, killed: bool) {
    let cmd = &status.command;
    run.snapshot_ok = !killed && status.exit_code == Some(0);
    if !killed && !run.snapshot_ok {
        run.problems.push(Problem::new(
            ErrorCode::SnapshotCommandFailed,
            match (status.exit_code, status.signal) {
                (Some(c), _) => format!("{} exited with status {c}", cmd[0]),
                (None, Some(s)) => format!("{} was killed by signal {s}", cmd[0]),
                _ => format!("{} ended without a status", cmd[0]),
            },
        ));
    }
    trail::event(
        if run.snapshot_ok {
            Level::Info
        } else {
            Level::Error
        },
        Record::SnapshotExit,
        "snapshot",
        &[
            ("command", format!("{cmd:?}")),
            ("pid", status.pid.unwrap_or(0).to_string()),
            (
                "exit",
                status.exit_code.map_or("none".into(), |c| c.to_string()),
            ),
            (
                "signal",
                status.signal.map_or("none".into(), |s| s.to_string()),
            ),
            ("durationMs", format!("{:.1}", status.duration_ms)),
            ("frozen", run.froze.to_string()),
        ],
        if run.snapshot_ok {
            "snapshot command succeeded"
        } else {
            "snapshot command failed"
        },
    );
    report::say(format!(
        "snapshot command {} in {:.1} ms",
        match (status.exit_code, status.signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended".into(),
        },
        status.duration_ms
    ));
    run.snapshot = Some(status);
}

/// The thaw's records, once everything is thawed and the trail released.
fn finish_window(run: &mut SnapshotRun, report: Option<WindowReport>) {
    let Some(mut report) = report else { return };
    for m in &report.mounts {
        trail::event(
            Level::Info,
            Record::Thaw,
            "freeze",
            &[
                ("mount", m.path.display().to_string()),
                ("device", m.device.clone()),
                ("fsType", m.fs_type.clone()),
                ("frozenMs", format!("{:.3}", m.frozen_ms)),
            ],
            "filesystem thawed",
        );
    }
    trail::event(
        Level::Info,
        Record::Window,
        "freeze",
        &[
            ("windowMs", format!("{:.3}", report.window_ms)),
            ("mounts", report.mounts.len().to_string()),
        ],
        "freeze window closed",
    );
    if !report.mounts.is_empty() {
        report::say(format!(
            "thawed {} filesystem(s); frozen for {:.1} ms",
            report.mounts.len(),
            report.window_ms
        ));
    }
    run.warnings.append(&mut report.warnings);
    // A thaw that failed after its retries: the mount is still frozen.
    run.problems
        .extend(report.problems.drain(..).map(Problem::from));
    // The freeze did not hold for the whole window (SPEC §6.4 point 6):
    // whatever the command did, the snapshot is not consistent.
    if let Some(e) = report.broke.take() {
        run.froze = false;
        if !run
            .problems
            .iter()
            .any(|p| p.code == ErrorCode::FsFreezeTimeout)
        {
            report::say(format!("error: {e}"));
            run.problems.push(Problem::from(e));
        }
    }
    run.window = Some(report);
}

/// The mount plan: the `--mount` list when given (it replaces discovery),
/// else discovery from `/proc/self/mountinfo` minus `MountsToSkip`.
pub fn mount_plan(cx: &Context, requested: &[PathBuf]) -> Result<MountPlan, Problem> {
    let cannot = |e: String, path: &str| {
        Problem::new(ErrorCode::UnableToOpenMount, e).with_fix(Fix::Unreadable(path.into()))
    };
    if requested.is_empty() {
        return mounts::discover_system(&cx.options.vmbackup_conf).map_err(|e| {
            let path = match &e {
                mounts::DiscoverError::ReadVmbackupConf(p, _) => p.display().to_string(),
                _ => "/proc/self/mountinfo".into(),
            };
            cannot(e.to_string(), &path)
        });
    }
    let infos = mounts::load_mounts().map_err(|e| cannot(e.to_string(), "/proc/self/mountinfo"))?;
    mounts::plan_explicit(&infos, requested, &SysBlockInfo::default())
        .map_err(|e| Problem::new(e.code(), e.to_string()).with_fix(e.fix()))
}

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

/// The mount plan (when the freeze is on) and the freeze lock, before
/// anything runs; what a dead runner left frozen is recovered here.
pub fn prepare(
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
    let lock = super::lock::lock_and_recover(cx, &mut warnings);
    job.warn_all(warnings);
    Ok((plan, lock?))
}

/// What the window achieved.
#[derive(Default)]
pub struct Shot {
    pub froze: bool,
    pub snapshot_ok: bool,
}

/// Files what the window did in the job: warnings, errors, phases.
pub fn file_window(job: &mut Job, run: SnapshotRun) -> Shot {
    // Gathered in the window, where nothing is said: said now.
    job.say_warnings(run.warnings.iter().cloned());
    for p in &run.problems {
        job.problem(p);
    }
    if let Some(w) = run.window {
        job.status.phases.freeze = Some(FreezePhase::Window(w));
    }
    if let Some(s) = run.snapshot {
        job.status.phases.snapshot = Some(s);
    }
    if let Some(sig) = run.interrupted {
        job.interrupted(sig);
    }
    Shot {
        froze: run.froze,
        snapshot_ok: run.snapshot_ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the steps in order; answers as it is told.
    #[derive(Default)]
    struct Steps {
        calls: Vec<&'static str>,
        window: bool,
        freeze_fails: bool,
        start_fails: bool,
        end: Option<CommandEnd>,
        signal: Option<i32>,
    }

    impl WindowSteps for Steps {
        fn has_window(&self) -> bool {
            self.window
        }
        fn freeze(&mut self) -> Result<(), Problem> {
            self.calls.push("freeze");
            if self.freeze_fails {
                Err(Problem::new(ErrorCode::FsFreezeFailed, "EIO"))
            } else {
                Ok(())
            }
        }
        fn thaw(&mut self) {
            self.calls.push("thaw");
        }
        fn close(&mut self) {
            self.calls.push("close");
        }
        fn start_command(&mut self) -> Result<(), Problem> {
            self.calls.push("start");
            if self.start_fails {
                Err(Problem::new(ErrorCode::SnapshotCommandFailed, "ENOENT"))
            } else {
                Ok(())
            }
        }
        fn wait_command(&mut self) -> CommandEnd {
            self.calls.push("wait");
            self.end.unwrap_or(CommandEnd::Exited)
        }
        fn kill_command(&mut self) {
            self.calls.push("kill");
        }
        fn signal(&self) -> Option<i32> {
            self.signal
        }
    }

    const CONT: Settings = Settings {
        continue_on_failure: true,
        fs_freeze_enabled: true,
    };
    const SECS: Duration = Duration::from_secs(60);

    fn windowed() -> Steps {
        Steps {
            window: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_window_freezes_runs_and_closes() {
        let mut s = windowed();
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "start", "wait", "close"]);
        assert!(c.froze && c.ran && !c.killed && c.problems.is_empty());
    }

    #[test]
    fn at_the_deadline_it_thaws_before_it_kills() {
        let mut s = Steps {
            end: Some(CommandEnd::DeadlinePassed),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "start", "wait", "thaw", "kill", "close"]
        );
        assert!(c.killed);
        assert_eq!(c.problems[0].code, ErrorCode::FsFreezeTimeout);
    }

    #[test]
    fn after_a_signal_it_thaws_before_it_kills() {
        let mut s = Steps {
            end: Some(CommandEnd::Interrupted),
            signal: Some(libc::SIGTERM),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(
            s.calls,
            ["freeze", "start", "wait", "thaw", "kill", "close"]
        );
        assert_eq!(c.interrupted, Some(libc::SIGTERM));
        assert!(c.killed);
    }

    #[test]
    fn a_failed_freeze_snapshots_without_freeze_only_if_allowed() {
        let mut s = Steps {
            freeze_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "close", "start", "wait", "close"]);
        assert!(!c.froze && c.ran);

        let mut s = Steps {
            freeze_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, Settings::FREEZE_ONLY, SECS, None);
        assert_eq!(s.calls, ["freeze", "close"]);
        assert!(!c.ran);
    }

    #[test]
    fn a_signal_during_a_failed_freeze_runs_no_command() {
        let mut s = Steps {
            freeze_fails: true,
            signal: Some(libc::SIGINT),
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "close"]);
        assert_eq!(c.interrupted, Some(libc::SIGINT));
    }

    #[test]
    fn a_window_that_could_not_be_prepared_is_a_failed_freeze() {
        let mut s = Steps::default();
        let failed = Problem::new(ErrorCode::FsFreezeFailed, "watchdog not ready");
        let c = carry_out(&mut s, CONT, SECS, Some(failed.clone()));
        assert_eq!(s.calls, ["close", "start", "wait", "close"]);
        let mut s = Steps::default();
        let c2 = carry_out(&mut s, Settings::FREEZE_ONLY, SECS, Some(failed));
        assert_eq!(s.calls, ["close"]);
        assert!(c.ran && !c2.ran);
    }

    #[test]
    fn a_command_that_cannot_start_still_closes_the_window() {
        let mut s = Steps {
            start_fails: true,
            ..windowed()
        };
        let c = carry_out(&mut s, CONT, SECS, None);
        assert_eq!(s.calls, ["freeze", "start", "close"]);
        assert!(c.start_failed && !c.ran);
    }
}
