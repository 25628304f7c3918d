//! A freeze held across two hook calls (SPEC.md §10, where quiesce
//! freezes: Google's guest agent, AWS DLM). `pre` starts a holding run —
//! `quiesce freeze --mount … --max-freeze N -- quiesce __hold-wait RUNDIR`
//! with this run's options — and returns once it has frozen every
//! filesystem. The holding run is an ordinary `quiesce freeze`, so every
//! layer of the thaw guarantee (SPEC §6.4) is its: the deadline, the signal
//! handlers, the watchdog, `state.json` and recovery, the trail held until
//! the thaw. The command inside its window only waits for `post`'s release
//! mark in the run directory (tmpfs): nothing is written to a frozen
//! filesystem while the hold waits. `post` writes the mark, waits for the
//! holding run to thaw and exit, and reads its status document.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{ErrorCode, Problem};
use crate::freeze::state::RunDir;
use crate::job::context::Context;
use crate::job::hook::{
    HoldFrozen, HoldRecord, HOLD_FROZEN, HOLD_LOG, HOLD_RECORD, HOLD_RELEASE, HOLD_STATUS,
};
use crate::job::status::HoldStatus;
use crate::supervise::procfs;

/// In the run directory: locked by a `pre` while it makes a held freeze.
const HOLD_LOCK: &str = "hold.lock";

/// How often the waits of this module look again.
const TICK: Duration = Duration::from_millis(10);
/// Beyond `--max-freeze`: the holding run's start-up before its window,
/// and its thaw, reports and trail after it.
const SLACK: Duration = Duration::from_secs(30);

/// The hidden subcommand the holding run executes inside its window.
pub const WAIT_COMMAND: &str = "__hold-wait";

/// Whether the process `pid` that started at `start` still runs.
fn alive(pid: i32, start: u64) -> bool {
    procfs::read_stat(pid).is_some_and(|s| s.start == start && !s.is_zombie())
}

/// The held freeze recorded in the run directory, if its process lives.
fn live_hold(run_dir: &RunDir) -> Option<HoldRecord> {
    let rec: HoldRecord = run_dir.read_json(HOLD_RECORD).ok().flatten()?;
    alive(rec.pid, rec.start).then_some(rec)
}

/// A `pre` making a held freeze, from before its first script until its
/// hold is recorded: a concurrent `pre` is refused meanwhile (its `clear`
/// would remove this one's records).
pub struct HoldClaim {
    _lock: nix::fcntl::Flock<File>,
}

/// Before a `pre` runs anything: a held freeze already in place, or
/// another `pre` making one, refuses it (two holds never overlap).
pub fn claim(cx: &Context) -> Result<HoldClaim, Problem> {
    let busy = |why: String| Problem::new(ErrorCode::FreezeAlreadyHeld, why);
    let lock = cx
        .run_dir
        .ensure()
        .map_err(|e| e.to_string())
        .and_then(|()| output_file(&cx.run_dir, HOLD_LOCK).map_err(|e| e.to_string()))
        .map_err(|e| busy(format!("cannot lock {HOLD_LOCK} in the run directory: {e}")))?;
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| busy("another pre is making a held freeze right now".into()))?;
    refuse_second(cx)?;
    Ok(HoldClaim { _lock: lock })
}

/// A held freeze already in place refuses a `pre`.
fn refuse_second(cx: &Context) -> Result<(), Problem> {
    if let Some(rec) = live_hold(&cx.run_dir) {
        return Err(Problem::new(
            ErrorCode::FreezeAlreadyHeld,
            format!(
                "the {} pre of operation {} holds the filesystems frozen (holding process {}, at most {} s)",
                rec.agent, rec.operation_id, rec.pid, rec.max_freeze_secs
            ),
        ));
    }
    Ok(())
}

fn clear(run_dir: &RunDir) {
    for f in [
        HOLD_RECORD,
        HOLD_FROZEN,
        HOLD_RELEASE,
        HOLD_STATUS,
        HOLD_LOG,
    ] {
        run_dir.remove(f);
    }
}

/// A file of the run directory the holding run writes its output to.
fn output_file(run_dir: &RunDir, name: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(run_dir.file(name))
}

/// The holding run's command line: `quiesce OPTIONS --json freeze --mount
/// M… --max-freeze N -- quiesce __hold-wait RUNDIR`.
fn hold_command(cx: &Context, exe: &Path, mounts: &[PathBuf], max_freeze: u64) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(cx.options.to_args()).arg("--json").arg("freeze");
    for m in mounts {
        cmd.arg("--mount").arg(m);
    }
    cmd.arg("--max-freeze")
        .arg(max_freeze.to_string())
        .arg("--")
        .arg(exe)
        .arg(WAIT_COMMAND)
        .arg(&cx.run_dir.path);
    cmd
}

/// Starts the holding run and waits until it has frozen every filesystem
/// (its command runs) — or has failed to, then its errors are this run's
/// and nothing is frozen. The agent's own output pipes are not inherited:
/// an agent that waits for every holder of them (Google's) is not kept
/// waiting by the hold.
pub fn hold(
    cx: &Context,
    agent: &str,
    operation_id: &str,
    mounts: &[PathBuf],
    max_freeze: u64,
) -> Result<HoldRecord, Problem> {
    let run_dir = &cx.run_dir;
    let setup = |what: &str, e: &dyn std::fmt::Display| {
        Problem::new(
            ErrorCode::FsFreezeFailed,
            format!("cannot start the held freeze: {what}: {e}"),
        )
    };
    run_dir.ensure().map_err(|e| setup("run directory", &e))?;
    clear(run_dir);
    let exe = std::env::current_exe().map_err(|e| setup("quiesce's own path", &e))?;
    let out = output_file(run_dir, HOLD_STATUS).map_err(|e| setup(HOLD_STATUS, &e))?;
    let log = output_file(run_dir, HOLD_LOG).map_err(|e| setup(HOLD_LOG, &e))?;
    let mut child = hold_command(cx, &exe, mounts, max_freeze)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| setup("spawn", &e))?;
    let pid = child.id() as i32;
    // Out of the agent's cgroup: the agent's unit stopping must not take
    // the hold with it (its watchdog would thaw, but the snapshot fails).
    let _ = crate::supervise::move_to_root_cgroup(pid);
    let me = std::process::id() as i32;
    let mut rec = HoldRecord {
        agent: agent.to_string(),
        pid,
        start: procfs::read_stat(pid).map_or(0, |s| s.start),
        operation_id: operation_id.to_string(),
        max_freeze_secs: max_freeze,
        started_unix: crate::job::pending::now_unix(),
        pre_pid: me,
        pre_start: procfs::read_stat(me).map_or(0, |s| s.start),
        handed_over: false,
    };
    if let Err(e) = run_dir.write_json(HOLD_RECORD, &rec) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(setup(HOLD_RECORD, &e));
    }
    if let Err(p) = wait_frozen(run_dir, &mut child, Duration::from_secs(max_freeze) + SLACK) {
        clear(run_dir);
        return Err(p);
    }
    if crate::fault::active("hold-handover-delay") {
        // Widens the moment between the freeze and the hand-over, where an
        // agent's timeout may kill this call.
        std::thread::sleep(Duration::from_secs(3));
    }
    // The run directory is a tmpfs: written while frozen, as the window's
    // own records are.
    rec.handed_over = true;
    if let Err(e) = run_dir.write_json_unsynced(HOLD_RECORD, &rec) {
        // SIGTERM: its handler thaws first (SPEC §6.4).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
        clear(run_dir);
        return Err(setup("hand-over", &e));
    }
    Ok(rec)
}

/// Waits for the holding run's command to say the window is frozen, or for
/// the run to end (its freeze failed: its own errors say why).
fn wait_frozen(run_dir: &RunDir, child: &mut Child, limit: Duration) -> Result<(), Problem> {
    let until = Instant::now() + limit;
    loop {
        if run_dir.has(HOLD_FROZEN) {
            return Ok(());
        }
        // Err: someone else reaped it (the runner is a subreaper that
        // reaps orphans): it has ended all the same.
        if !matches!(child.try_wait(), Ok(None)) {
            let outcome = read_outcome(run_dir);
            let why = outcome
                .map(|o| o.messages.join("; "))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the holding run ended before freezing".into());
            return Err(Problem::new(ErrorCode::FsFreezeFailed, why));
        }
        if Instant::now() >= until {
            // SIGTERM: its handler thaws first (SPEC §6.4).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            return Err(Problem::new(
                ErrorCode::FsFreezeTimeout,
                "the holding run did not freeze within --max-freeze; it was stopped (it thaws first)",
            ));
        }
        std::thread::sleep(TICK);
    }
}

/// The holding run's status document, as much of it as the hook reports.
#[derive(Debug, Default)]
struct Outcome {
    result: Option<String>,
    errors: Vec<String>,
    messages: Vec<String>,
    frozen_ms: Option<f64>,
}

#[derive(Deserialize)]
struct StatusDoc {
    result: String,
    #[serde(default)]
    errors: Vec<ErrorDoc>,
    #[serde(default)]
    phases: PhasesDoc,
}

#[derive(Deserialize)]
struct ErrorDoc {
    name: String,
    message: String,
}

#[derive(Deserialize, Default)]
struct PhasesDoc {
    freeze: Option<FreezeDoc>,
}

#[derive(Deserialize)]
struct FreezeDoc {
    #[serde(default)]
    mounts: Vec<MountDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MountDoc {
    frozen_ms: f64,
}

fn read_outcome(run_dir: &RunDir) -> Option<Outcome> {
    let bytes = std::fs::read(run_dir.file(HOLD_STATUS)).ok()?;
    let doc: StatusDoc = serde_json::from_slice(&bytes).ok()?;
    let frozen_ms = doc
        .phases
        .freeze
        .map(|f| f.mounts.iter().map(|m| m.frozen_ms).fold(0.0, f64::max));
    Some(Outcome {
        result: Some(doc.result),
        errors: doc.errors.iter().map(|e| e.name.clone()).collect(),
        messages: doc
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.name, e.message))
            .collect(),
        frozen_ms,
    })
}

/// `post`: ends the held freeze and collects the holding run's report.
/// The hold's status comes back whatever happened; a hold that was not
/// there, had died, or had reached its deadline is a problem (the
/// post-scripts still run: the caller runs them either way).
pub fn release(cx: &Context) -> (Option<HoldStatus>, Option<Problem>) {
    let run_dir = &cx.run_dir;
    let Some(rec) = run_dir.read_json::<HoldRecord>(HOLD_RECORD).ok().flatten() else {
        return (
            None,
            Some(Problem::new(
                ErrorCode::NoHeldFreeze,
                "no held freeze is recorded: post came without a pre that froze",
            )),
        );
    };
    let was_alive = alive(rec.pid, rec.start);
    if was_alive {
        let _ = run_dir.write_json_unsynced(HOLD_RELEASE, &serde_json::json!({}));
        let until = Instant::now() + Duration::from_secs(rec.max_freeze_secs) + SLACK;
        while alive(rec.pid, rec.start) && Instant::now() < until {
            std::thread::sleep(TICK);
        }
    }
    let outcome = read_outcome(run_dir);
    clear(run_dir);
    let mut status = HoldStatus {
        pid: rec.pid,
        ..HoldStatus::default()
    };
    let problem = judge(&rec, was_alive, outcome.as_ref());
    if let Some(o) = outcome {
        status.result = o.result;
        status.errors = o.errors;
        status.frozen_ms = o.frozen_ms;
    }
    (Some(status), problem)
}

/// What the holding run's end means for `post`.
fn judge(rec: &HoldRecord, was_alive: bool, outcome: Option<&Outcome>) -> Option<Problem> {
    let Some(o) = outcome else {
        return Some(Problem::new(
            ErrorCode::NoHeldFreeze,
            format!(
                "the holding process {} of operation {} died without a report; its watchdog thawed the filesystems",
                rec.pid, rec.operation_id
            ),
        ));
    };
    if o.result.as_deref() == Some("success") {
        return None;
    }
    if o.errors
        .iter()
        .any(|e| e == ErrorCode::FsFreezeTimeout.name())
    {
        let when = if was_alive {
            "as post came"
        } else {
            "before post came"
        };
        return Some(Problem::new(
            ErrorCode::HeldFreezeExpired,
            format!(
                "the held freeze of operation {} reached --max-freeze ({} s) {when} and was thawed",
                rec.operation_id, rec.max_freeze_secs
            ),
        ));
    }
    Some(Problem::new(
        ErrorCode::FsFreezeFailed,
        format!("the held freeze failed: {}", o.messages.join("; ")),
    ))
}

/// Inside the held window (`quiesce __hold-wait RUNDIR`): says the window
/// is frozen, then waits for `post`'s release mark. Writes only in the run
/// directory (tmpfs). Exits 0 on the release; non-zero when the holding
/// run is gone (its watchdog thaws) or the mark cannot be written.
pub fn wait_in_window(run_dir: &Path) -> u8 {
    let run_dir = RunDir::new(run_dir);
    let pid = std::process::id() as i32;
    let me = HoldFrozen {
        pid,
        start: procfs::read_stat(pid).map_or(0, |s| s.start),
    };
    if run_dir.write_json_unsynced(HOLD_FROZEN, &me).is_err() {
        return 2;
    }
    let parent = nix::unistd::getppid();
    for tick in 0u64.. {
        if run_dir.has(HOLD_RELEASE) {
            return 0;
        }
        if nix::unistd::getppid() != parent {
            return 2;
        }
        if tick % 10 == 0 && abandoned(&run_dir) {
            eprintln!("the pre call that made this hold died before handing it over: thawing");
            return 3;
        }
        std::thread::sleep(TICK);
    }
    2
}

/// The `pre` call that made the hold is gone without handing it over.
fn abandoned(run_dir: &RunDir) -> bool {
    match run_dir.read_json::<HoldRecord>(HOLD_RECORD) {
        Ok(Some(rec)) => !rec.handed_over && !alive(rec.pre_pid, rec.pre_start),
        _ => false,
    }
}
