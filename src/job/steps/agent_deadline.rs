//! The deadline an agent that freezes by itself lacks (SPEC.md §10):
//! qemu-guest-agent waits for its hook without a timeout and keeps the
//! filesystems frozen until the host sends `guest-fsfreeze-thaw`; a host
//! that never does leaves the guest frozen. quiesce never freezes for such
//! an agent; a `freeze` hook that succeeds starts a watcher that, if the
//! agent's `thaw` hook has not come by `--max-freeze`, thaws what is
//! frozen then.
//!
//! Which filesystems the agent froze: the kernel does not say who froze a
//! filesystem, and probing would change it. The watcher's candidates are
//! the filesystems quiesce would freeze (the `--mount` list the wrapper
//! passes, else discovery, SPEC §6.1), their devices recorded at the
//! `freeze` call; at the deadline each gets one `FITHAW`: it succeeds only
//! on a frozen filesystem (`EINVAL` otherwise, nothing changed). Between
//! the agent's `freeze` and `thaw` the agent's freeze is the one expected
//! there; a live window of quiesce's own (its `state.json`) is left to its
//! own deadline, and a mount point now holding another device is left
//! alone.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use log::Level;

use crate::freeze::state::{self, RunDir, ThawOutcome};
use crate::job::context::Context;
use crate::job::hook::{DeadlineRecord, DeadlineReport, DEADLINE_RECORD, DEADLINE_REPORT};
use crate::job::steps::snapshot_window::mount_plan;
use crate::supervise::procfs;
use crate::trail::{self, Record};

/// How long the watcher waits for the record its `freeze` call writes
/// after starting it.
const RECORD_GRACE: Duration = Duration::from_secs(10);

/// The hidden subcommand the watcher runs as.
pub const WATCH_COMMAND: &str = "__agent-deadline";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the watcher of the agent's freeze that follows this `freeze`
/// hook: `quiesce OPTIONS __agent-deadline …`, in its own process group and
/// out of the agent's cgroup, so it outlives the call. A watcher of an
/// earlier `freeze` is ended first (its agent's freeze is over: the agent
/// calls one freeze at a time).
pub fn start(
    cx: &Context,
    agent: &str,
    operation_id: &str,
    mounts: &[PathBuf],
    max_freeze: u64,
) -> Result<DeadlineRecord, String> {
    end(cx);
    cx.run_dir.ensure().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("quiesce's own path: {e}"))?;
    let deadline_unix_ms = now_ms() + max_freeze * 1000;
    let mut cmd = Command::new(&exe);
    cmd.args(cx.options.to_args())
        .arg(WATCH_COMMAND)
        .arg("--agent")
        .arg(agent)
        .arg("--operation-id")
        .arg(operation_id)
        .arg("--deadline-ms")
        .arg(deadline_unix_ms.to_string());
    for m in mounts {
        cmd.arg("--mount").arg(m);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let pid = child.id() as i32;
    let _ = crate::supervise::move_to_root_cgroup(pid);
    let rec = DeadlineRecord {
        agent: agent.to_string(),
        pid,
        start: procfs::read_stat(pid).map_or(0, |s| s.start),
        operation_id: operation_id.to_string(),
        deadline_unix_ms,
        mounts: mounts.to_vec(),
    };
    if let Err(e) = cx.run_dir.write_json_unsynced(DEADLINE_RECORD, &rec) {
        crate::supervise::kill_if_same(rec.pid, rec.start);
        return Err(e.to_string());
    }
    // Not reaped here: it outlives this call; init (or the agent, as a
    // subreaper) reaps it.
    std::mem::forget(child);
    Ok(rec)
}

/// The agent's `thaw` (or `freezeFail`) came: the watcher is ended, and
/// what it did if the deadline came first is returned.
pub fn end(cx: &Context) -> Option<DeadlineReport> {
    if let Ok(Some(rec)) = cx.run_dir.read_json::<DeadlineRecord>(DEADLINE_RECORD) {
        crate::supervise::kill_if_same(rec.pid, rec.start);
        cx.run_dir.remove(DEADLINE_RECORD);
    }
    let report = cx
        .run_dir
        .read_json::<DeadlineReport>(DEADLINE_REPORT)
        .ok()
        .flatten();
    cx.run_dir.remove(DEADLINE_REPORT);
    report
}

/// What the watcher is asked to watch.
pub struct Watch {
    pub agent: String,
    pub operation_id: String,
    pub deadline_unix_ms: u64,
    pub mounts: Vec<PathBuf>,
}

/// The watcher itself (`quiesce __agent-deadline`): waits for the
/// deadline, unless the agent's `thaw` ends it first (or its record names
/// another watcher); then thaws what is still frozen of its candidates.
pub fn watch(cx: &Context, w: &Watch) -> u8 {
    let candidates: Vec<(PathBuf, String)> = match mount_plan(cx, &w.mounts) {
        Ok(plan) => plan
            .freeze_order()
            .iter()
            .map(|e| (e.path.clone(), e.device.clone()))
            .collect(),
        Err(_) => w
            .mounts
            .iter()
            .filter_map(|m| {
                let md = std::fs::metadata(m).ok()?;
                Some((m.clone(), state::dev_string(md.dev())))
            })
            .collect(),
    };
    // The `freeze` call writes the record once this process is started:
    // until it is seen, its absence is not the end of the watch.
    let me = std::process::id() as i32;
    let started = std::time::Instant::now();
    let mut seen = false;
    let mut still_mine = || match cx.run_dir.read_json::<DeadlineRecord>(DEADLINE_RECORD) {
        Ok(Some(r)) => {
            seen = true;
            r.pid == me
        }
        _ => !seen && started.elapsed() < RECORD_GRACE,
    };
    loop {
        let now = now_ms();
        if now >= w.deadline_unix_ms {
            break;
        }
        if !still_mine() {
            return 0;
        }
        std::thread::sleep(Duration::from_millis((w.deadline_unix_ms - now).min(100)));
    }
    if !still_mine() {
        return 0;
    }
    let report = thaw_left_frozen(&cx.run_dir, w, &candidates);
    let _ = cx.run_dir.write_json_unsynced(DEADLINE_REPORT, &report);
    cx.run_dir.remove(DEADLINE_RECORD);
    say_in_trail(cx, w, &report);
    0
}

/// One `FITHAW` per candidate not in a live window of quiesce's own.
fn thaw_left_frozen(
    run_dir: &RunDir,
    w: &Watch,
    candidates: &[(PathBuf, String)],
) -> DeadlineReport {
    let own: Vec<PathBuf> = match run_dir.read_state() {
        Ok(Some(rec)) if rec.runner_alive() => rec.mounts.into_iter().map(|m| m.path).collect(),
        _ => Vec::new(),
    };
    let mut report = DeadlineReport {
        agent: w.agent.clone(),
        operation_id: w.operation_id.clone(),
        ..DeadlineReport::default()
    };
    for (path, device) in candidates {
        if own.contains(path) {
            report.left_to_quiesce.push(path.clone());
            continue;
        }
        let r = state::thaw_path(path, Some(device));
        match r.outcome {
            ThawOutcome::Thawed => report.thawed.push(path.clone()),
            ThawOutcome::NotFrozen => {}
            other => report.failed.push(format!("{}: {other:?}", path.display())),
        }
    }
    report
}

fn say_in_trail(cx: &Context, w: &Watch, report: &DeadlineReport) {
    if report.thawed.is_empty() && report.failed.is_empty() {
        return;
    }
    let _ = trail::init(cx.trail_config(&w.operation_id));
    let list = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    trail::event(
        Level::Error,
        Record::Log,
        "hook",
        &[
            ("agent", w.agent.clone()),
            ("thawed", list(&report.thawed)),
            ("failed", report.failed.join(";")),
        ],
        &format!(
            "the {} agent's thaw had not come by --max-freeze: quiesce thawed what it had left frozen",
            w.agent
        ),
    );
    let _ = trail::finish();
}
