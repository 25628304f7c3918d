//! How a checked script is executed so that what runs is exactly what was
//! checked and hashed (SPEC.md §4, issue 7's race attack).
//!
//! The script is read once from its checked descriptor; those bytes are
//! hashed (the SHA-256 in the status and the audit trail) and copied into a
//! sealed memfd, and the memfd is what runs. Nothing re-opens the script by
//! its path afterwards, so no rename, symlink or parent-directory swap can
//! slip another file in, and an in-place write cannot change the sealed copy.
//!
//! `$0` stays the real path, which scripts use to find their sibling files:
//! - a shell script (no owner execute bit: `/bin/sh`, as the extension runs
//!   it; or a `#!` naming a POSIX-family shell) runs as
//!   `SHELL [ARG] -c '. /dev/fd/3' REAL_PATH PARAMS…`, the shell reading the
//!   sealed copy at descriptor 3 with `$0` set to the real path;
//! - a binary runs from the memfd (`execveat`) with `argv[0]` the real path;
//! - another interpreter (`#!/usr/bin/python3`…) runs from the memfd too; the
//!   kernel then names the script `/dev/fd/3`, so `QUIESCE_SCRIPT_PATH`
//!   carries the real path.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use crate::supervise::{Exec, EXEC_FD_PATH};

/// Shells that take `-c CMD NAME ARGS…` and `. FILE` with POSIX meaning.
const SHELLS: [&str; 7] = ["sh", "dash", "bash", "ash", "ksh", "mksh", "zsh"];

/// The script's bytes in a sealed memfd (read-only for everyone, forever).
pub fn sealed_copy(name: &str, content: &[u8]) -> io::Result<OwnedFd> {
    let cname = CString::new(format!("quiesce:{name}")).map_err(io::Error::other)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) states the intent to execute it, which the
    // vm.memfd_noexec sysctl may require; older kernels refuse the flag.
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let mut fd = unsafe { libc::memfd_create(cname.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
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

/// The `#!` line: interpreter and its optional single argument (the
/// kernel's rule: everything after the first run of blanks is one argument).
pub fn shebang(content: &[u8]) -> Option<(String, Option<String>)> {
    let rest = content.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    let (interp, arg) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], Some(line[i..].trim().to_string())),
        None => (line, None),
    };
    if interp.is_empty() {
        return None;
    }
    Some((interp.to_string(), arg.filter(|a| !a.is_empty())))
}

fn is_shell(path: &str) -> bool {
    let base = Path::new(path)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or("");
    SHELLS.contains(&base)
}

/// `#!/usr/bin/env bash` names a shell through PATH: resolve it the way env
/// would, in the scripts' PATH.
fn env_shell(interp: &str, arg: Option<&str>, path: &str) -> Option<String> {
    if Path::new(interp).file_name()?.to_str()? != "env" {
        return None;
    }
    let name = arg?;
    if name.contains(char::is_whitespace) || !SHELLS.contains(&name) {
        return None;
    }
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// What to execute, and the argv, for one run of a checked script.
pub struct Launch {
    pub program: Exec,
    pub argv: Vec<CString>,
    /// How it runs, for the audit trail.
    pub how: String,
}

/// Plans the launch of `content` (the checked bytes of `real_path`).
pub fn plan(
    real_path: &Path,
    content: &[u8],
    owner_executable: bool,
    params: &[CString],
    memfd: OwnedFd,
    script_path_env: &str,
) -> io::Result<Launch> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let real = c(&real_path.to_string_lossy())?;
    let shell_run = |shell: &str, arg: Option<&str>, memfd: OwnedFd| -> io::Result<Launch> {
        let mut argv = vec![c(shell)?];
        if let Some(a) = arg {
            argv.push(c(a)?);
        }
        argv.extend([
            c("-c")?,
            c(&format!(". {}", EXEC_FD_PATH.to_string_lossy()))?,
            real.clone(),
        ]);
        argv.extend(params.iter().cloned());
        Ok(Launch {
            program: Exec::ShellFd {
                shell: c(shell)?,
                script: memfd,
            },
            argv,
            how: format!("{shell} reading the checked copy"),
        })
    };
    if !owner_executable {
        // The extension runs such a script as `sh <script>`.
        return shell_run("/bin/sh", None, memfd);
    }
    match shebang(content) {
        Some((interp, arg)) if is_shell(&interp) => shell_run(&interp, arg.as_deref(), memfd),
        Some((interp, arg)) => match env_shell(&interp, arg.as_deref(), script_path_env) {
            Some(shell) => shell_run(&shell, None, memfd),
            None => {
                let mut argv = vec![real.clone()];
                argv.extend(params.iter().cloned());
                Ok(Launch {
                    program: Exec::Fd(memfd),
                    argv,
                    how: format!("{interp} on the checked copy ($0 is /dev/fd/3)"),
                })
            }
        },
        None if content.starts_with(b"\x7fELF") => {
            let mut argv = vec![real];
            argv.extend(params.iter().cloned());
            Ok(Launch {
                program: Exec::Fd(memfd),
                argv,
                how: "binary from the checked copy".into(),
            })
        }
        // Executable text without #!: execve would say ENOEXEC; shells (and
        // the extension) run it with sh.
        None => shell_run("/bin/sh", None, memfd),
    }
}

/// Where a script's real path is given to it when `$0` cannot carry it.
pub const SCRIPT_PATH_VAR: &str = "QUIESCE_SCRIPT_PATH";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_forms() {
        assert_eq!(shebang(b"#!/bin/sh\n"), Some(("/bin/sh".into(), None)));
        assert_eq!(
            shebang(b"#! /bin/bash -eu\necho"),
            Some(("/bin/bash".into(), Some("-eu".into())))
        );
        assert_eq!(
            shebang(b"#!/usr/bin/env python3\n"),
            Some(("/usr/bin/env".into(), Some("python3".into())))
        );
        assert_eq!(shebang(b"echo hi\n"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }

    #[test]
    fn sealed_copy_cannot_be_written() {
        let fd = sealed_copy("t", b"abc").unwrap();
        let r = nix::unistd::write(&fd, b"x");
        assert!(r.is_err(), "a sealed copy accepted a write");
        let mut s = String::new();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let f = std::fs::File::open(format!("/proc/self/fd/{raw}")).unwrap();
        io::Read::read_to_string(&mut &f, &mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
