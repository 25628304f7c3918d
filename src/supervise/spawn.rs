//! Starting a supervised child: everything is built before `fork()`, the
//! child only runs async-signal-safe syscalls on prebuilt data, and reports a
//! failure before `exec` through a close-on-exec pipe.

use super::cgroup::{self, CgroupRequest, CgroupStatus, ScriptCgroup};
use super::procfs;
use super::supervised::{self, Supervised};
use super::sys;
use nix::errno::Errno;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// The hook the sandbox module installs (capability drops, `no_new_privs`,
/// rlimits, seccomp). It runs in the child right before `exec`.
///
/// INVARIANT: the hook runs between `fork` and `exec` of a possibly
/// multi-threaded parent, so it must be async-signal-safe: only raw
/// syscalls on data prepared before the fork — no allocation, no locks, no
/// logging, no panics. An `Err` aborts the spawn with
/// [`SpawnError::PreExec`].
pub type PreExecHook = Box<dyn Fn() -> Result<(), Errno> + Send + Sync>;

/// The descriptor number a pinned program ([`Exec::Fd`]) has in the child.
/// A `#!` script executed from a descriptor is handed to its interpreter as
/// `/dev/fd/3`, so `$0` is that path (the README documents it), and the
/// descriptor must stay open across `exec` for the interpreter to open it.
pub const EXEC_FD: RawFd = 3;
/// The path of the descriptor a program runs from ([`Exec::Fd`],
/// [`Exec::ShellFd`]); the kernel names a `#!` script run from it so.
pub const EXEC_FD_PATH: &CStr = c"/dev/fd/3";

/// Descriptors handed to the child are kept at or above this number so the
/// child's `dup2` onto 0–3 never collides with one it still needs.
const MIN_CHILD_FD: RawFd = EXEC_FD + 1;

/// What to execute.
#[derive(Debug)]
pub enum Exec {
    /// `execve` by path: `$0` stays the real path, which scripts use to find
    /// their sibling files (SPEC §4). Pair it with an
    /// [`IdentityCheck`] so the path is re-verified just before the fork.
    Path(CString),
    /// `execveat(fd, "", AT_EMPTY_PATH)` (fexecve): exactly the bytes that
    /// were hashed run. The descriptor becomes [`EXEC_FD`] in the child and
    /// `argv[0]` is left as given (for a `#!` script the kernel passes
    /// [`EXEC_FD_PATH`] to the interpreter). The descriptor stays open
    /// in the parent, so the same spec can be spawned again (retries).
    Fd(OwnedFd),
    /// `execve` of a shell by path, with the script's descriptor at
    /// [`EXEC_FD`] for the shell to read: a pinned script without the owner
    /// execute bit, which the extension runs through `/bin/sh`. The caller
    /// puts [`EXEC_FD_PATH`] in `argv[1]`; `argv[0]` is left as given.
    ShellFd { shell: CString, script: OwnedFd },
}

/// The (device, inode) a script path was checked as; re-verified with
/// `lstat` immediately before the fork.
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
        }
    }

    /// How the program is named in errors and the audit trail.
    pub fn program_name(&self) -> String {
        match &self.program {
            Exec::Path(p) => p.to_string_lossy().into_owned(),
            Exec::ShellFd { shell, script } => format!(
                "{} reading descriptor {}",
                shell.to_string_lossy(),
                script.as_raw_fd()
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
    #[error("setting up the child for {program} failed at {step}: {errno}")]
    ChildSetup {
        program: String,
        step: &'static str,
        errno: Errno,
    },
}

fn exec_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => " (the file, or the interpreter named on its #! line, does not exist)",
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
    /// Non-fatal: the child could not join the cgroup v2 directory.
    JoinCgroupV2 = 100,
    /// Non-fatal: the child could not join the v1 pids cgroup.
    JoinCgroupV1 = 101,
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
            JoinCgroupV2,
            JoinCgroupV1,
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
            ChildStep::ExecFd => "placing the program descriptor",
            ChildStep::Chdir => "chdir",
            ChildStep::CloseFds => {
                "closing inherited descriptors (close_range, Linux 5.11 or later)"
            }
            ChildStep::PreExec => "the sandbox hook",
            ChildStep::Exec => "exec",
            ChildStep::JoinCgroupV2 => "joining the cgroup",
            ChildStep::JoinCgroupV1 => "joining the pids cgroup",
        }
    }
}

/// One report record: step and errno, native endian, 8 bytes (well under
/// PIPE_BUF, so each write is atomic).
const RECORD: usize = 8;

/// Everything the child needs, as raw values and pointers into data owned by
/// the parent's stack frame (which the child's copy of memory still holds).
struct ChildPlan<'a> {
    path: *const libc::c_char,
    exec_fd: RawFd,
    /// Execute `exec_fd` itself (execveat) rather than `path`.
    exec_by_fd: bool,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
    join: [RawFd; 2],
    hook: Option<&'a (dyn Fn() -> Result<(), Errno> + Send + Sync)>,
    default_action: libc::sigaction,
    empty_mask: libc::sigset_t,
}

fn child_report(fd: RawFd, step: ChildStep, errno: i32) {
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `rec` is a valid 8-byte buffer for the duration of the call;
    // write(2) is async-signal-safe. A failed report only loses detail.
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD) };
}

fn child_fail(fd: RawFd, step: ChildStep) -> ! {
    child_report(fd, step, Errno::last_raw());
    // SAFETY: _exit(2) is async-signal-safe and never returns; it skips
    // atexit handlers and stdio flushing that belong to the parent.
    unsafe { libc::_exit(127) }
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
    // 1. Default dispositions for every signal: the runner's handlers (the
    // thaw handler!) must never run in the child, and ignored signals
    // (SIGPIPE in a Rust program) would stay ignored across exec. All
    // signals are still blocked here (the parent blocked them around fork),
    // so no handler can run before this loop is done.
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
    // 4. stdin /dev/null, stdout/stderr to our pipes. All sources are ≥ 4,
    // so each dup2 makes a real copy, which clears close-on-exec on it.
    for (src, dst) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        // SAFETY: dup2(2) is async-signal-safe; both are plain integers.
        if unsafe { libc::dup2(src, dst) } < 0 {
            child_fail(r, ChildStep::Stdio);
        }
    }
    // 5. The pinned program's descriptor at its fixed number, without
    // close-on-exec: a #! interpreter opens /dev/fd/3 after the exec.
    // SAFETY: as above.
    if plan.exec_fd >= 0 && unsafe { libc::dup2(plan.exec_fd, EXEC_FD) } < 0 {
        child_fail(r, ChildStep::ExecFd);
    }
    // 6. cwd.
    // SAFETY: chdir(2) is async-signal-safe; `cwd` points to a NUL-terminated
    // string owned by the spec, alive in the child's copy of memory.
    if unsafe { libc::chdir(plan.cwd) } != 0 {
        child_fail(r, ChildStep::Chdir);
    }
    // 7. Every other descriptor: marked close-on-exec rather than closed, so
    // the report pipe keeps working until the exec itself closes it.
    let first = if plan.exec_fd >= 0 {
        EXEC_FD + 1
    } else {
        EXEC_FD
    } as libc::c_uint;
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
    // 8. The sandbox hook (its own INVARIANT: async-signal-safe).
    if let Some(hook) = plan.hook {
        if let Err(e) = hook() {
            child_report(r, ChildStep::PreExec, e as i32);
            // SAFETY: see child_fail.
            unsafe { libc::_exit(127) }
        }
    }
    // 9. exec. On success the report pipe closes (close-on-exec) and the
    // parent reads EOF.
    if plan.exec_by_fd {
        // SAFETY: execveat(2) with AT_EMPTY_PATH executes the file behind
        // EXEC_FD; argv/envp are NULL-terminated arrays of pointers to
        // NUL-terminated strings built before the fork.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                EXEC_FD,
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

fn check_identity(chk: &IdentityCheck) -> Result<(), SpawnError> {
    let path = chk.path.to_string_lossy().into_owned();
    let st =
        nix::sys::stat::lstat(chk.path.as_c_str()).map_err(|errno| SpawnError::IdentityCheck {
            path: path.clone(),
            errno,
        })?;
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    if is_link || st.st_dev != chk.dev || st.st_ino != chk.ino {
        return Err(SpawnError::ScriptReplaced {
            path,
            expected_dev: chk.dev,
            expected_ino: chk.ino,
            found: if is_link {
                "a symbolic link".to_string()
            } else {
                format!("device {} inode {}", st.st_dev, st.st_ino)
            },
        });
    }
    Ok(())
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
    match spawn_prepared(spec, output_cap, join) {
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

/// What `spawn_prepared` hands to `Supervised::new`.
pub(crate) struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub start_ticks: u64,
    pub started: Instant,
    pub program: String,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub output_cap: usize,
    pub runner: i32,
    pub preexisting: Option<HashSet<(i32, u64)>>,
    /// The child is in its cgroup (v2 or v1 pids).
    pub cgroup_joined: bool,
    /// Why joining failed, when it did.
    pub join_notes: Vec<String>,
}

fn spawn_prepared(
    spec: &SpawnSpec,
    output_cap: usize,
    join: cgroup::JoinFds,
) -> Result<Started, SpawnError> {
    let program = spec.program_name();
    let child_fd = |fd: OwnedFd| sys::at_least(fd, MIN_CHILD_FD).map_err(SpawnError::Descriptor);

    let devnull = nix::fcntl::open(
        c"/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(SpawnError::OpenDevNull)?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let devnull = child_fd(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(devnull) })?;
    let (out_r, out_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
    let (rep_r, rep_w) = sys::pipe_cloexec().map_err(SpawnError::Pipe)?;
    let (out_w, err_w, rep_w) = (child_fd(out_w)?, child_fd(err_w)?, child_fd(rep_w)?);
    sys::set_nonblocking(out_r.as_fd()).map_err(SpawnError::Pipe)?;
    sys::set_nonblocking(err_r.as_fd()).map_err(SpawnError::Pipe)?;
    let join_v2 = join.v2.map(child_fd).transpose()?;
    let join_v1 = join.v1_pids.map(child_fd).transpose()?;
    // A pinned program's descriptor below MIN_CHILD_FD gets a temporary
    // copy above it; the caller's descriptor is left as it is.
    let exec_copy = match &spec.program {
        Exec::Fd(fd) | Exec::ShellFd { script: fd, .. } if fd.as_raw_fd() < MIN_CHILD_FD => {
            Some(sys::dup_at_least(fd.as_fd(), MIN_CHILD_FD).map_err(SpawnError::Descriptor)?)
        }
        _ => None,
    };
    let (path_ptr, exec_fd, exec_by_fd) = match &spec.program {
        Exec::Path(p) => (p.as_ptr(), -1, false),
        Exec::Fd(fd) => (
            std::ptr::null(),
            exec_copy.as_ref().map_or(fd.as_raw_fd(), |c| c.as_raw_fd()),
            true,
        ),
        Exec::ShellFd { shell, script } => (
            shell.as_ptr(),
            exec_copy
                .as_ref()
                .map_or(script.as_raw_fd(), |c| c.as_raw_fd()),
            false,
        ),
    };

    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

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

    let plan = ChildPlan {
        path: path_ptr,
        exec_fd,
        exec_by_fd,
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
        hook: spec.pre_exec.as_deref(),
        default_action,
        empty_mask,
    };

    // Without a cgroup, orphans re-parented to the runner can only be told
    // apart by "not a child of the runner before this spawn".
    let runner = std::process::id() as i32;
    let preexisting = (join_v2.is_none() && join_v1.is_none()).then(|| {
        procfs::scan()
            .values()
            .filter(|p| p.ppid == runner)
            .map(|p| p.id())
            .collect::<HashSet<_>>()
    });

    // The identity re-check is the last thing before the fork: the window
    // between it and the exec is as small as it can be.
    if let Some(chk) = &spec.identity_check {
        check_identity(chk)?;
    }

    // Block every signal across the fork so no runner handler runs in the
    // child before it has reset the dispositions.
    // SAFETY: sigset_t is plain old data; it is filled before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    let started = Instant::now();
    // SAFETY: valid pointers to sigset_t values on this stack frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
    }
    // SAFETY: fork(2). The child only runs `child_main`, which keeps to
    // async-signal-safe calls on prebuilt data and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of fork(); `plan` points into memory the
        // child's copy of the address space still holds.
        unsafe { child_main(&plan) }
    }
    let fork_errno = Errno::last();
    // SAFETY: restores the mask saved above; valid pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(SpawnError::Fork(fork_errno));
    }
    // The child's ends: closing ours lets the report pipe reach EOF and the
    // output pipes reach EOF once the tree is done writing.
    drop((devnull, out_w, err_w, rep_w, join_v2, join_v1, exec_copy));

    let pidfd = sys::pidfd_open(pid);
    let reports = read_reports(&rep_r);
    let pidfd = match pidfd {
        Ok(fd) => fd,
        Err(errno) => {
            // SAFETY: kill(2) on our own unreaped child: its pid cannot have
            // been recycled. Then reap it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            sys::waitpid_blocking(pid);
            return Err(SpawnError::PidfdOpen { pid, errno });
        }
    };

    let mut join_notes = Vec::new();
    let mut join_failed = [false; 2];
    for (step, errno) in &reports {
        if step.fatal() {
            // The child _exits right after reporting: reap it before
            // returning, by pid (still our unreaped child: race-free).
            sys::waitpid_blocking(pid);
            return Err(fatal_error(spec, program, *step, *errno));
        }
        let i = usize::from(*step == ChildStep::JoinCgroupV1);
        join_failed[i] = true;
        join_notes.push(format!("{}: {errno}", step.name()));
    }
    let cgroup_joined =
        (plan.join[0] >= 0 && !join_failed[0]) || (plan.join[1] >= 0 && !join_failed[1]);
    if !cgroup_joined && !join_notes.is_empty() {
        // `preexisting` was not recorded (a cgroup was expected), so orphans
        // re-parented to the runner cannot be attributed to this tree.
        join_notes.push(
            "not in a cgroup: descendants that setsid and double-fork away cannot be found".into(),
        );
    }

    let start_ticks = procfs::read_stat(pid).map_or(0, |s| s.start);
    supervised::register(pid);
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
    })
}

/// Reads the child's report records until EOF (the exec closed the pipe, or
/// the child exited).
fn read_reports(rep_r: &OwnedFd) -> Vec<(ChildStep, Errno)> {
    let mut buf = [0u8; RECORD * 8];
    let mut len = 0;
    while len < buf.len() {
        match sys::read(rep_r.as_fd(), &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    buf[..len - len % RECORD]
        .chunks_exact(RECORD)
        .filter_map(|rec| {
            let step = u32::from_ne_bytes(rec[..4].try_into().ok()?);
            let errno = i32::from_ne_bytes(rec[4..].try_into().ok()?);
            Some((ChildStep::from_u32(step)?, Errno::from_raw(errno)))
        })
        .collect()
}

fn fatal_error(spec: &SpawnSpec, program: String, step: ChildStep, errno: Errno) -> SpawnError {
    match step {
        ChildStep::Exec => SpawnError::Exec { program, errno },
        ChildStep::Chdir => SpawnError::Chdir {
            program,
            cwd: spec.cwd.to_string_lossy().into_owned(),
            errno,
        },
        ChildStep::PreExec => SpawnError::PreExec { program, errno },
        other => SpawnError::ChildSetup {
            program,
            step: other.name(),
            errno,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_records_round_trip() {
        let (r, w) = sys::pipe_cloexec().unwrap();
        child_report(w.as_raw_fd(), ChildStep::JoinCgroupV2, libc::EACCES);
        child_report(w.as_raw_fd(), ChildStep::Exec, libc::ENOENT);
        drop(w);
        let got = read_reports(&r);
        assert_eq!(
            got,
            vec![
                (ChildStep::JoinCgroupV2, Errno::EACCES),
                (ChildStep::Exec, Errno::ENOENT)
            ]
        );
        assert!(!got[0].0.fatal() && got[1].0.fatal());
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
