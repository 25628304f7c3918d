//! The snapshot command inside a freeze window, on the kernel: the command
//! resolved and spawned in its own session, the window's steps
//! ([`super::window_order::WindowSteps`]) as real freezes, thaws and kills,
//! the freeze records, and what the command and the window did. Log records
//! and human lines are held from just before the first freeze until after
//! the last thaw.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;

use super::window_order::{carry_out, CommandEnd, WindowSteps};
use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::ioctl::KernelFreeze;
use crate::freeze::signals;
use crate::freeze::window::{
    FreezeWindow, MountTarget, WindowOptions, WindowReport, WindowStandby, PER_CALL_DEADLINE,
};
use crate::job::decide::Settings;
use crate::job::runner::Runner;
use crate::job::status::{self as report, SnapshotStatus};
use crate::job::steps::group::GroupGate;
use crate::sandbox::guards;
use crate::supervise::{self, Exec, SpawnSpec, WaitOutcome};
use crate::trail::{self, Record};

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
    /// The consistency group's barriers, with `--group`.
    group: Option<GroupGate<'r>>,
    /// The command exited with status 0.
    command_ok: bool,
}

/// How long the command is waited for before the group is looked at.
const GROUP_SLICE: Duration = Duration::from_millis(10);

impl KernelWindow<'_> {
    /// The command's end as the window records it: the watchdog's health,
    /// the command's process group forgotten.
    fn command_end(&mut self, end: CommandEnd) -> CommandEnd {
        if let Some(w) = &self.window {
            if !w.watchdog_alive() {
                self.warnings.push("the watchdog died during the freeze window; only the runner's own deadline guarded it".into());
            }
            w.shared().set_snapshot_pgid(0);
        }
        end
    }

    /// The window's deadline: no barrier inside the window waits past it.
    fn deadline(&self) -> Instant {
        self.window
            .as_ref()
            .and_then(|w| w.deadline())
            .unwrap_or_else(|| Instant::now() + self.max_freeze)
    }
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
        let signals = Some(self.runner.signals.fd());
        let end = match self.group.as_mut() {
            None => child.wait(deadline, Duration::from_secs(1), signals, &mut tick),
            Some(gate) => {
                // In slices, so that the round's abort is seen at once.
                gate.watch(deadline);
                let end = loop {
                    let slice = (Instant::now() + GROUP_SLICE).min(deadline);
                    match child.wait(slice, Duration::from_secs(1), signals, &mut tick) {
                        WaitOutcome::DeadlinePassed if Instant::now() < deadline => {
                            if gate.aborted() {
                                break None;
                            }
                        }
                        end => break Some(end),
                    }
                };
                gate.unwatch(deadline);
                match end {
                    Some(end) => end,
                    None => return self.command_end(CommandEnd::GroupAborted),
                }
            }
        };
        let end = match end {
            WaitOutcome::Exited(st) => {
                self.command_ok = st.success();
                CommandEnd::Exited
            }
            WaitOutcome::DeadlinePassed => CommandEnd::DeadlinePassed,
            WaitOutcome::Interrupted => CommandEnd::Interrupted,
        };
        self.command_end(end)
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

    fn group_frozen(&mut self, ok: bool) -> Option<Result<(), Problem>> {
        let deadline = self.deadline();
        let gate = self.group.as_mut()?;
        Some(gate.all_frozen(ok, deadline))
    }

    fn group_done(&mut self, end: CommandEnd) -> Option<Result<(), Problem>> {
        let deadline = self.deadline();
        let ok = end == CommandEnd::Exited && self.command_ok;
        let gate = self.group.as_mut()?;
        Some(gate.all_done(ok, deadline))
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
    group: Option<GroupGate<'_>>,
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
        group,
        command_ok: false,
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
    // A round that aborted: no member's snapshot is a group snapshot.
    run.snapshot_ok &= !carried.group_failed;
    run
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

/// A standby no window used: the watchdog and the threads end.
pub fn dismiss(standby: WindowStandby) {
    let pid = standby.watchdog_pid();
    standby.dismiss();
    pid.into_iter().for_each(guards::release);
}
