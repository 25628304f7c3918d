//! How a checked script is executed (SPEC.md §4). How it starts — an ELF
//! binary, a `#!` line as the kernel reads it, or `/bin/sh` — is decided by
//! `interpreter::start`, the rule the pre-check checked its interpreters
//! by, so what runs is what was checked.
//!
//! Unpinned scripts are executed **by their configured path**: `$0`,
//! `${BASH_SOURCE[0]}`, Python's `__file__` and `dirname "$0"` are what they
//! are when the operator runs the script by hand, and the `#!` line (with its
//! options, `#!/bin/sh -` included) is honoured by the kernel. What makes
//! that safe is the trust check of every parent directory (integrity.rs):
//! only root can change what the path names. The child re-checks, as its
//! last step before `execve`, that the path still names the checked
//! (device, inode) and is not a symbolic link (supervise/spawn/child.rs).
//! - owner execute bit set: `execve(PATH, [PATH, PARAMS…])`;
//! - no owner execute bit (mode 600/500, accepted like the extension does):
//!   `/bin/sh PATH PARAMS…`, as the extension runs it; so is an executable
//!   text file without `#!` (what a shell does on ENOEXEC).
//!
//! Pinned scripts (`pre/postScriptSha256`) run exactly the hashed bytes,
//! from a sealed memfd copy of them (no write, grow or shrink, ever), even
//! if the file is rewritten in place after the check:
//! - a `#!` script: its interpreter is executed by path with the copy at
//!   `/dev/fd/3`, exactly as the kernel runs a `#!` script from a descriptor
//!   (`INTERP [ARG] /dev/fd/3 PARAMS…`); the copy needs no execute right, so
//!   this works under `vm.memfd_noexec=2`. `$0` is `/dev/fd/3` and
//!   `QUIESCE_SCRIPT_PATH` carries the real path; descriptor 3 stays open in
//!   the script (its interpreter reads it) and so in its descendants;
//! - no owner execute bit, or text without `#!`: `/bin/sh /dev/fd/3 PARAMS…`;
//! - a binary: `execveat` of an executable sealed copy (close-on-exec, so not
//!   inherited), `argv[0]` the real path. Under `vm.memfd_noexec=2` no
//!   memfd may be executed and a pinned binary is refused with a message
//!   naming the setting (executing the file itself would no longer
//!   guarantee the pinned bytes).

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use std::os::unix::ffi::OsStrExt;

use crate::job::interpreter::{self, Start, SHELL};
use crate::job::preflight::CheckedScript;
use crate::supervise::{Exec, IdentityCheck, EXEC_FD_PATH};

/// The script's bytes in a sealed memfd (read-only for everyone, forever).
/// `executable`: the copy itself is to be executed (a pinned binary);
/// otherwise it is only read by an interpreter and is created non-executable.
pub fn sealed_copy(name: &str, content: &[u8], executable: bool) -> io::Result<OwnedFd> {
    let cname = CString::new(format!("quiesce:{name}")).map_err(io::Error::other)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC / MFD_NOEXEC_SEAL (Linux 6.3+) state the intent, which the
    // vm.memfd_noexec sysctl may require; older kernels refuse them (EINVAL).
    let intent = if executable {
        libc::MFD_EXEC
    } else {
        libc::MFD_NOEXEC_SEAL
    };
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let mut fd = unsafe { libc::memfd_create(cname.as_ptr(), flags | intent) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    }
    if fd < 0 {
        let e = io::Error::last_os_error();
        if executable && e.raw_os_error() == Some(libc::EACCES) {
            return Err(io::Error::new(
                e.kind(),
                format!("{e}: the kernel refuses executable memfds (vm.memfd_noexec=2), so a pinned binary cannot run its sealed copy; pin a #! script instead, or lower vm.memfd_noexec"),
            ));
        }
        return Err(e);
    }
    // SAFETY: memfd_create just returned this descriptor; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd);
    io::Write::write_all(&mut &file, content)?;
    let fd = OwnedFd::from(file);
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(F_ADD_SEALS) on our own descriptor with an int argument.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// What to execute, and the argv, for one run of a checked script.
pub struct Launch {
    pub program: Exec,
    pub argv: Vec<CString>,
    /// The (device, inode) re-check of an unpinned script's path.
    pub identity: Option<IdentityCheck>,
    /// How it runs, for the audit trail.
    pub how: String,
}

/// Whether a pinned script's sealed copy must itself be executable (a
/// binary) or is only read by an interpreter.
pub fn needs_executable_copy(script: &CheckedScript) -> bool {
    how_it_starts(script).is_ok_and(|s| s == Start::Binary)
}

/// How the script starts: the same rule the pre-check checked its
/// interpreters by (interpreter.rs), so what runs is what was checked.
fn how_it_starts(script: &CheckedScript) -> io::Result<Start> {
    interpreter::start(script.file.owner_executable(), &script.content).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("its #! line {why} (the pre-check refuses such a script)"),
        )
    })
}

/// Plans the launch of `script` with `params`. `sealed` is the sealed copy
/// of a pinned script's bytes (`None` when unpinned).
pub fn plan(
    script: &CheckedScript,
    params: &[CString],
    sealed: Option<OwnedFd>,
) -> io::Result<Launch> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let real =
        CString::new(script.file.path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let starts = how_it_starts(script)?;
    let with_params = |mut argv: Vec<CString>| {
        argv.extend(params.iter().cloned());
        argv
    };
    let Some(copy) = sealed else {
        let identity = Some(IdentityCheck {
            path: real.clone(),
            dev: script.file.dev,
            ino: script.file.ino,
        });
        return Ok(if starts != Start::Shell {
            Launch {
                program: Exec::Path(real.clone()),
                argv: with_params(vec![real]),
                identity,
                how: "executed by its path".into(),
            }
        } else {
            // No owner execute bit: the extension runs it as `sh SCRIPT`;
            // executable text without #!: execve says ENOEXEC, shells run it
            // with sh.
            Launch {
                program: Exec::Path(c(SHELL)?),
                argv: with_params(vec![c(SHELL)?, real]),
                identity,
                how: format!("{SHELL} reading it by its path"),
            }
        });
    };
    let fd_path = EXEC_FD_PATH.to_owned();
    if starts == Start::Binary {
        return Ok(Launch {
            program: Exec::Fd(copy),
            argv: with_params(vec![real]),
            identity: None,
            how: "pinned binary executed from its sealed copy".into(),
        });
    }
    let (interp, arg) = match starts {
        Start::Shebang(line) => (line.interpreter, line.arg),
        _ => (SHELL.into(), None),
    };
    let bytes = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(io::Error::other);
    let program = bytes(interp.as_os_str())?;
    let mut argv = vec![program.clone()];
    if let Some(a) = &arg {
        argv.push(bytes(a)?);
    }
    argv.push(fd_path);
    Ok(Launch {
        program: Exec::Interpreter {
            program,
            script: copy,
        },
        argv: with_params(argv),
        identity: None,
        how: format!(
            "pinned: {} reading the sealed copy at {}",
            interp.display(),
            EXEC_FD_PATH.to_string_lossy()
        ),
    })
}

/// Where a script's real path is given to it (a pinned script's `$0` is
/// `/dev/fd/3`).
pub const SCRIPT_PATH_VAR: &str = "QUIESCE_SCRIPT_PATH";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_cannot_be_written() {
        let fd = sealed_copy("t", b"abc", false).unwrap();
        let r = nix::unistd::write(&fd, b"x");
        assert!(r.is_err(), "a sealed copy accepted a write");
        let mut s = String::new();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let f = std::fs::File::open(format!("/proc/self/fd/{raw}")).unwrap();
        io::Read::read_to_string(&mut &f, &mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
