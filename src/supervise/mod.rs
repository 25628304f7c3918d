//! Supervised children (SPEC §7): the pre/post scripts and the snapshot
//! command all run under this layer.
//!
//! Layers, bottom up:
//! - [`SpawnSpec`] / [`spawn`]: everything (argv, environment, descriptors,
//!   cgroup, sandbox hook, oom_score_adj) is built before `fork`; the child
//!   only runs async-signal-safe syscalls: `PR_SET_PDEATHSIG`, cgroup join,
//!   `setsid`, stdio, close-on-exec for everything else, the sandbox hook,
//!   the (device, inode) re-check of a script path ([`IdentityCheck`]), then
//!   `execve` by path ([`Exec::Path`], [`Exec::Interpreter`] for a pinned
//!   script's sealed copy at `/dev/fd/3`) or `execveat` of a binary's
//!   descriptor ([`Exec::Fd`]). A failure before exec comes back as a
//!   [`SpawnError`] naming the step and errno, with the child reaped; a
//!   child that does not reach its exec within
//!   [`SpawnSpec::startup_timeout`] is killed. The run sentinel
//!   ([`sentinel`], one process for the run, started before its first
//!   child) ends the tree if the runner dies before the attempt is over.
//! - [`Supervised`]: the handle. [`Supervised::wait`] is one `ppoll` over the
//!   child's pidfd, its stdout/stderr pipes (drained into bounded
//!   [`Captured`] buffers) and the runner's signal pipe; exit is noticed at
//!   once. [`Supervised::kill_tree`] ends the whole tree when *the caller*
//!   says so (the freeze code thaws first, SPEC §6.4);
//!   [`Supervised::leftovers`] lists what the script left running.
//! - [`run`]: spawn + wait + kill on deadline or interrupt, for the simple
//!   case (pre/post scripts).
//! - [`terminate_leftovers`]: ends recorded holders, re-identified by
//!   (pid, start time), possibly from another invocation.
//!
//! Finding "the tree": the runner is a child subreaper
//! ([`become_subreaper`]), so orphans re-parent to it instead of to init. A
//! process belongs to a tree when it is in the tree's cgroup, in the main
//! child's session or process group, on a PPid chain below the main child,
//! was seen as a member earlier, or — only without a cgroup and when no
//! other handle is live in the process — is an orphan re-parented to the
//! runner after the spawn that was not its child before. Limitation: without
//! a cgroup, an orphan that double-forked away while another handle was live
//! (or from a previous tree's holder) cannot be attributed and is not
//! claimed; with a cgroup (the default where cgroup v2 is mounted) there is
//! no such gap.
//!
//! Signals are sent only through pidfds verified against the start time the
//! scan saw; zombies are reaped only by pidfd, never with `waitpid(-1)`.
//!
//! Requirements on the rest of the runner: never `waitpid(-1)` and never set
//! SIGCHLD to `SIG_IGN` (either would reap a script behind its handle and
//! lose its exit status — reported as [`ExitStatus::Unknown`]); use
//! [`reap_orphans`] for stray zombies instead.

mod capture;
mod cgroup;
mod live;
pub mod procfs;
pub mod sentinel;
mod spawn;
mod supervised;
mod sys;
mod tree;

pub use capture::{Captured, DEFAULT_OUTPUT_CAP};
pub use cgroup::{
    forking, move_to_root as move_to_root_cgroup, root_join_for_child, root_procs_to_join,
    sweep_stale as sweep_stale_cgroups, CgroupRequest, CgroupStatus, RootJoin,
};
pub use spawn::{
    record_oom_score_adj, spawn, Exec, IdentityCheck, PreExecHook, SpawnError, SpawnSpec,
    DEFAULT_STARTUP_TIMEOUT, EXEC_FD, EXEC_FD_PATH,
};
pub use supervised::{ExitStatus, Finished, Progress, Supervised, WaitOutcome};
pub(crate) use sys::{fork_into_cgroup, fork_signals_blocked, pollfd};
pub use tree::{
    end_cgroup_members, kill_if_same, reap_orphans, terminate_leftovers, KillReport, Leftover,
};

use nix::errno::Errno;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// Default interval between progress ticks (the extension's
/// `ScriptsExecutionPollTimeSeconds` default).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(3);
/// Default SIGTERM → SIGKILL grace period (SPEC §7; the policy may change it).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The runner could not become a child subreaper.
#[derive(Debug, thiserror::Error)]
#[error("cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER): {0}")]
pub struct SubreaperError(pub Errno);

/// Makes the runner a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned
/// descendants of its children re-parent to it, so a script that
/// double-forks or `setsid`s away stays findable. Call once at start, before
/// any freeze window: it also records the runner's `oom_score_adj` as the
/// value children get back ([`record_oom_score_adj`]).
pub fn become_subreaper() -> Result<(), SubreaperError> {
    record_oom_score_adj();
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(SubreaperError(Errno::last()));
    }
    Ok(())
}

/// Options of [`run`].
pub struct RunOptions<'a> {
    /// When the attempt is out of time (the phase deadline: all attempts of a
    /// phase share one timeout).
    pub deadline: Instant,
    /// Progress tick interval (`ScriptsExecutionPollTimeSeconds`).
    pub poll_interval: Duration,
    /// SIGTERM → SIGKILL grace period.
    pub grace: Duration,
    /// Bytes kept at each end of stdout and of stderr.
    pub output_cap: usize,
    /// The runner's signal self-pipe: readable = stop.
    pub interrupt_fd: Option<BorrowedFd<'a>>,
    /// Called once per `poll_interval` while the child runs.
    pub on_tick: Option<&'a mut dyn FnMut(&Progress)>,
    /// Called once right after the exec succeeded, with the child's pid
    /// (it is unreaped until the attempt ends, so `/proc/PID` is its own):
    /// the capability audit reads what the script really holds here.
    pub on_spawn: Option<&'a mut dyn FnMut(i32)>,
    /// Called right after the main child was reaped, with its status, before
    /// anything else (leftover scan, output drain): what must be recorded
    /// the moment a script is over is recorded before the runner can die
    /// with it undone.
    pub on_exit: Option<&'a mut dyn FnMut(ExitStatus)>,
}

impl<'a> RunOptions<'a> {
    /// Defaults for everything but the deadline.
    pub fn new(deadline: Instant) -> Self {
        RunOptions {
            deadline,
            poll_interval: DEFAULT_POLL_INTERVAL,
            grace: DEFAULT_GRACE,
            output_cap: DEFAULT_OUTPUT_CAP,
            interrupt_fd: None,
            on_tick: None,
            on_spawn: None,
            on_exit: None,
        }
    }
}

/// One attempt of a script, as the audit trail and the status JSON need it.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub pid: i32,
    /// `None` when killed by a signal (or, rarely, never seen to exit).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The deadline passed and the tree was killed.
    pub timed_out: bool,
    /// A runner signal arrived and the tree was killed.
    pub interrupted: bool,
    pub duration: Duration,
    /// Processes of the tree that were killed.
    pub killed_pids: Vec<i32>,
    /// Processes of the tree still running: holders after a normal exit, or
    /// processes that survived SIGKILL after a kill.
    pub left_running: Vec<Leftover>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub cgroup: CgroupStatus,
}

impl AttemptReport {
    pub fn status(&self) -> Option<ExitStatus> {
        match (self.exit_code, self.signal) {
            (Some(c), _) => Some(ExitStatus::Exited(c)),
            (None, Some(s)) => Some(ExitStatus::Signaled {
                signal: s,
                core_dumped: false,
            }),
            _ => None,
        }
    }
}

/// Spawns `spec`, waits, and on deadline or interrupt kills the whole tree
/// at once (no freeze is active around pre/post scripts, so there is nothing
/// to thaw first). Leftovers of a normal exit are listed, not killed.
pub fn run(spec: &SpawnSpec, opts: RunOptions<'_>) -> Result<AttemptReport, SpawnError> {
    let mut child = spawn(spec, opts.output_cap)?;
    if let Some(f) = opts.on_spawn {
        f(child.pid());
    }
    let mut no_tick = |_: &Progress| {};
    let on_tick: &mut dyn FnMut(&Progress) = match opts.on_tick {
        Some(f) => f,
        None => &mut no_tick,
    };
    let outcome = child.wait(
        opts.deadline,
        opts.poll_interval,
        opts.interrupt_fd,
        on_tick,
    );
    if let (WaitOutcome::Exited(status), Some(f)) = (outcome, opts.on_exit) {
        f(status);
    }
    let (timed_out, interrupted) = (
        outcome == WaitOutcome::DeadlinePassed,
        outcome == WaitOutcome::Interrupted,
    );
    let mut killed_pids = Vec::new();
    if timed_out || interrupted {
        killed_pids = child.kill_tree(opts.grace).killed;
    }
    // After a kill this lists only what survived SIGKILL.
    let left_running = child.leftovers();
    let done = child.finish();
    Ok(AttemptReport {
        pid: done.pid,
        exit_code: done.status.and_then(ExitStatus::code),
        signal: done.status.and_then(ExitStatus::signal),
        timed_out,
        interrupted,
        duration: done.duration,
        killed_pids,
        left_running,
        stdout: done.stdout,
        stderr: done.stderr,
        cgroup: done.cgroup,
    })
}
