//! Starting a supervised child: everything is built before `fork()`, the
//! child only runs async-signal-safe syscalls on prebuilt data, and reports a
//! failure before `exec` through a close-on-exec pipe.

use super::cgroup::{self, CgroupRequest, CgroupStatus, ScriptCgroup};
use super::live;
use super::procfs;
use super::sentinel::{self, Watched};
use super::supervised::{Started, Supervised};
use super::sys;
use nix::errno::Errno;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The hook the sandbox module installs (capability drops, `no_new_privs`,
/// rlimits, seccomp). It runs in the child right before `exec`.
///
/// INVARIANT: the hook runs between `fork` and `exec` of a possibly
/// multi-threaded parent, so it must be async-signal-safe: only raw
/// syscalls on data prepared before the fork — no allocation, no locks, no
/// logging, no panics. An `Err` aborts the spawn with
/// [`SpawnError::PreExec`].
pub type PreExecHook = Box<dyn Fn() -> Result<(), Errno> + Send + Sync>;

/// The descriptor a pinned script's sealed copy has in the child when an
/// interpreter reads it ([`Exec::Interpreter`]): the interpreter opens
/// [`EXEC_FD_PATH`] after the exec, so this one descriptor stays open across
/// it (the one exception to "nothing beyond stdin, stdout and stderr").
pub const EXEC_FD: RawFd = 3;
/// The path an interpreter is given for a pinned script ([`Exec::Interpreter`]):
/// the script's `$0` (the README documents it).
pub const EXEC_FD_PATH: &CStr = c"/dev/fd/3";

/// Descriptors handed to the child are kept at or above this number so the
/// child's `dup2` onto 0–3 never collides with one it still needs.
const MIN_CHILD_FD: RawFd = EXEC_FD + 1;

/// How long a child may take from `fork` to a successful `exec` before the
/// runner gives up on it (kills and reaps it) by default.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to execute.
#[derive(Debug)]
pub enum Exec {
    /// `execve` by path. For an unpinned script this is the configured path
    /// itself, so `$0`, `${BASH_SOURCE[0]}` and `__file__` are the real path
    /// (SPEC §4); pair it with an [`IdentityCheck`], which the child makes
    /// right before the `execve`.
    Path(CString),
    /// `execveat(fd, "", AT_EMPTY_PATH)`: a binary run from a descriptor (a
    /// pinned binary's sealed copy). The descriptor is close-on-exec, so the
    /// program does not inherit it; a `#!` script given this way fails with
    /// ENOENT (its interpreter could not open the closed descriptor) — use
    /// [`Exec::Interpreter`] for those. The descriptor stays open in the
    /// parent, so the same spec can be spawned again (retries).
    Fd(OwnedFd),
    /// `execve` of an interpreter by path with `script` open at [`EXEC_FD`]
    /// across the exec: a pinned script, read by its interpreter from the
    /// sealed copy of the hashed bytes, the way the kernel itself runs a
    /// `#!` script from a descriptor. The caller puts [`EXEC_FD_PATH`] where
    /// the script's name goes in `argv`. Needs no executable memfd, so it
    /// works under `vm.memfd_noexec=2`.
    Interpreter { program: CString, script: OwnedFd },
}

/// The (device, inode) a script path was checked as. The child re-checks it
/// with `fstatat(AT_SYMLINK_NOFOLLOW)` immediately before its `execve`; a
/// mismatch is reported through the start-up pipe and nothing is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCheck {
    pub path: CString,
    pub dev: u64,
    pub ino: u64,
}

/// Everything about a child, built before the fork.
pub struct SpawnSpec {
    pub program: Exec,
    /// The full argument vector, `argv[0]` included. `argv[0]` also names the
    /// program in errors when it runs from a descriptor.
    pub argv: Vec<CString>,
    /// The complete environment; nothing is inherited from the runner.
    pub env: Vec<CString>,
    /// Working directory of the child (SPEC §7: `/`).
    pub cwd: CString,
    pub identity_check: Option<IdentityCheck>,
    pub cgroup: Option<CgroupRequest>,
    pub pre_exec: Option<PreExecHook>,
    /// How long the child may take to reach a successful `exec`; past it the
    /// child is killed and the spawn fails with [`SpawnError::StartupTimeout`].
    pub startup_timeout: Duration,
}

impl SpawnSpec {
    /// A spec with an empty environment, cwd `/`, no identity check, no
    /// cgroup and no hook.
    pub fn new(program: Exec, argv: Vec<CString>) -> Self {
        SpawnSpec {
            program,
            argv,
            env: Vec::new(),
            cwd: c"/".to_owned(),
            identity_check: None,
            cgroup: None,
            pre_exec: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// How the program is named in errors and the audit trail.
    pub fn program_name(&self) -> String {
        match &self.program {
            Exec::Path(p) => p.to_string_lossy().into_owned(),
            Exec::Interpreter { program, .. } => format!(
                "{} reading {}",
                program.to_string_lossy(),
                EXEC_FD_PATH.to_string_lossy()
            ),
            Exec::Fd(fd) => match self.argv.first() {
                Some(a) => format!("{} (descriptor {})", a.to_string_lossy(), fd.as_raw_fd()),
                None => format!("descriptor {}", fd.as_raw_fd()),
            },
        }
    }
}

impl fmt::Debug for SpawnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnSpec")
            .field("program", &self.program)
            .field("argv", &self.argv)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("identity_check", &self.identity_check)
            .field("cgroup", &self.cgroup)
            .field("pre_exec", &self.pre_exec.as_ref().map(|_| "<hook>"))
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

/// Why a child could not be started. Each variant is one failed operation,
/// with the data that names it. When the failure happened in the child, the
/// child has been reaped before this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("argv is empty: argv[0] must name the program")]
    EmptyArgv,
    #[error("cannot re-check {path} before running it: {errno}")]
    IdentityCheck { path: String, errno: Errno },
    #[error("{path} changed after it was checked (checked device {expected_dev} inode {expected_ino}, now {found}); refusing to run it")]
    ScriptReplaced {
        path: String,
        expected_dev: u64,
        expected_ino: u64,
        found: String,
    },
    #[error("cannot open /dev/null for the child's stdin: {0}")]
    OpenDevNull(Errno),
    #[error("cannot create a pipe for the child: {0}")]
    Pipe(Errno),
    #[error("cannot prepare a descriptor for the child: {0}")]
    Descriptor(Errno),
    #[error("fork failed: {0}")]
    Fork(Errno),
    #[error("pidfd_open({pid}) failed (Linux 5.3 or later is required): {errno}")]
    PidfdOpen { pid: i32, errno: Errno },
    #[error("cannot execute {program}: {errno}{}", exec_hint(*.errno))]
    Exec { program: String, errno: Errno },
    #[error("cannot change to directory {cwd} to run {program}: {errno}")]
    Chdir {
        program: String,
        cwd: String,
        errno: Errno,
    },
    #[error("the sandbox refused to start {program}: {errno}")]
    PreExec { program: String, errno: Errno },
    #[error("{program} did not reach exec within {} s (blocked before exec); it was killed", .waited.as_secs_f64())]
    StartupTimeout { program: String, waited: Duration },
    #[error("setting up the child for {program} failed at {step}: {errno}")]
    ChildSetup {
        program: String,
        step: &'static str,
        errno: Errno,
    },
}

fn exec_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => " (the file, or the interpreter named on its #! line, does not exist; or a #! script was run from a close-on-exec descriptor)",
        Errno::ENOEXEC => " (not an executable format and no #! line)",
        Errno::EACCES => " (no execute permission, or the filesystem is mounted noexec)",
        _ => "",
    }
}

/// Steps of the child between fork and exec, as reported through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum ChildStep {
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
    fn from_u32(v: u32) -> Option<Self> {
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

    fn fatal(self) -> bool {
        (self as u32) < 100
    }

    fn name(self) -> &'static str {
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
const RECORD: usize = 24;

/// One decoded report record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    step: ChildStep,
    errno: Errno,
    values: [u64; 2],
}

/// How the child executes its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecMode {
    /// `execve(path)`.
    Path,
    /// `execveat(exec_fd, "", AT_EMPTY_PATH)`, the descriptor close-on-exec.
    Fd,
    /// `execve(path)` with `exec_fd` placed at [`EXEC_FD`], kept open.
    Interpreter,
}

/// Everything the child needs, as raw values and pointers into data owned by
/// the parent's stack frame (which the child's copy of memory still holds).
struct ChildPlan<'a> {
    path: *const libc::c_char,
    exec_fd: RawFd,
    mode: ExecMode,
    /// Path, device and inode to re-check right before the exec.
    identity: Option<(*const libc::c_char, u64, u64)>,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
    join: [RawFd; 2],
    /// The runner's pid: after PR_SET_PDEATHSIG the child checks it still
    /// has this parent (else the runner died before the prctl took effect).
    runner: i32,
    /// What the child writes to `/proc/self/oom_score_adj` (the runner's
    /// value from before any freeze window lowered it).
    oom_score_adj: &'a [u8],
    hook: Option<&'a (dyn Fn() -> Result<(), Errno> + Send + Sync)>,
    default_action: libc::sigaction,
    empty_mask: libc::sigset_t,
}

fn child_report_values(fd: RawFd, step: ChildStep, errno: i32, values: [u64; 2]) {
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[4..8].copy_from_slice(&errno.to_ne_bytes());
    rec[8..16].copy_from_slice(&values[0].to_ne_bytes());
    rec[16..].copy_from_slice(&values[1].to_ne_bytes());
    // SAFETY: `rec` is a valid RECORD-byte buffer for the duration of the
    // call; write(2) is async-signal-safe. A failed report only loses detail.
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD) };
}

fn child_report(fd: RawFd, step: ChildStep, errno: i32) {
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
unsafe fn child_main(plan: &ChildPlan<'_>) -> ! {
    let r = plan.report;
    // 1. Signals, and death with the runner.
    // SAFETY: we are the child of fork(), as child_signals requires.
    unsafe { child_signals(plan) };
    // 2. Join the cgroup(s) first, so nothing the child becomes can start
    // outside. Writing "0" moves the writer. Best effort: report, continue.
    for (fd, step) in plan
        .join
        .iter()
        .zip([ChildStep::JoinCgroupV2, ChildStep::JoinCgroupV1])
    {
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

/// Starts `spec` under supervision. `output_cap` bytes are kept at each end
/// of stdout and of stderr ([`super::DEFAULT_OUTPUT_CAP`]).
///
/// Kernel requirements: pidfd_open (5.3), waitid(P_PIDFD) (5.4),
/// close_range with CLOSE_RANGE_CLOEXEC (5.11). Call
/// [`super::become_subreaper`] once before the first spawn.
pub fn spawn(spec: &SpawnSpec, output_cap: usize) -> Result<Supervised, SpawnError> {
    if spec.argv.is_empty() {
        return Err(SpawnError::EmptyArgv);
    }
    let mut cg_status = CgroupStatus::default();
    let (mut cg, join) = match &spec.cgroup {
        Some(req) => cgroup::prepare(req, &mut cg_status),
        None => (
            ScriptCgroup::default(),
            cgroup::JoinFds {
                v2: None,
                v1_pids: None,
            },
        ),
    };
    match spawn_prepared(spec, output_cap, join, cg.v2.as_deref()) {
        Ok(mut started) => {
            cg_status.joined = started.cgroup_joined;
            cg_status.notes.append(&mut started.join_notes);
            Ok(Supervised::new(started, cg, cg_status))
        }
        Err(e) => {
            cg.remove(&mut cg_status);
            Err(e)
        }
    }
}

/// What the child resets every signal to before its exec: the default
/// action, and an empty mask (prepared before the fork).
fn default_signal_state() -> (libc::sigaction, libc::sigset_t) {
    // SAFETY: sigaction and sigset_t are plain old data; all-zero is valid
    // and the fields that matter are set below.
    let mut default_action: libc::sigaction = unsafe { std::mem::zeroed() };
    default_action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: as above.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both point to valid, writable sigset_t values.
    unsafe {
        libc::sigemptyset(&mut empty_mask);
        libc::sigemptyset(&mut default_action.sa_mask);
    }
    (default_action, empty_mask)
}

/// The runner's children now (pid and start time).
fn children_of(runner: i32) -> HashSet<(i32, u64)> {
    procfs::scan()
        .values()
        .filter(|p| p.ppid == runner)
        .map(|p| p.id())
        .collect()
}

fn spawn_prepared(
    spec: &SpawnSpec,
    output_cap: usize,
    join: cgroup::JoinFds,
    cgroup_dir: Option<&std::path::Path>,
) -> Result<Started, SpawnError> {
    let program = spec.program_name();
    let ChildEnds {
        devnull,
        out_r,
        out_w,
        err_r,
        err_w,
        rep_r,
        rep_w,
        join_v2,
        join_v1,
        exec_copy,
    } = ChildEnds::open(spec, join)?;
    let exec_fd = |fd: &OwnedFd| exec_copy.as_ref().map_or(fd.as_raw_fd(), |c| c.as_raw_fd());
    let (path_ptr, exec_fd, mode) = match &spec.program {
        Exec::Path(p) => (p.as_ptr(), -1, ExecMode::Path),
        Exec::Fd(fd) => (std::ptr::null(), exec_fd(fd), ExecMode::Fd),
        Exec::Interpreter { program, script } => {
            (program.as_ptr(), exec_fd(script), ExecMode::Interpreter)
        }
    };

    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    let (default_action, empty_mask) = default_signal_state();
    let runner = std::process::id() as i32;
    let plan = ChildPlan {
        path: path_ptr,
        exec_fd,
        mode,
        identity: spec
            .identity_check
            .as_ref()
            .map(|c| (c.path.as_ptr(), c.dev, c.ino)),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: rep_w.as_raw_fd(),
        join: [
            join_v2.as_ref().map_or(-1, |f| f.as_raw_fd()),
            join_v1.as_ref().map_or(-1, |f| f.as_raw_fd()),
        ],
        runner,
        oom_score_adj: oom_baseline(),
        hook: spec.pre_exec.as_deref(),
        default_action,
        empty_mask,
    };

    // Without a cgroup, orphans re-parented to the runner can only be told
    // apart by "not a child of the runner before this spawn".
    let preexisting = (join_v2.is_none() && join_v1.is_none()).then(|| children_of(runner));

    let started = Instant::now();
    let pid = fork_child(&plan)?;
    // The child's ends: closing ours lets the report pipe reach EOF and the
    // output pipes reach EOF once the tree is done writing.
    drop((devnull, out_w, err_w, rep_w, join_v2, join_v1, exec_copy));

    let (pidfd, reports) = await_exec(pid, &rep_r, started + spec.startup_timeout, || {
        SpawnError::StartupTimeout {
            program: program.clone(),
            waited: spec.startup_timeout,
        }
    })?;
    let (cgroup_joined, mut join_notes) = judge_reports(spec, &program, pid, &plan, &reports)?;

    let (sentinel, sentinel_note) = start_sentinel(pid, cgroup_joined, cgroup_dir);
    join_notes.extend(sentinel_note);
    let start_ticks = procfs::read_stat(pid).map_or(0, |s| s.start);
    live::register(pid);
    Ok(Started {
        pid,
        pidfd,
        start_ticks,
        started,
        program,
        stdout: out_r,
        stderr: err_r,
        output_cap,
        runner,
        preexisting,
        cgroup_joined,
        join_notes,
        sentinel,
    })
}

/// The descriptors a child is given, each at or above [`MIN_CHILD_FD`] so
/// the child's dup2 onto 0–2 is always a copy, and the runner's ends.
struct ChildEnds {
    devnull: OwnedFd,
    out_r: OwnedFd,
    out_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
    rep_r: OwnedFd,
    rep_w: OwnedFd,
    join_v2: Option<OwnedFd>,
    join_v1: Option<OwnedFd>,
    /// A program descriptor below MIN_CHILD_FD gets a temporary copy above
    /// it; the caller's descriptor is left as it is.
    exec_copy: Option<OwnedFd>,
}

impl ChildEnds {
    fn open(spec: &SpawnSpec, join: cgroup::JoinFds) -> Result<ChildEnds, SpawnError> {
        let child_fd =
            |fd: OwnedFd| sys::at_least(fd, MIN_CHILD_FD).map_err(SpawnError::Descriptor);
        let devnull = nix::fcntl::open(
            c"/dev/null",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(SpawnError::OpenDevNull)?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        let devnull =
            child_fd(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(devnull) })?;
        let (out_r, out_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        let (err_r, err_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        let (rep_r, rep_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
        sys::set_nonblocking(out_r.as_fd()).map_err(SpawnError::Pipe)?;
        sys::set_nonblocking(err_r.as_fd()).map_err(SpawnError::Pipe)?;
        let exec_copy = match &spec.program {
            Exec::Fd(fd) | Exec::Interpreter { script: fd, .. }
                if fd.as_raw_fd() < MIN_CHILD_FD =>
            {
                Some(sys::dup_at_least(fd.as_fd(), MIN_CHILD_FD).map_err(SpawnError::Descriptor)?)
            }
            _ => None,
        };
        Ok(ChildEnds {
            devnull,
            out_r,
            out_w: child_fd(out_w)?,
            err_r,
            err_w: child_fd(err_w)?,
            rep_r,
            rep_w: child_fd(rep_w)?,
            join_v2: join.v2.map(child_fd).transpose()?,
            join_v1: join.v1_pids.map(child_fd).transpose()?,
            exec_copy,
        })
    }
}

/// After the fork: the child's pidfd and its start-up reports, read until
/// its exec closes the report pipe or `deadline` passes. A child that
/// cannot be watched, or is stuck before its exec, is killed and reaped
/// (our unreaped child: its pid cannot have been recycled).
fn await_exec(
    pid: i32,
    rep_r: &OwnedFd,
    deadline: Instant,
    stuck: impl FnOnce() -> SpawnError,
) -> Result<(OwnedFd, Vec<Report>), SpawnError> {
    let pidfd = sys::pidfd_open(pid);
    let reports = read_reports(rep_r, deadline);
    let pidfd = match pidfd {
        Ok(fd) => fd,
        Err(errno) => {
            // SAFETY: kill(2) on our own unreaped child (see above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            sys::waitpid_blocking(pid);
            return Err(SpawnError::PidfdOpen { pid, errno });
        }
    };
    match reports {
        Some(reports) => Ok((pidfd, reports)),
        None => {
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL, 0);
            sys::waitpid_blocking(pid);
            Err(stuck())
        }
    }
}

/// Forks the child with every signal blocked across the fork, so no runner
/// handler runs in the child before it has reset the dispositions.
fn fork_child(plan: &ChildPlan<'_>) -> Result<i32, SpawnError> {
    // SAFETY: the child only runs `child_main`, which keeps to
    // async-signal-safe calls on prebuilt data and never returns; `plan`
    // points into memory the child's copy of the address space still holds.
    unsafe { sys::fork_signals_blocked(|| child_main(plan)) }.map_err(SpawnError::Fork)
}

/// Acts on the child's reports: a fatal one reaps the child and becomes the
/// spawn's error; the others are notes. Returns whether the child is in a
/// cgroup, and the notes.
fn judge_reports(
    spec: &SpawnSpec,
    program: &str,
    pid: i32,
    plan: &ChildPlan<'_>,
    reports: &[Report],
) -> Result<(bool, Vec<String>), SpawnError> {
    let mut notes = Vec::new();
    let mut join_failed = [false; 2];
    for rep in reports {
        if rep.step.fatal() {
            // The child _exits right after reporting: reap it before
            // returning, by pid (still our unreaped child: race-free).
            sys::waitpid_blocking(pid);
            return Err(fatal_error(spec, program.to_string(), *rep));
        }
        match rep.step {
            ChildStep::JoinCgroupV2 => join_failed[0] = true,
            ChildStep::JoinCgroupV1 => join_failed[1] = true,
            _ => {}
        }
        notes.push(format!("{}: {}", rep.step.name(), rep.errno));
    }
    let joined = (plan.join[0] >= 0 && !join_failed[0]) || (plan.join[1] >= 0 && !join_failed[1]);
    if !joined && join_failed.contains(&true) {
        // `preexisting` was not recorded (a cgroup was expected), so orphans
        // re-parented to the runner cannot be attributed to this tree.
        notes.push(
            "not in a cgroup: descendants that setsid and double-fork away cannot be found".into(),
        );
    }
    Ok((joined, notes))
}

/// The run sentinel's watch on the tree led by `pid` (see sentinel.rs); a
/// failure is a note, not a failed spawn.
fn start_sentinel(
    pid: i32,
    cgroup_joined: bool,
    cgroup_dir: Option<&std::path::Path>,
) -> (Option<Watched>, Option<String>) {
    let kill_fd = cgroup_dir
        .filter(|_| cgroup_joined)
        .and_then(sentinel::open_cgroup_kill);
    match sentinel::watch(pid, kill_fd) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(format!(
                "no sentinel ({e}): if the runner dies, only the main child is killed with it"
            )),
        ),
    }
}

/// Reads the child's report records until EOF (the exec closed the pipe, or
/// the child exited). `None`: the deadline passed first (the child is stuck
/// before its exec).
fn read_reports(rep_r: &OwnedFd, deadline: Instant) -> Option<Vec<Report>> {
    let mut buf = [0u8; RECORD * 8];
    let mut len = 0;
    while len < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [sys::pollfd(Some(rep_r.as_raw_fd()))];
        match sys::ppoll(&mut fds, left) {
            Ok(0) if left.is_zero() => return None,
            Ok(0) => continue,
            Ok(_) | Err(_) => {}
        }
        match sys::read(rep_r.as_fd(), &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    Some(
        buf[..len - len % RECORD]
            .chunks_exact(RECORD)
            .filter_map(|rec| {
                let u64_at = |i: usize| Some(u64::from_ne_bytes(rec[i..i + 8].try_into().ok()?));
                Some(Report {
                    step: ChildStep::from_u32(u32::from_ne_bytes(rec[..4].try_into().ok()?))?,
                    errno: Errno::from_raw(i32::from_ne_bytes(rec[4..8].try_into().ok()?)),
                    values: [u64_at(8)?, u64_at(16)?],
                })
            })
            .collect(),
    )
}

fn fatal_error(spec: &SpawnSpec, program: String, rep: Report) -> SpawnError {
    let errno = rep.errno;
    match rep.step {
        ChildStep::Exec => SpawnError::Exec { program, errno },
        ChildStep::Chdir => SpawnError::Chdir {
            program,
            cwd: spec.cwd.to_string_lossy().into_owned(),
            errno,
        },
        ChildStep::PreExec => SpawnError::PreExec { program, errno },
        ChildStep::Identity => identity_error(spec, rep),
        other => SpawnError::ChildSetup {
            program,
            step: other.name(),
            errno,
        },
    }
}

/// The re-check's finding: the path is gone or unreadable, a symbolic link,
/// or another file.
fn identity_error(spec: &SpawnSpec, rep: Report) -> SpawnError {
    let (path, dev, ino) = spec.identity_check.as_ref().map_or_else(
        || (String::new(), 0, 0),
        |c| (c.path.to_string_lossy().into_owned(), c.dev, c.ino),
    );
    let found = match rep.errno {
        Errno::UnknownErrno => format!("device {} inode {}", rep.values[0], rep.values[1]),
        Errno::ELOOP => "a symbolic link".to_string(),
        errno => return SpawnError::IdentityCheck { path, errno },
    };
    SpawnError::ScriptReplaced {
        path,
        expected_dev: dev,
        expected_ino: ino,
        found,
    }
}

/// The `oom_score_adj` every child gets (see [`record_oom_score_adj`]).
static OOM_BASELINE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Records the runner's `oom_score_adj` now, before any freeze window
/// lowers it to -1000, as the value every child is given back before its
/// exec (a snapshot command or script must not be exempt from the OOM
/// killer because the runner is). Without a record children get 0.
pub fn record_oom_score_adj() {
    OOM_BASELINE.get_or_init(|| {
        std::fs::read("/proc/self/oom_score_adj")
            .map(|v| v.trim_ascii().to_vec())
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| b"0".to_vec())
    });
}

fn oom_baseline() -> &'static [u8] {
    OOM_BASELINE.get().map_or(b"0", |v| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_records_round_trip() {
        let (r, w) = sys::pipe_cloexec().unwrap();
        child_report(w.as_raw_fd(), ChildStep::JoinCgroupV2, libc::EACCES);
        child_report_values(w.as_raw_fd(), ChildStep::Identity, 0, [7, 42]);
        drop(w);
        let got = read_reports(&r, Instant::now() + Duration::from_secs(60)).unwrap();
        let rec = |step, errno, values| Report {
            step,
            errno,
            values,
        };
        assert_eq!(
            got,
            vec![
                rec(ChildStep::JoinCgroupV2, Errno::EACCES, [0, 0]),
                rec(ChildStep::Identity, Errno::UnknownErrno, [7, 42])
            ]
        );
        assert!(!got[0].step.fatal() && got[1].step.fatal());
    }

    #[test]
    fn a_child_that_never_reaches_exec_does_not_hang_the_reader() {
        // The write end stays open and silent, like a child blocked before
        // its exec: the read gives up at the deadline instead of waiting.
        let (r, w) = sys::pipe_cloexec().unwrap();
        child_report(w.as_raw_fd(), ChildStep::JoinCgroupV2, libc::EACCES);
        assert_eq!(
            read_reports(&r, Instant::now() + Duration::from_millis(50)),
            None
        );
        drop(w);
    }

    #[test]
    fn exec_error_names_the_missing_interpreter() {
        let e = SpawnError::Exec {
            program: "/x/pre.sh".into(),
            errno: Errno::ENOENT,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/x/pre.sh") && msg.contains("#! line"),
            "{msg}"
        );
    }
}
