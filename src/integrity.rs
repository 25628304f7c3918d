//! Open-once trust checks (SPEC.md §4).
//!
//! Every file that decides what runs as root is opened once with
//! `O_PATH | O_NOFOLLOW` and checked on that descriptor: no check-then-reopen
//! of the path. Its content is read through `/proc/self/fd/N`, which names the
//! very inode that was checked. Every directory above it, on the path as given
//! and on the path with symbolic links resolved, must be owned by uid 0 and
//! not writable by group or others: then only root can change what the path
//! names, which is what lets a script later be executed by its path.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::Fix;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

/// What a file is trusted for; decides the mode rules of the §4 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// `VMSnapshotScriptPluginConfig.json`: 600 or 400, no execute bit.
    Config,
    /// Pre- or post-script: no group/other bits (700, 600, 500, 400).
    Script,
    /// Policy or plugin-host file: not group- or world-writable.
    Policy,
}

/// Why a file failed its trust check. The caller maps each variant to the
/// error-table row of the file's role (e.g. `NotFound` of the pre-script is
/// `Pre-ScriptNotFound`, `Insecure` of it `InsufficientPermissionforPre-Script`).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no path configured")]
    EmptyPath,
    #[error("{0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a regular file ({1})")]
    NotRegular(PathBuf, &'static str),
    #[error("{0} is a symbolic link; configure the real path")]
    Symlink(PathBuf),
    #[error("{path} is owned by uid {uid}, not root (uid 0)")]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{path} has mode {mode:04o}; {rule}")]
    BadMode {
        path: PathBuf,
        mode: u32,
        rule: &'static str,
    },
    #[error("directory {path} above {file} is owned by uid {uid}, not root (uid 0)")]
    DirNotRootOwned {
        path: PathBuf,
        file: PathBuf,
        uid: u32,
    },
    #[error("directory {path} above {file} has mode {mode:04o}; it must not be group- or world-writable (sticky included)")]
    DirWritable {
        path: PathBuf,
        file: PathBuf,
        mode: u32,
    },
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, io::Error),
    #[error("cannot inspect directory {0}: {1}")]
    Dir(PathBuf, io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
}

impl TrustError {
    /// Whether the failure means "not found" (else it is a permission failure).
    /// Fixed by the §4 table, never by the order the checks ran in.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TrustError::EmptyPath
                | TrustError::NotAbsolute(_)
                | TrustError::Missing(_)
                | TrustError::NotRegular(..)
        )
    }
}

impl TrustError {
    /// What the operator does about this failure of a file trusted as
    /// `role`. A file that does not exist has a fix only its caller knows
    /// (create a config, place a script, correct `--policy`): here
    /// [`Fix::Row`].
    pub fn fix(&self, role: FileRole) -> Fix {
        let mode = match role {
            FileRole::Config => "600",
            FileRole::Script => "700",
            FileRole::Policy => "go-w",
        };
        match self {
            TrustError::EmptyPath | TrustError::NotAbsolute(_) | TrustError::Missing(_) => Fix::Row,
            TrustError::NotRegular(p, _) => Fix::NotRegular(p.clone()),
            TrustError::Symlink(p) => Fix::Symlink(p.clone()),
            TrustError::NotRootOwned { path, .. } | TrustError::BadMode { path, .. } => {
                Fix::OwnerMode {
                    path: path.clone(),
                    mode,
                }
            }
            TrustError::DirNotRootOwned { path, .. } | TrustError::DirWritable { path, .. } => {
                Fix::Directory(path.clone())
            }
            TrustError::Open(_, e) | TrustError::Dir(_, e) | TrustError::Read(_, e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    && !nix::unistd::geteuid().is_root() =>
            {
                Fix::RunAsRoot
            }
            TrustError::Open(p, _) | TrustError::Dir(p, _) | TrustError::Read(p, _) => {
                Fix::Unreadable(p.clone())
            }
            TrustError::TooLarge { path, .. } => Fix::TooLarge(path.clone()),
        }
    }
}

/// A file that passed its trust check, with the descriptor it was checked on.
#[derive(Debug)]
pub struct CheckedFile {
    pub path: PathBuf,
    /// `O_PATH` descriptor of the checked inode; kept so execution and reads
    /// use the very file that was checked.
    pub fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
}

impl CheckedFile {
    /// Opens `path` once and checks it and every directory above it for `role`.
    pub fn open(path: &Path, role: FileRole) -> Result<CheckedFile, TrustError> {
        if path.as_os_str().is_empty() {
            return Err(TrustError::EmptyPath);
        }
        if !path.is_absolute() {
            return Err(TrustError::NotAbsolute(path.to_path_buf()));
        }
        // O_PATH: opening has no side effect even on a device or FIFO, and the
        // descriptor still supports fstat, reads via /proc/self/fd and execveat.
        let fd = match open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(raw) => raw,
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {
                return Err(TrustError::Missing(path.to_path_buf()))
            }
            Err(e) => return Err(TrustError::Open(path.to_path_buf(), e.into())),
        };
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let st =
            fstat(fd.as_raw_fd()).map_err(|e| TrustError::Open(path.to_path_buf(), e.into()))?;
        check_file_stat(path, &st, role)?;
        check_parents(path)?;
        Ok(CheckedFile {
            path: path.to_path_buf(),
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
        })
    }

    /// Whether the owner execute bit is set: such a script is executed
    /// directly (its `#!` honoured), others through `/bin/sh`.
    pub fn owner_executable(&self) -> bool {
        self.mode & 0o100 != 0
    }

    /// Opens the checked inode for reading, through its descriptor.
    pub fn reader(&self) -> Result<File, TrustError> {
        let proc_path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = open(
            proc_path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| TrustError::Read(self.path.clone(), e.into()))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // The reopened descriptor must name the checked inode (it always does
        // for /proc/self/fd, but a mismatch would be a reason to stop).
        let st = fstat(file.as_fd().as_raw_fd())
            .map_err(|e| TrustError::Read(self.path.clone(), e.into()))?;
        if st.st_dev != self.dev || st.st_ino != self.ino {
            return Err(TrustError::Read(
                self.path.clone(),
                io::Error::other("reopened descriptor names another file"),
            ));
        }
        Ok(file)
    }

    /// Reads the whole content, refusing more than `limit` bytes.
    pub fn read_limited(&self, limit: usize) -> Result<Vec<u8>, TrustError> {
        let mut buf = Vec::new();
        self.reader()?
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| TrustError::Read(self.path.clone(), e))?;
        if buf.len() > limit {
            return Err(TrustError::TooLarge {
                path: self.path.clone(),
                limit,
            });
        }
        Ok(buf)
    }

    /// SHA-256 of the checked inode's content, as 64 lowercase hex digits.
    pub fn sha256(&self) -> Result<String, TrustError> {
        let mut reader = self.reader()?;
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| TrustError::Read(self.path.clone(), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Whether `path` still names the checked (device, inode) and is not a
    /// symbolic link. The spawned child makes the same re-check, with a raw
    /// `fstatat` as its last step before executing a script by its path
    /// (supervise/spawn.rs); this is that rule for callers outside a child.
    pub fn still_names_checked_file(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) => !md.file_type().is_symlink() && md.dev() == self.dev && md.ino() == self.ino,
            Err(_) => false,
        }
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn file_type_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

fn check_file_stat(path: &Path, st: &FileStat, role: FileRole) -> Result<(), TrustError> {
    let fmt = st.st_mode & SFlag::S_IFMT.bits();
    if fmt == SFlag::S_IFLNK.bits() {
        // O_PATH|O_NOFOLLOW opens the link itself rather than failing.
        return Err(TrustError::Symlink(path.to_path_buf()));
    }
    if fmt != SFlag::S_IFREG.bits() {
        return Err(TrustError::NotRegular(
            path.to_path_buf(),
            file_type_name(st.st_mode),
        ));
    }
    if st.st_uid != 0 {
        return Err(TrustError::NotRootOwned {
            path: path.to_path_buf(),
            uid: st.st_uid,
        });
    }
    let mode = st.st_mode & 0o7777;
    let bad = match role {
        FileRole::Config if mode & 0o077 != 0 => {
            Some("only root may have permissions on it (600 or 400)")
        }
        FileRole::Config if mode & 0o111 != 0 => Some("it must not be executable (600 or 400)"),
        FileRole::Script if mode & 0o077 != 0 => {
            Some("only root may have permissions on it (700; 600/500 are accepted)")
        }
        FileRole::Policy if mode & 0o022 != 0 => Some("it must not be group- or world-writable"),
        _ => None,
    };
    match bad {
        Some(rule) => Err(TrustError::BadMode {
            path: path.to_path_buf(),
            mode,
            rule,
        }),
        None => Ok(()),
    }
}

/// The directories whose owner and mode decide what `file` names: every
/// ancestor of the path as written, and every ancestor of its parent with
/// symbolic links resolved (a link in the path is only as safe as the
/// directories on both sides of it).
fn parent_dirs(file: &Path) -> Result<BTreeSet<PathBuf>, TrustError> {
    let mut dirs = BTreeSet::new();
    let parent = file.parent().unwrap_or(Path::new("/"));
    let mut add_ancestors = |p: &Path| {
        let mut cur = PathBuf::new();
        for c in p.components() {
            match c {
                Component::RootDir => cur.push("/"),
                Component::Normal(n) => cur.push(n),
                Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Prefix(_) => {}
            }
            dirs.insert(cur.clone());
        }
    };
    add_ancestors(parent);
    match std::fs::canonicalize(parent) {
        Ok(real) => add_ancestors(&real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TrustError::Missing(file.to_path_buf()))
        }
        Err(e) => return Err(TrustError::Dir(parent.to_path_buf(), e)),
    }
    Ok(dirs)
}

/// Checks every directory above `file` (as written and with links resolved):
/// owner uid 0, not group- or world-writable. Public for other trusted
/// paths that are directories, such as the run directory.
pub fn check_parents(file: &Path) -> Result<(), TrustError> {
    for dir in parent_dirs(file)? {
        // stat follows links: a linked directory is judged by its target,
        // and the link itself by the directory holding it (also in the set).
        let md = std::fs::metadata(&dir).map_err(|e| TrustError::Dir(dir.clone(), e))?;
        if md.uid() != 0 {
            return Err(TrustError::DirNotRootOwned {
                path: dir,
                file: file.to_path_buf(),
                uid: md.uid(),
            });
        }
        // Sticky does not help: a world-writable sticky directory (like /tmp)
        // still lets anyone create a name in it before root does.
        if md.mode() & 0o022 != 0 {
            return Err(TrustError::DirWritable {
                path: dir,
                file: file.to_path_buf(),
                mode: md.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

/// Whether a path exists as a symbolic link (used to pick 302 vs 306 when a
/// dangling link is configured: a link is a permission failure per §4).
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_dirs_cover_lexical_chain() {
        let dirs = parent_dirs(Path::new("/usr/bin/true")).unwrap();
        assert!(dirs.contains(Path::new("/")));
        assert!(dirs.contains(Path::new("/usr")));
        assert!(dirs.contains(Path::new("/usr/bin")));
    }

    #[test]
    fn relative_and_empty_paths_are_not_found() {
        assert!(CheckedFile::open(Path::new(""), FileRole::Script)
            .unwrap_err()
            .is_not_found());
        assert!(CheckedFile::open(Path::new("etc/x"), FileRole::Script)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }
}
