//! The child side, between `fork` and `exec`: only async-signal-safe
//! syscalls on data the parent prepared ([`ChildPlan`]), and every failure
//! reported through the close-on-exec start-up pipe as a fixed-size record
//! ([`ChildStep`], [`Report`]).

use super::spec::{SpawnError, EXEC_FD};
use crate::supervise::sys;
use nix::errno::Errno;
use std::os::fd::RawFd;

/// Steps of the child between fork and exec, as reported through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum ChildStep {
    SignalMask = 1,
    Setsid = 2,
    Stdio = 3,
    ExecFd = 4,
    Chdir = 5,
    CloseFds = 6,
    PreExec = 7,
    Exec = 8,
    ParentDeath = 9,
    /// The script path no longer names the checked (device, inode): the
    /// record carries the errno of `fstatat` (0 when it succeeded) and the
    /// device and inode found.
    Identity = 10,
    /// Non-fatal: the child could not join the cgroup v2 directory.
    JoinCgroupV2 = 100,
    /// Non-fatal: the child could not join the v1 pids cgroup.
    JoinCgroupV1 = 101,
    /// Non-fatal: the child could not restore its `oom_score_adj`.
    OomScoreAdj = 102,
}

impl ChildStep {
    pub(super) fn from_u32(v: u32) -> Option<Self> {
        use ChildStep::*;
        [
            SignalMask,
            Setsid,
            Stdio,
            ExecFd,
            Chdir,
            CloseFds,
            PreExec,
            Exec,
            ParentDeath,
            Identity,
            JoinCgroupV2,
            JoinCgroupV1,
            OomScoreAdj,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    pub(super) fn fatal(self) -> bool {
        (self as u32) < 100
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ChildStep::SignalMask => "unblocking signals",
            ChildStep::Setsid => "setsid",
            ChildStep::Stdio => "redirecting stdin/stdout/stderr",
            ChildStep::ExecFd => "placing the script's descriptor",
            ChildStep::Chdir => "chdir",
            ChildStep::CloseFds => {
                "closing inherited descriptors (close_range, Linux 5.11 or later)"
            }
            ChildStep::PreExec => "the sandbox hook",
            ChildStep::Exec => "exec",
            ChildStep::ParentDeath => "PR_SET_PDEATHSIG",
            ChildStep::Identity => "re-checking the script path",
            ChildStep::JoinCgroupV2 => "joining the cgroup",
            ChildStep::JoinCgroupV1 => "joining the pids cgroup",
            ChildStep::OomScoreAdj => "restoring oom_score_adj",
        }
    }
}

/// One report record: step, errno, and two values (the device and inode an
/// identity re-check found), native endian, 24 bytes (well under PIPE_BUF,
/// so each write is atomic).
pub(super) const RECORD: usize = 24;

/// One decoded report record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Report {
    pub(super) step: ChildStep,
    pub(super) errno: Errno,
    pub(super) values: [u64; 2],
}

/// How the child executes its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExecMode {
    /// `execve(path)`.
    Path,
    /// `execveat(exec_fd, "", AT_EMPTY_PATH)`, the descriptor close-on-exec.
    Fd,
    /// `execve(path)` with `exec_fd` placed at [`EXEC_FD`], kept open.
    Interpreter,
}

/// Everything the child needs, as raw values and pointers into data owned by
/// the parent's stack frame (which the child's copy of memory still holds).
pub(super) struct ChildPlan<'a> {
    pub(super) path: *const libc::c_char,
    pub(super) exec_fd: RawFd,
    pub(super) mode: ExecMode,
    /// Path, device and inode to re-check right before the exec.
    pub(super) identity: Option<(*const libc::c_char, u64, u64)>,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) cwd: *const libc::c_char,
    pub(super) stdin: RawFd,
    pub(super) stdout: RawFd,
    pub(super) stderr: RawFd,
    pub(super) report: RawFd,
    pub(super) join: [RawFd; 2],
    /// The cgroup v2 directory the child is cloned into (`-1`: none); when
    /// that worked, `join[0]` is not written.
    pub(super) cgroup_dir: RawFd,
    /// The runner's pid: after PR_SET_PDEATHSIG the child checks it still
    /// has this parent (else the runner died before the prctl took effect).
    pub(super) runner: i32,
    /// What the child writes to `/proc/self/oom_score_adj` (the runner's
    /// value from before any freeze window lowered it).
    pub(super) oom_score_adj: &'a [u8],
    pub(super) hook: Option<&'a (dyn Fn() -> Result<(), Errno> + Send + Sync)>,
    pub(super) default_action: libc::sigaction,
    pub(super) empty_mask: libc::sigset_t,
}

pub(super) fn child_report_values(fd: RawFd, step: ChildStep, errno: i32, values: [u64; 2]) {
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[4..8].copy_from_slice(&errno.to_ne_bytes());
    rec[8..16].copy_from_slice(&values[0].to_ne_bytes());
    rec[16..].copy_from_slice(&values[1].to_ne_bytes());
    // SAFETY: `rec` is a valid RECORD-byte buffer for the duration of the
    // call; write(2) is async-signal-safe. A failed report only loses detail.
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD) };
}

pub(super) fn child_report(fd: RawFd, step: ChildStep, errno: i32) {
    child_report_values(fd, step, errno, [0, 0]);
}

fn child_fail(fd: RawFd, step: ChildStep) -> ! {
    child_report(fd, step, Errno::last_raw());
    child_exit()
}

fn child_exit() -> ! {
    // SAFETY: _exit(2) is async-signal-safe and never returns; it skips
    // atexit handlers and stdio flushing that belong to the parent.
    unsafe { libc::_exit(127) }
}

/// Signals back to default and unblocked, then the parent-death signal.
///
/// # Safety
/// Only in the child of `fork()` (see [`child_main`]).
unsafe fn child_signals(plan: &ChildPlan<'_>) {
    let r = plan.report;
    // Default dispositions for every signal: the runner's handlers (the thaw
    // handler!) must never run in the child, and ignored signals (SIGPIPE in
    // a Rust program) would stay ignored across exec. All signals are still
    // blocked here (the parent blocked them around fork), so no handler can
    // run before this loop is done.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction(2) is async-signal-safe; `default_action` is a
        // valid sigaction prepared before the fork. Errors (glibc-reserved
        // real-time signals) are harmless: exec resets handled signals.
        unsafe { libc::sigaction(sig, &plan.default_action, std::ptr::null_mut()) };
    }
    // SAFETY: sigprocmask(2) is async-signal-safe; `empty_mask` is a valid,
    // initialised sigset_t.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_mask, std::ptr::null_mut()) } != 0
    {
        child_fail(r, ChildStep::SignalMask);
    }
    // The child must not outlive a runner that dies (SIGKILL, OOM) while it
    // runs: SIGKILL when the forking thread exits. It survives the exec of a
    // script (only set-id or file-capability execs clear it). If the runner
    // died before the prctl, the child was already re-parented: stop here.
    // SAFETY: prctl(2) with integer arguments; getppid(2) takes none.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        child_fail(r, ChildStep::ParentDeath);
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != plan.runner {
        child_exit();
    }
}

/// Descriptors: stdio, the script's descriptor, cwd, close-on-exec for the
/// rest.
///
/// # Safety
/// Only in the child of `fork()` (see [`child_main`]).
unsafe fn child_descriptors(plan: &ChildPlan<'_>) {
    let r = plan.report;
    // stdin /dev/null, stdout/stderr to our pipes. All sources are ≥ 4, so
    // each dup2 makes a real copy, which clears close-on-exec on it.
    for (src, dst) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        // SAFETY: dup2(2) is async-signal-safe; both are plain integers.
        if unsafe { libc::dup2(src, dst) } < 0 {
            child_fail(r, ChildStep::Stdio);
        }
    }
    // A pinned script's sealed copy at its fixed number, without
    // close-on-exec: its interpreter opens /dev/fd/3 after the exec.
    let keep = plan.mode == ExecMode::Interpreter;
    // SAFETY: as above.
    if keep && unsafe { libc::dup2(plan.exec_fd, EXEC_FD) } < 0 {
        child_fail(r, ChildStep::ExecFd);
    }
    // SAFETY: chdir(2) is async-signal-safe; `cwd` points to a NUL-terminated
    // string owned by the spec, alive in the child's copy of memory.
    if unsafe { libc::chdir(plan.cwd) } != 0 {
        child_fail(r, ChildStep::Chdir);
    }
    // Every other descriptor: marked close-on-exec rather than closed, so
    // the report pipe (and a binary's own descriptor, for execveat) keeps
    // working until the exec itself closes it. Nothing quiesce opened is
    // inherited beyond stdin, stdout and stderr (and a pinned script's
    // sealed copy at 3).
    let first = if keep { EXEC_FD + 1 } else { EXEC_FD } as libc::c_uint;
    // SAFETY: close_range(2) takes integers only; CLOSE_RANGE_CLOEXEC makes
    // it mark descriptors rather than close them.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        child_fail(r, ChildStep::CloseFds);
    }
}

/// Back to the runner's own `oom_score_adj` (the freeze window lowers the
/// runner's to -1000; its children must stay ordinary OOM candidates).
///
/// # Safety
/// Only in the child of `fork()` (see [`child_main`]).
unsafe fn child_oom_score_adj(plan: &ChildPlan<'_>) {
    // SAFETY: open(2)/write(2)/close(2) are async-signal-safe; the path is a
    // static NUL-terminated string and the value a slice built before fork.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        let n = plan.oom_score_adj.len();
        if fd < 0 || libc::write(fd, plan.oom_score_adj.as_ptr().cast(), n) != n as isize {
            child_report(plan.report, ChildStep::OomScoreAdj, Errno::last_raw());
        }
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

/// The re-check of an unpinned script's path, the last step before its
/// `execve`: the path must still name the checked (device, inode) and not
/// be a symbolic link. On a mismatch the child reports and exits.
///
/// # Safety
/// Only in the child of `fork()` (see [`child_main`]).
unsafe fn child_identity(plan: &ChildPlan<'_>) {
    let Some((path, dev, ino)) = plan.identity else {
        return;
    };
    // SAFETY: `libc::stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat(2) is async-signal-safe; `path` is NUL-terminated and
    // owned by the spec, `st` a valid out-pointer on this stack.
    let r = unsafe { libc::fstatat(libc::AT_FDCWD, path, &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        child_fail(plan.report, ChildStep::Identity);
    }
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    if is_link || st.st_dev != dev || st.st_ino != ino {
        let errno = if is_link { libc::ELOOP } else { 0 };
        child_report_values(
            plan.report,
            ChildStep::Identity,
            errno,
            [st.st_dev, st.st_ino],
        );
        child_exit();
    }
}

/// The child between fork and exec.
///
/// INVARIANT: no allocation, no locks, no panics between fork and exec —
/// the parent may be multi-threaded and another thread may have held the
/// allocator lock at the fork. Only async-signal-safe syscalls on the
/// prebuilt `plan`.
///
/// # Safety
/// Must be called only in the child of `fork()`, with `plan` built from
/// data that is still alive (it is: the child has a copy of the parent's
/// memory as of the fork).
unsafe fn child_main(plan: &ChildPlan<'_>, in_cgroup: bool) -> ! {
    let r = plan.report;
    // 1. Signals, and death with the runner.
    // SAFETY: we are the child of fork(), as child_signals requires.
    unsafe { child_signals(plan) };
    // 2. Join the cgroup(s) first, so nothing the child becomes can start
    // outside: the v2 one unless it was cloned into it, the v1 pids one by
    // its `tasks` file (writing "0" there moves the writer's thread — the
    // only one — without the tree-wide lock a `cgroup.procs` write takes).
    // Best effort: report, continue.
    let v2_done = [in_cgroup, false];
    for ((fd, step), done) in plan
        .join
        .iter()
        .zip([ChildStep::JoinCgroupV2, ChildStep::JoinCgroupV1])
        .zip(v2_done)
    {
        if done {
            continue;
        }
        // SAFETY: write(2) on a descriptor opened before the fork, from a
        // static one-byte buffer.
        if *fd >= 0 && unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) } != 1 {
            child_report(r, step, Errno::last_raw());
        }
    }
    // 3. Own session and process group (SPEC §7). Cannot fail for a fresh
    // child, which is never a group leader, but is checked all the same.
    // SAFETY: setsid(2) is async-signal-safe and takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        child_fail(r, ChildStep::Setsid);
    }
    // 4. Descriptors and cwd; 5. oom_score_adj.
    // SAFETY: we are the child of fork(), as child_descriptors requires.
    unsafe { child_descriptors(plan) };
    // SAFETY: we are the child of fork(), as child_oom_score_adj requires.
    unsafe { child_oom_score_adj(plan) };
    // 6. The sandbox hook (its own INVARIANT: async-signal-safe).
    if let Some(hook) = plan.hook {
        if let Err(e) = hook() {
            child_report(r, ChildStep::PreExec, e as i32);
            child_exit();
        }
    }
    // 7. The path still names what was checked, as late as possible.
    // SAFETY: we are the child of fork(), as child_identity requires.
    unsafe { child_identity(plan) };
    // 8. exec. On success the report pipe closes (close-on-exec) and the
    // parent reads EOF.
    if plan.mode == ExecMode::Fd {
        // SAFETY: execveat(2) with AT_EMPTY_PATH executes the file behind
        // exec_fd; argv/envp are NULL-terminated arrays of pointers to
        // NUL-terminated strings built before the fork.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                plan.exec_fd,
                c"".as_ptr(),
                plan.argv,
                plan.envp,
                libc::AT_EMPTY_PATH,
            )
        };
    } else {
        // SAFETY: execve(2); all three pointers were built before the fork
        // and point to NUL-terminated data (arrays NULL-terminated).
        unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
    }
    child_fail(r, ChildStep::Exec)
}

/// Forks the child with every signal blocked across the fork, so no runner
/// handler runs in the child before it has reset the dispositions.
pub(super) fn fork_child(plan: &ChildPlan<'_>) -> Result<i32, SpawnError> {
    // SAFETY: the child only runs `child_main`, which keeps to
    // async-signal-safe calls on prebuilt data and never returns; `plan`
    // points into memory the child's copy of the address space still holds.
    unsafe { sys::fork_into_cgroup(Some(plan.cgroup_dir), |joined| child_main(plan, joined)) }
        .map_err(SpawnError::Fork)
}
