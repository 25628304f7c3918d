//! What a child is, built before the fork: the program and how it is
//! executed ([`Exec`]), its argv, environment, cwd, cgroup and sandbox hook
//! ([`SpawnSpec`]), the re-check of a script path ([`IdentityCheck`]), and
//! why it could not be started ([`SpawnError`]).

use crate::supervise::cgroup::CgroupRequest;
use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
