//! Open-once trust checks (SPEC.md §4).
//!
//! Every file that decides what runs as root is opened once with
//! `O_PATH | O_NOFOLLOW` and checked on that descriptor: no check-then-reopen
//! of the path. Its content is read through `/proc/self/fd/N`, which names the
//! very inode that was checked. Every directory above it, on the path as given
//! and on the path with symbolic links resolved, must be owned by uid 0 and
//! not writable by group or others: then only root can change what the path
//! names, which is what lets a script later be executed by its path.
//!
//! A directory whose content decides what quiesce does (the run directory,
//! the state directory, the apps directory) is checked the same way, once,
//! on the descriptor everything in it is then reached through
//! ([`open_trusted_dir`]).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::Fix;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

/// Symbolic links followed to reach a program, as the kernel's path walk
/// allows (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// What a file is trusted for; decides the mode rules of the §4 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// `VMSnapshotScriptPluginConfig.json`: 600 or 400, no execute bit.
    Config,
    /// Pre- or post-script: no group/other bits (700, 600, 500, 400).
    Script,
    /// Policy or plugin-host file: not group- or world-writable.
    Policy,
    /// A program that runs as root on a script's behalf, its interpreter
    /// (SPEC §4): not group- or world-writable, and executable.
    Program,
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
    #[error("{0} has no execute bit; the kernel would refuse to run it (EACCES)")]
    NotExecutable(PathBuf),
    #[error("{0}: more than {MAX_SYMLINKS} symbolic links to follow (ELOOP)")]
    TooManyLinks(PathBuf),
}

impl TrustError {
    /// Whether the check failed because the runner ran out of file
    /// descriptors (EMFILE, ENFILE): then nothing is known about the file,
    /// and the failure is not the file's (issue 26).
    pub fn is_out_of_descriptors(&self) -> bool {
        match self {
            TrustError::Open(_, e) | TrustError::Dir(_, e) | TrustError::Read(_, e) => {
                crate::error::is_out_of_descriptors(e)
            }
            _ => false,
        }
    }

    /// Whether the failure means "not found" (else it is a permission failure).
    /// Fixed by the §4 table, never by the order the checks ran in.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TrustError::EmptyPath
                | TrustError::NotAbsolute(_)
                | TrustError::Missing(_)
                | TrustError::NotRegular(..)
                | TrustError::NotExecutable(_)
                | TrustError::TooManyLinks(_)
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
            FileRole::Program => "755",
        };
        match self {
            TrustError::EmptyPath | TrustError::NotAbsolute(_) | TrustError::Missing(_) => Fix::Row,
            TrustError::NotRegular(p, _) => Fix::NotRegular(p.clone()),
            TrustError::Symlink(p) | TrustError::TooManyLinks(p) => Fix::Symlink(p.clone()),
            TrustError::NotExecutable(path) => Fix::OwnerMode {
                path: path.clone(),
                mode,
            },
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

    /// Opens a program that runs as root on a script's behalf — its
    /// interpreter — following symbolic links the way `execve` does, and
    /// checks it: every link on the way is only as safe as the directories
    /// holding it, so each hop's directories are checked as written and
    /// resolved; the file it ends at must be a root-owned executable regular
    /// file, not group- or world-writable (SPEC §4). Returns the checked
    /// file, named by its path with every link resolved.
    pub fn open_program(path: &Path) -> Result<CheckedFile, TrustError> {
        if !path.is_absolute() {
            return Err(TrustError::NotAbsolute(path.to_path_buf()));
        }
        let mut hop = path.to_path_buf();
        for _ in 0..=MAX_SYMLINKS {
            check_parents(&hop)?;
            let md = match std::fs::symlink_metadata(&hop) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(TrustError::Missing(hop))
                }
                Err(e) => return Err(TrustError::Open(hop, e)),
            };
            if !md.file_type().is_symlink() {
                let real = std::fs::canonicalize(&hop).map_err(|e| TrustError::Open(hop, e))?;
                return CheckedFile::open(&real, FileRole::Program);
            }
            let target = std::fs::read_link(&hop).map_err(|e| TrustError::Open(hop.clone(), e))?;
            hop = hop.parent().unwrap_or(Path::new("/")).join(target);
        }
        Err(TrustError::TooManyLinks(path.to_path_buf()))
    }

    /// Whether the owner execute bit is set: such a script is executed
    /// directly (its `#!` honoured), others through `/bin/sh`.
    pub fn owner_executable(&self) -> bool {
        self.identity().owner_executable()
    }

    /// The first `limit` bytes (fewer when the file is shorter): what the
    /// kernel reads to choose how to run a program.
    pub fn read_head(&self, limit: usize) -> Result<Vec<u8>, TrustError> {
        let mut buf = Vec::with_capacity(limit);
        self.reader()?
            .take(limit as u64)
            .read_to_end(&mut buf)
            .map_err(|e| TrustError::Read(self.path.clone(), e))?;
        Ok(buf)
    }

    /// What the check established, without the descriptor.
    pub fn identity(&self) -> CheckedIdentity {
        CheckedIdentity {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            mode: self.mode,
            size: self.size,
        }
    }

    /// Closes the descriptor once what was needed was read through it,
    /// keeping what the check established.
    pub fn into_identity(self) -> CheckedIdentity {
        self.identity()
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

    /// See [`CheckedIdentity::still_names_checked_file`].
    pub fn still_names_checked_file(&self) -> bool {
        self.identity().still_names_checked_file()
    }
}

/// What a trust check established about a file, once its descriptor is
/// closed. A script's bytes are read once through the checked descriptor
/// and kept in memory; holding the descriptor for the rest of the run would
/// make a run's descriptors grow with its applications (issue 26: two per
/// application ran out at ~500 under a soft limit of 1024).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedIdentity {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
}

impl CheckedIdentity {
    /// Whether the owner execute bit is set: such a script is executed
    /// directly (its `#!` honoured), others through `/bin/sh`.
    pub fn owner_executable(&self) -> bool {
        self.mode & 0o100 != 0
    }

    /// Whether `path` still names the checked (device, inode) and is not a
    /// symbolic link. The spawned child makes the same re-check, with a raw
    /// `fstatat` as its last step before executing a script by its path
    /// (supervise/spawn/child.rs); this is that rule for callers outside a child.
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
        FileRole::Policy | FileRole::Program if mode & 0o022 != 0 => {
            Some("it must not be group- or world-writable")
        }
        _ => None,
    };
    match bad {
        Some(rule) => Err(TrustError::BadMode {
            path: path.to_path_buf(),
            mode,
            rule,
        }),
        // Root may execute a file with any execute bit, and none without.
        None if role == FileRole::Program && mode & 0o111 == 0 => {
            Err(TrustError::NotExecutable(path.to_path_buf()))
        }
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

/// Checks a directory a program is searched in (a PATH entry), for a
/// program `name` there: only root may be able to put `name` in it. An
/// existing directory must pass [`check_parents`] as written and resolved;
/// a missing one, the directory that would have to create it; a symbolic
/// link, the directories holding it and then its target.
pub fn check_search_dir(dir: &Path, name: &std::ffi::OsStr) -> Result<(), TrustError> {
    let mut d = dir.to_path_buf();
    for _ in 0..=MAX_SYMLINKS {
        match std::fs::symlink_metadata(&d) {
            Ok(md) if md.file_type().is_symlink() => {
                check_parents(&d)?;
                let target = std::fs::read_link(&d).map_err(|e| TrustError::Dir(d.clone(), e))?;
                d = d.parent().unwrap_or(Path::new("/")).join(target);
            }
            Ok(md) if md.is_dir() => return check_parents(&d.join(name)),
            // A file where a directory is named: nothing can be found in it.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Whoever may create it decides what it will hold.
                let Some(parent) = d.parent() else {
                    return Ok(());
                };
                let created = d.clone();
                d = parent.to_path_buf();
                if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                    return check_parents(&created);
                }
            }
            Err(e) => return Err(TrustError::Dir(d, e)),
        }
    }
    Err(TrustError::TooManyLinks(dir.to_path_buf()))
}

/// Why a directory that decides what quiesce does failed its trust check
/// ([`open_trusted_dir`]). Its text names the directory and the rule;
/// [`DirTrustError::rule`] is the rule alone, for a caller whose own
/// message already names the directory.
#[derive(Debug)]
pub enum DirTrustError {
    /// It is a symbolic link (`O_NOFOLLOW` refused it).
    Symlink(PathBuf),
    /// It exists, and is no directory (ENOTDIR).
    NotDirectory(PathBuf),
    /// It could not be opened, for another reason than the two above.
    Open(PathBuf, io::Error),
    /// `fstat` of the opened descriptor failed.
    Inspect(PathBuf, io::Error),
    NotRootOwned {
        path: PathBuf,
        uid: u32,
    },
    /// Group- or world-writable, sticky or not.
    Writable {
        path: PathBuf,
        mode: u32,
    },
    /// A directory above it, as written or with links resolved, failed
    /// [`check_parents`].
    Parent(TrustError),
}

impl DirTrustError {
    /// The rule that failed, without the directory's path.
    pub fn rule(&self) -> String {
        match self {
            DirTrustError::Symlink(_) => "it is a symbolic link".into(),
            DirTrustError::NotDirectory(_) => "it is not a directory".into(),
            DirTrustError::Open(_, e) => format!("cannot open it as a directory ({e})"),
            DirTrustError::Inspect(_, e) => format!("cannot inspect it ({e})"),
            DirTrustError::NotRootOwned { uid, .. } => {
                format!("it is owned by uid {uid}, not root (uid 0)")
            }
            DirTrustError::Writable { mode, .. } => {
                format!("it has mode {mode:04o}; it must not be group- or world-writable")
            }
            DirTrustError::Parent(e) => e.to_string(),
        }
    }

    /// What the operator does about it. A directory that cannot be opened
    /// or inspected is [`Fix::Unreadable`]; a caller that creates the
    /// directory has a better fix for that and maps those two itself.
    pub fn fix(&self) -> Fix {
        match self {
            DirTrustError::Symlink(p) | DirTrustError::NotDirectory(p) => {
                Fix::RealDirectory(p.clone())
            }
            DirTrustError::Open(p, _) | DirTrustError::Inspect(p, _) => Fix::Unreadable(p.clone()),
            DirTrustError::NotRootOwned { path, .. } | DirTrustError::Writable { path, .. } => {
                Fix::OwnerMode {
                    path: path.clone(),
                    mode: "700",
                }
            }
            DirTrustError::Parent(e) => e.fix(FileRole::Policy),
        }
    }
}

impl std::fmt::Display for DirTrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // It names its own directory, and the one it is above.
            DirTrustError::Parent(e) => e.fmt(f),
            DirTrustError::Symlink(p)
            | DirTrustError::NotDirectory(p)
            | DirTrustError::Open(p, _)
            | DirTrustError::Inspect(p, _)
            | DirTrustError::NotRootOwned { path: p, .. }
            | DirTrustError::Writable { path: p, .. } => {
                write!(f, "directory {}: {}", p.display(), self.rule())
            }
        }
    }
}

impl std::error::Error for DirTrustError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DirTrustError::Open(_, e) | DirTrustError::Inspect(_, e) => Some(e),
            DirTrustError::Parent(e) => Some(e),
            _ => None,
        }
    }
}

/// Opens a directory whose content decides what quiesce does — which
/// processes it ends, what it thaws, which scripts run as root — and checks
/// it on the descriptor: not a symbolic link (`O_NOFOLLOW`), a directory,
/// owned by uid 0, not group- or world-writable, and every directory above
/// it the same ([`check_parents`]). Then only root can change what is in
/// it. Returns the checked descriptor: what is read, listed or written in
/// the directory goes through it, never through the path again.
pub fn open_trusted_dir(path: &Path) -> Result<OwnedFd, DirTrustError> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // With O_DIRECTORY, Linux answers ENOTDIR for a link (even to a
            // directory), not the ELOOP of O_NOFOLLOW alone: lstat tells
            // the link from a file.
            Some(libc::ELOOP) => DirTrustError::Symlink(path.to_path_buf()),
            Some(libc::ENOTDIR) if is_symlink(path) => DirTrustError::Symlink(path.to_path_buf()),
            Some(libc::ENOTDIR) => DirTrustError::NotDirectory(path.to_path_buf()),
            _ => DirTrustError::Open(path.to_path_buf(), e),
        })?;
    let md = dir
        .metadata()
        .map_err(|e| DirTrustError::Inspect(path.to_path_buf(), e))?;
    if md.uid() != 0 {
        return Err(DirTrustError::NotRootOwned {
            path: path.to_path_buf(),
            uid: md.uid(),
        });
    }
    // Sticky does not help, as for the directories above (check_parents).
    if md.mode() & 0o022 != 0 {
        return Err(DirTrustError::Writable {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
        });
    }
    check_parents(path).map_err(DirTrustError::Parent)?;
    Ok(OwnedFd::from(dir))
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

    /// A directory under `/run` (root-owned, 0755 — never `/tmp`, which
    /// anyone may write), removed on drop; `None` when not root.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(tag: &str) -> Option<ScratchDir> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("SKIPPED: needs root (a root-owned directory under /run, chown to another uid); CI runs as root");
                return None;
            }
            let dir = PathBuf::from(format!("/run/quiesce-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::DirBuilder::new().create(&dir).unwrap();
            chmod(&dir, 0o700);
            Some(ScratchDir(dir))
        }

        fn mkdir(&self, name: &str, mode: u32) -> PathBuf {
            let d = self.0.join(name);
            std::fs::create_dir(&d).unwrap();
            chmod(&d, mode);
            d
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_root_owned_private_directory_is_trusted() {
        let Some(s) = ScratchDir::new("trusted") else {
            return;
        };
        for mode in [0o700, 0o755, 0o500] {
            let d = s.mkdir(&format!("d{mode:o}"), mode);
            open_trusted_dir(&d).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
    }

    #[test]
    fn a_group_or_world_writable_directory_is_refused() {
        let Some(s) = ScratchDir::new("writable") else {
            return;
        };
        for mode in [0o770, 0o775, 0o757, 0o1777] {
            let d = s.mkdir(&format!("d{mode:o}"), mode);
            let e = open_trusted_dir(&d).unwrap_err();
            assert!(
                matches!(e, DirTrustError::Writable { mode: m, .. } if m == mode),
                "{mode:o}: {e:?}"
            );
            let want = format!(
                "directory {}: it has mode {mode:04o}; it must not be group- or world-writable",
                d.display()
            );
            assert_eq!(e.to_string(), want);
            assert!(matches!(e.fix(), Fix::OwnerMode { path, mode: "700" } if path == d));
        }
    }

    #[test]
    fn a_directory_owned_by_another_uid_is_refused() {
        let Some(s) = ScratchDir::new("owner") else {
            return;
        };
        let d = s.mkdir("nobody", 0o700);
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&d, Some(nobody), None).unwrap();
        let e = open_trusted_dir(&d).unwrap_err();
        assert!(
            matches!(e, DirTrustError::NotRootOwned { uid: 65534, .. }),
            "{e:?}"
        );
        assert_eq!(e.rule(), "it is owned by uid 65534, not root (uid 0)");
        assert!(e.to_string().contains(&d.display().to_string()), "{e}");
    }

    #[test]
    fn a_symbolic_link_to_a_trusted_directory_is_refused() {
        let Some(s) = ScratchDir::new("link") else {
            return;
        };
        let real = s.mkdir("real", 0o700);
        let link = s.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = open_trusted_dir(&link).unwrap_err();
        assert!(
            matches!(&e, DirTrustError::Symlink(p) if *p == link),
            "{e:?}"
        );
        assert_eq!(e.rule(), "it is a symbolic link");
        assert!(matches!(e.fix(), Fix::RealDirectory(p) if p == link));
        let file = s.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let e = open_trusted_dir(&file).unwrap_err();
        assert!(matches!(e, DirTrustError::NotDirectory(_)), "{e:?}");
    }

    #[test]
    fn a_trusted_directory_under_a_writable_one_is_refused() {
        let Some(s) = ScratchDir::new("parent") else {
            return;
        };
        let open = s.mkdir("open", 0o777);
        let inner = s.mkdir("open/inner", 0o700);
        let e = open_trusted_dir(&inner).unwrap_err();
        assert!(
            matches!(&e, DirTrustError::Parent(TrustError::DirWritable { path, .. }) if *path == open),
            "{e:?}"
        );
        assert!(matches!(e.fix(), Fix::Directory(p) if p == open));
    }
}
