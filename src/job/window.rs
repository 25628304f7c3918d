//! Taking the snapshot inside a freeze window (SPEC.md §6): shared by
//! `quiesce freeze -- CMD` and `quiesce snapshot -- CMD`.
//!
//! Order, every path: thaw first, then kill (a process blocked writing to a
//! frozen filesystem cannot die until the thaw); log records and human lines
//! are held from just before the first freeze until after the last thaw.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;
use serde::Serialize;

use super::decide::{self, Settings};
use super::Common;
use super::Runner;
use crate::audit;
use crate::error::{ErrorCode, Problem};
use crate::freeze::ioctl::KernelFreeze;
use crate::freeze::lock::{LockPaths, RunLock};
use crate::freeze::mounts::MountPlan;
use crate::freeze::state::{self, RecoverError};
use crate::freeze::window::{
    FreezeWindow, MountTarget, WindowOptions, WindowReport, PER_CALL_DEADLINE,
};
use crate::job::status as report;
use crate::supervise::{self, Exec, SpawnSpec, WaitOutcome};

/// `phases.snapshot` of the status.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub command: Vec<String>,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: f64,
    pub killed_pids: Vec<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Whether the filesystems were frozen while it ran.
    pub frozen: bool,
}

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
    let not_found = |why: String| Problem::new(ErrorCode::SnapshotCommandFailed, why);
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

/// Takes the run lock (and the extension's freeze lock) and recovers what a
/// dead runner left frozen. Fails fast when another run holds the lock.
pub fn lock_and_recover(common: &Common, warnings: &mut Vec<String>) -> Result<RunLock, Problem> {
    let paths = LockPaths {
        run_dir: common.run_dir.path.clone(),
        ..LockPaths::default()
    };
    let lock = RunLock::acquire(&paths)
        .map_err(|e| Problem::new(ErrorCode::FsFreezeFailed, e.to_string()))?;
    match state::recover(&common.run_dir) {
        Ok(None) => {}
        Ok(Some(r)) => {
            let msg = format!(
                "recovered the freeze window of dead runner pid {} (operation {}): {}",
                r.record.runner_pid,
                r.record.operation_id,
                r.mounts
                    .iter()
                    .map(|m| format!("{} {}", m.path.display(), m.outcome))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            audit::event(
                Level::Warn,
                "recovery",
                "freeze",
                &[("deadRunner", r.record.runner_pid.to_string())],
                &msg,
            );
            report::say(format!("warning: {msg}"));
            warnings.push(msg);
        }
        // We hold the lock, so a live recorder is a runner that lost its
        // lock file (deleted /run?): do not touch its window.
        Err(RecoverError::RunnerAlive(pid)) => {
            return Err(Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("runner pid {pid} is inside a freeze window; not freezing twice"),
            ))
        }
        Err(RecoverError::State(e)) => warnings.push(format!("recovery state unreadable: {e}")),
    }
    Ok(lock)
}

/// Opens every mount of the plan, in freeze order, before the window, each
/// checked to still be the planned mount (123 otherwise).
pub fn open_targets(plan: &MountPlan) -> Result<Vec<MountTarget>, Problem> {
    let order = plan.freeze_order();
    if order.is_empty() {
        return Err(Problem::new(
            ErrorCode::FsFreezeFailed,
            "no filesystem to freeze was found (name mounts with --mount; quiesce check lists why each mount is skipped)",
        ));
    }
    order.into_iter().map(MountTarget::open_planned).collect()
}

/// Runs the snapshot command, inside a freeze window when `targets` is
/// given. When the freeze fails, [`decide::snapshot_after_freeze_failure`]
/// decides under `settings` (§5 row 4).
pub fn take_snapshot(
    runner: &Runner,
    targets: Option<Vec<MountTarget>>,
    cmd: &[String],
    max_freeze: Duration,
    settings: Settings,
) -> SnapshotRun {
    let interrupted = || crate::freeze::signals::pending().is_some();
    let mut run = SnapshotRun::default();
    let program = match resolve_program(&cmd[0]) {
        Ok(p) => p,
        Err(p) => {
            run.problems.push(p);
            return run;
        }
    };
    let spec = match command_spec(&runner.operation_id, &program, cmd) {
        Ok(s) => s,
        Err(p) => {
            run.problems.push(p);
            return run;
        }
    };
    let filter_fn;
    let filter: Option<crate::freeze::watchdog::ChildFilter<'_>> = match &runner.watchdog_filter {
        Some(f) => {
            filter_fn = move || f.apply().map_or_else(|e| e.errno as i32, |_| 0);
            Some(&filter_fn)
        }
        None => None,
    };
    let mut window = None;
    if let Some(targets) = targets {
        let opts = WindowOptions {
            max_freeze,
            per_call: PER_CALL_DEADLINE,
            run_dir: Some(runner.run_dir.clone()),
            operation_id: runner.operation_id.clone(),
            watchdog: true,
            watchdog_filter: filter,
        };
        match FreezeWindow::prepare(targets, Arc::new(KernelFreeze), opts) {
            Ok(w) => window = Some(w),
            Err(p) => run.problems.push(p),
        }
    }
    if let Some(w) = window.as_mut() {
        let names: Vec<String> = w
            .targets()
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        report::say(format!(
            "freezing {} (max {} s; watchdog pid {})",
            names.join(", "),
            max_freeze.as_secs(),
            w.watchdog_pid().unwrap_or(0)
        ));
        // From here until the release nothing is written anywhere.
        audit::hold();
        let freeze_started = Instant::now();
        match w.freeze_all() {
            Ok(()) => {
                run.froze = true;
                for (t, ms) in w.frozen_mounts() {
                    audit::event(
                        Level::Info,
                        "freeze",
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
                audit::event(
                    Level::Info,
                    "freeze-complete",
                    "freeze",
                    &[
                        ("mounts", names.join(",")),
                        (
                            "durationMs",
                            format!("{:.3}", freeze_started.elapsed().as_secs_f64() * 1000.0),
                        ),
                    ],
                    "every filesystem frozen",
                );
            }
            Err(p) => {
                audit::event(
                    Level::Error,
                    "freeze-failed",
                    "freeze",
                    &[("error", p.to_string())],
                    "freeze failed; everything frozen was thawed",
                );
                run.problems.push(p);
            }
        }
        if !run.froze {
            let report = take_window(&mut window);
            finish_window(&mut run, report);
            if !decide::snapshot_after_freeze_failure(settings, interrupted()) {
                run.interrupted = crate::freeze::signals::pending();
                return run;
            }
            report::say(
                "snapshot without freeze (crash-consistent), as continueBackupOnFailure allows",
            );
        }
    } else if !run.problems.is_empty()
        && !decide::snapshot_after_freeze_failure(settings, interrupted())
    {
        return run;
    }

    // The snapshot command, bounded by the window's deadline.
    let deadline = window
        .as_ref()
        .and_then(|w| w.deadline())
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    let started = Instant::now();
    let mut status = SnapshotStatus {
        command: cmd.to_vec(),
        frozen: run.froze,
        ..Default::default()
    };
    let mut child = match supervise::spawn(&spec, runner.policy.output_cap()) {
        Ok(c) => c,
        Err(e) => {
            let report = take_window(&mut window);
            finish_window(&mut run, report);
            run.problems.push(Problem::new(
                ErrorCode::SnapshotCommandFailed,
                format!("cannot start {}: {e}", cmd[0]),
            ));
            run.snapshot = Some(status);
            return run;
        }
    };
    if let Some(w) = &window {
        if let Some(wd) = w.watchdog_pid() {
            child.exclude(&[wd]);
        }
        w.shared().set_snapshot_pgid(child.pid());
    }
    status.pid = Some(child.pid());
    crate::freeze::signals::track_child_group(child.pid());
    #[cfg(feature = "fault-injection")]
    if std::env::var("QUIESCE_FAULT").as_deref() == Ok("panic-in-window") {
        // Let the command get going first, so the test sees it killed.
        std::thread::sleep(Duration::from_millis(300));
        panic!("injected fault: panic inside the freeze window");
    }
    let mut tick = |p: &supervise::Progress| {
        audit::event(
            Level::Info,
            "snapshot-progress",
            "snapshot",
            &[
                ("pid", p.pid.to_string()),
                ("elapsedMs", p.elapsed.as_millis().to_string()),
            ],
            "snapshot command still running",
        );
    };
    let outcome = child.wait(
        deadline,
        Duration::from_secs(1),
        Some(runner.signals.fd()),
        &mut tick,
    );
    let mut kill_now = false;
    match outcome {
        WaitOutcome::Exited(_) => {}
        WaitOutcome::DeadlinePassed => {
            // Thaw first: the command may be blocked on a frozen filesystem
            // and could not die before the thaw anyway.
            if let Some(w) = window.as_mut() {
                w.thaw_all();
            }
            run.problems.push(Problem::new(
                ErrorCode::FsFreezeTimeout,
                format!(
                    "the freeze window reached --max-freeze ({} s): filesystems thawed, then the snapshot command was killed",
                    max_freeze.as_secs()
                ),
            ));
            kill_now = true;
        }
        WaitOutcome::Interrupted => {
            if let Some(w) = window.as_mut() {
                w.thaw_all();
            }
            run.interrupted = crate::freeze::signals::pending().or(Some(libc::SIGTERM));
            kill_now = true;
        }
    }
    if let Some(w) = &window {
        if !w.watchdog_alive() {
            run.warnings
                .push("the watchdog died during the freeze window; only the runner's own deadline guarded it".into());
        }
        w.shared().set_snapshot_pgid(0);
    }
    if kill_now {
        let k = child.kill_tree(runner.policy.kill_grace());
        status.killed_pids = k.killed;
        if !k.survivors.is_empty() {
            run.warnings.push(format!(
                "snapshot command processes survived SIGKILL: {:?}",
                k.survivors
            ));
        }
    }
    let report = take_window(&mut window);
    crate::freeze::signals::track_child_group(0);
    let finished = child.finish();
    status.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    status.exit_code = finished.status.and_then(|s| s.code());
    status.signal = finished.status.and_then(|s| s.signal());
    status.stdout_tail = finished.stdout.text();
    status.stderr_tail = finished.stderr.text();
    finish_window(&mut run, report);
    run.snapshot_ok = !kill_now && status.exit_code == Some(0);
    if !kill_now && !run.snapshot_ok {
        run.problems.push(Problem::new(
            ErrorCode::SnapshotCommandFailed,
            match (status.exit_code, status.signal) {
                (Some(c), _) => format!("{} exited with status {c}", cmd[0]),
                (None, Some(s)) => format!("{} was killed by signal {s}", cmd[0]),
                _ => format!("{} ended without a status", cmd[0]),
            },
        ));
    }
    audit::event(
        if run.snapshot_ok {
            Level::Info
        } else {
            Level::Error
        },
        "snapshot-exit",
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
    run
}

/// Closes the window (thaw, dismiss the watchdog), then releases the held
/// records: the thaw always happens before anything is written.
fn take_window(window: &mut Option<FreezeWindow>) -> Option<WindowReport> {
    let report = window.take().map(|w| w.close());
    audit::release();
    report
}

fn finish_window(run: &mut SnapshotRun, report: Option<WindowReport>) {
    let Some(mut report) = report else { return };
    for m in &report.mounts {
        audit::event(
            Level::Info,
            "thaw",
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
    audit::event(
        Level::Info,
        "window",
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
    run.problems.append(&mut report.problems);
    run.window = Some(report);
}

/// `phases.freeze` of the status.
pub fn freeze_phase_json(report: &WindowReport) -> serde_json::Value {
    serde_json::to_value(report).expect("window report serialises")
}
