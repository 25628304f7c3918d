//! One freeze at a time (SPEC.md §6.3).
//!
//! The runner locks `/run/quiesce/lock` and, when the Azure extension is
//! installed (its directory exists), the extension's own
//! `SafeFreezeLockFile`, so quiesce and the extension never freeze at the
//! same time. A held lock fails fast, naming the holder's pid.
//!
//! Why `fcntl(F_SETLK)` record locks: the extension takes its lock with
//! python's `fcntl.lockf`, which is a whole-file `F_SETLK`. On Linux
//! `flock(2)` locks and record locks do not see each other, so only a record
//! lock really excludes the extension; and only record locks report their
//! holder (`F_GETLK`).
//!
//! Record locks belong to the process, not to the descriptor, which the
//! caller must respect:
//! - closing *any* descriptor of a lock file in this process drops the lock,
//!   so nothing else may open these files; a second [`RunLock::acquire`] in
//!   the same process is refused instead of silently "succeeding";
//! - a forked child (the watchdog) does not inherit them.
//!
//! Lock files are never deleted: deleting a locked file lets the next
//! process lock a new inode while the old one is still held.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

/// quiesce's runtime directory (tmpfs: never a disk that gets frozen).
pub const RUN_DIR: &str = "/run/quiesce";
/// The lock file's name in [`RUN_DIR`].
pub const RUN_LOCK_NAME: &str = "lock";
/// The Azure extension's lock directory; quiesce never creates it.
pub const EXTENSION_LOCK_DIR: &str = "/etc/azure/MicrosoftRecoverySvcsSafeFreezeLock";
/// The extension's lock file's name in [`EXTENSION_LOCK_DIR`].
pub const EXTENSION_LOCK_NAME: &str = "SafeFreezeLockFile";

// Lock files this process holds. Guarded before any open, because opening
// and closing a second descriptor of a held file would drop its lock.
static HELD_HERE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Where the two locks live; tests point them at scratch directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPaths {
    /// Created (mode 0700) when missing.
    pub run_dir: PathBuf,
    /// Used only when it exists; never created.
    pub extension_dir: PathBuf,
}

impl Default for LockPaths {
    fn default() -> Self {
        LockPaths {
            run_dir: PathBuf::from(RUN_DIR),
            extension_dir: PathBuf::from(EXTENSION_LOCK_DIR),
        }
    }
}

impl LockPaths {
    pub fn run_lock(&self) -> PathBuf {
        self.run_dir.join(RUN_LOCK_NAME)
    }

    pub fn extension_lock(&self) -> PathBuf {
        self.extension_dir.join(EXTENSION_LOCK_NAME)
    }
}

/// Why the lock could not be taken. Every variant names the path.
#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot create lock directory {0}: {1}")]
    CreateDir(PathBuf, io::Error),
    #[error("cannot inspect lock directory {0}: {1}")]
    StatDir(PathBuf, io::Error),
    #[error("lock directory {path} is unsafe: {why}")]
    UnsafeDir { path: PathBuf, why: &'static str },
    #[error("cannot open lock file {0}: {1}")]
    Open(PathBuf, io::Error),
    #[error("cannot inspect lock file {0}: {1}")]
    Stat(PathBuf, io::Error),
    #[error("lock file {0} is not a regular file")]
    NotRegularFile(PathBuf),
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, io::Error),
    #[error("{}", held_message(.path, *.pid))]
    Held { path: PathBuf, pid: Option<i32> },
    #[error("lock {0} is already held by this process")]
    HeldByThisProcess(PathBuf),
}

impl LockError {
    /// What the operator does about it.
    pub fn fix(&self) -> crate::error::Fix {
        use crate::error::Fix;
        match self {
            LockError::Held { pid, .. } => Fix::Wait(*pid),
            LockError::HeldByThisProcess(_) => Fix::Row,
            LockError::CreateDir(_, e) | LockError::Open(_, e) | LockError::Lock(_, e)
                if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
                    && !nix::unistd::geteuid().is_root() =>
            {
                Fix::RunAsRoot
            }
            LockError::UnsafeDir { path, .. } => Fix::OwnerMode {
                path: path.clone(),
                mode: "go-w",
            },
            LockError::NotRegularFile(p) => Fix::NotRegular(p.clone()),
            LockError::CreateDir(p, _)
            | LockError::StatDir(p, _)
            | LockError::Open(p, _)
            | LockError::Stat(p, _)
            | LockError::Lock(p, _) => Fix::Unreadable(p.clone()),
        }
    }
}

/// A lock that cannot be taken refuses the freeze (SPEC.md §6.3):
/// `FsFreezeFailed`, with the action for what failed.
impl From<LockError> for crate::error::Problem {
    fn from(e: LockError) -> Self {
        let fix = e.fix();
        crate::error::Problem::new(crate::error::ErrorCode::FsFreezeFailed, e.to_string())
            .with_fix(fix)
    }
}

fn held_message(path: &Path, pid: Option<i32>) -> String {
    let holder = match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another process".to_string(),
    };
    format!(
        "lock {} is held by {holder} (another quiesce run or the Azure extension); wait for it to finish",
        path.display()
    )
}

/// Both locks, held until dropped. Keep it alive for the whole freeze
/// window and until everything is thawed.
#[derive(Debug)]
pub struct RunLock {
    run: HeldLock,
    extension: Option<HeldLock>,
}

#[derive(Debug)]
struct HeldLock {
    // Declared before `registration`: fields drop in order, so the
    // descriptor (and with it the lock) is gone before another acquire in
    // this process may open the file.
    file: File,
    registration: Registration,
}

#[derive(Debug)]
struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut held = HELD_HERE.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|p| *p != self.0);
    }
}

impl RunLock {
    /// Takes quiesce's lock, then the extension's when its directory exists.
    /// Never blocks: a held lock is [`LockError::Held`] with the holder's pid
    /// when the kernel reports it. On any failure nothing stays locked.
    pub fn acquire(paths: &LockPaths) -> Result<RunLock, LockError> {
        let run_path = paths.run_lock();
        let extension_path =
            extension_dir_exists(&paths.extension_dir)?.then(|| paths.extension_lock());

        // Held across the opens so two threads cannot both get past it.
        let mut held = HELD_HERE.lock().unwrap_or_else(|e| e.into_inner());
        for path in std::iter::once(&run_path).chain(extension_path.as_ref()) {
            if held.contains(path) {
                return Err(LockError::HeldByThisProcess(path.clone()));
            }
        }

        ensure_run_dir(&paths.run_dir)?;
        let run_file = open_lock_file(&run_path)?;
        lock_whole_file(&run_file, &run_path)?;
        let extension = match extension_path {
            Some(path) => {
                // Failing here drops `run_file`, releasing quiesce's lock.
                let file = open_lock_file(&path)?;
                lock_whole_file(&file, &path)?;
                Some((file, path))
            }
            None => None,
        };

        held.push(run_path.clone());
        let run = HeldLock {
            file: run_file,
            registration: Registration(run_path),
        };
        let extension = extension.map(|(file, path)| {
            held.push(path.clone());
            HeldLock {
                file,
                registration: Registration(path),
            }
        });
        Ok(RunLock { run, extension })
    }

    pub fn run_lock_path(&self) -> &Path {
        &self.run.registration.0
    }

    /// `None` when the extension is not installed.
    pub fn extension_lock_path(&self) -> Option<&Path> {
        self.extension.as_ref().map(|l| l.registration.0.as_path())
    }

    /// The descriptor holding quiesce's lock (close-on-exec).
    pub fn run_lock_fd(&self) -> BorrowedFd<'_> {
        self.run.file.as_fd()
    }

    /// The descriptor holding the extension's lock (close-on-exec).
    pub fn extension_lock_fd(&self) -> Option<BorrowedFd<'_>> {
        self.extension.as_ref().map(|l| l.file.as_fd())
    }
}

fn extension_dir_exists(dir: &Path) -> Result<bool, LockError> {
    // Follows a symbolic link: the extension uses the path as it is.
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(true),
        // Fail closed: the extension cannot work either, and running anyway
        // could freeze alongside it.
        Ok(_) => Err(LockError::UnsafeDir {
            path: dir.to_path_buf(),
            why: "not a directory",
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LockError::StatDir(dir.to_path_buf(), e)),
    }
}

// The run directory also holds the recovery state (§6.4): it must be ours
// alone, or someone else could swap the lock file between runs.
fn ensure_run_dir(dir: &Path) -> Result<(), LockError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LockError::CreateDir(dir.to_path_buf(), e)),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| LockError::StatDir(dir.to_path_buf(), e))?;
    let unsafe_dir = |why| LockError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("not a directory"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_dir("not owned by the user running quiesce"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir("writable by group or others"));
    }
    Ok(())
}

fn open_lock_file(path: &Path) -> Result<File, LockError> {
    // O_RDWR: F_WRLCK needs a descriptor open for writing. No O_TRUNC: the
    // extension's file is the extension's. O_NOFOLLOW: a symbolic link
    // planted there must not make us create or lock another file. std adds
    // O_CLOEXEC, so scripts never inherit the lock descriptor.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| LockError::Open(path.to_path_buf(), e))?;
    let meta = file
        .metadata()
        .map_err(|e| LockError::Stat(path.to_path_buf(), e))?;
    if !meta.file_type().is_file() {
        return Err(LockError::NotRegularFile(path.to_path_buf()));
    }
    Ok(file)
}

// The whole file, as python's fcntl.lockf(fd, LOCK_EX) locks it (start 0,
// length 0 = to the end and beyond).
fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

fn lock_whole_file(file: &File, path: &Path) -> Result<(), LockError> {
    let fd = file.as_raw_fd();
    // A holder can let go between our F_SETLK and F_GETLK; then try again,
    // a few times, without ever waiting.
    for _ in 0..3 {
        match fcntl(fd, FcntlArg::F_SETLK(&whole_file(libc::F_WRLCK))) {
            Ok(_) => return Ok(()),
            Err(Errno::EACCES | Errno::EAGAIN) => {
                let mut probe = whole_file(libc::F_WRLCK);
                match fcntl(fd, FcntlArg::F_GETLK(&mut probe)) {
                    Ok(_) if probe.l_type == libc::F_UNLCK as libc::c_short => continue,
                    // -1: an open-file-description lock; 0: a holder in
                    // another pid namespace. Neither names a pid we can show.
                    Ok(_) => {
                        return Err(LockError::Held {
                            path: path.to_path_buf(),
                            pid: (probe.l_pid > 0).then_some(probe.l_pid),
                        })
                    }
                    Err(_) => break,
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(LockError::Lock(path.to_path_buf(), io::Error::from(e))),
        }
    }
    Err(LockError::Held {
        path: path.to_path_buf(),
        pid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory under /run (tmpfs, like the real one), removed on
    /// drop; under the temp dir when /run is not writable (not root).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "quiesce-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            for base in [PathBuf::from("/run"), std::env::temp_dir()] {
                let dir = base.join(&name);
                if DirBuilder::new().mode(0o700).create(&dir).is_ok() {
                    return Scratch(dir);
                }
            }
            panic!("cannot create a scratch directory");
        }

        fn paths(&self) -> LockPaths {
            LockPaths {
                run_dir: self.0.join("quiesce"),
                extension_dir: self.0.join("MicrosoftRecoverySvcsSafeFreezeLock"),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn have_python() -> bool {
        let ok = Command::new("python3")
            .arg("-c")
            .arg("import fcntl")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipped: python3 is needed to hold a lock the way the extension does");
        }
        ok
    }

    /// A process holding `path` with python's fcntl.lockf, exactly as the
    /// Azure extension does; killed on drop.
    struct PythonHolder {
        child: Child,
        pid: i32,
    }

    impl PythonHolder {
        fn hold(path: &Path) -> PythonHolder {
            let mut child = Command::new("python3")
                .arg("-c")
                .arg(
                    "import fcntl, os, sys, time\n\
                     f = open(sys.argv[1], 'a')\n\
                     fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                     print(os.getpid(), flush=True)\n\
                     time.sleep(120)\n",
                )
                .arg(path)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn python3");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let pid = line.trim().parse().expect("holder printed its pid");
            PythonHolder { child, pid }
        }
    }

    impl Drop for PythonHolder {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Whether another process (python, like the extension) can lock `path`
    /// right now.
    fn lockable_by_other_process(path: &Path) -> bool {
        Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl, sys\n\
                 f = open(sys.argv[1], 'a')\n\
                 fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
            )
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn creates_the_run_dir_and_lock_file_and_keeps_them() {
        let scratch = Scratch::new();
        let paths = scratch.paths();
        let lock = RunLock::acquire(&paths).unwrap();
        assert_eq!(lock.run_lock_path(), paths.run_lock());
        assert_eq!(mode(&paths.run_dir), 0o700);
        assert_eq!(mode(&paths.run_lock()), 0o600);
        // The extension is not installed: its directory is not created.
        assert!(lock.extension_lock_path().is_none());
        assert!(lock.extension_lock_fd().is_none());
        assert!(!paths.extension_dir.exists());
        drop(lock);
        assert!(paths.run_lock().exists(), "lock file is never deleted");
        // Released: it can be taken again.
        RunLock::acquire(&paths).unwrap();
    }

    #[test]
    fn second_acquire_in_the_same_process_is_refused() {
        let scratch = Scratch::new();
        let paths = scratch.paths();
        let _lock = RunLock::acquire(&paths).unwrap();
        match RunLock::acquire(&paths) {
            Err(LockError::HeldByThisProcess(p)) => assert_eq!(p, paths.run_lock()),
            other => panic!("expected HeldByThisProcess, got {other:?}"),
        }
    }

    #[test]
    fn excludes_the_extension_and_releases_on_drop() {
        if !have_python() {
            return;
        }
        let scratch = Scratch::new();
        let paths = scratch.paths();
        std::fs::create_dir(&paths.extension_dir).unwrap();
        let lock = RunLock::acquire(&paths).unwrap();
        assert_eq!(
            lock.extension_lock_path(),
            Some(paths.extension_lock().as_path())
        );
        assert!(paths.extension_lock().is_file());
        assert!(!lockable_by_other_process(&paths.run_lock()));
        assert!(!lockable_by_other_process(&paths.extension_lock()));
        drop(lock);
        assert!(lockable_by_other_process(&paths.run_lock()));
        assert!(lockable_by_other_process(&paths.extension_lock()));
        assert!(paths.extension_lock().exists(), "never deleted");
    }

    #[test]
    fn held_run_lock_fails_fast_with_the_holders_pid() {
        if !have_python() {
            return;
        }
        let scratch = Scratch::new();
        let paths = scratch.paths();
        drop(RunLock::acquire(&paths).unwrap());
        let holder = PythonHolder::hold(&paths.run_lock());
        let err = RunLock::acquire(&paths).unwrap_err();
        match &err {
            LockError::Held { path, pid } => {
                assert_eq!(*path, paths.run_lock());
                assert_eq!(*pid, Some(holder.pid));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "lock {} is held by pid {} (another quiesce run or the Azure extension); wait for it to finish",
                paths.run_lock().display(),
                holder.pid
            )
        );
    }

    #[test]
    fn held_extension_lock_fails_and_leaves_nothing_locked() {
        if !have_python() {
            return;
        }
        let scratch = Scratch::new();
        let paths = scratch.paths();
        std::fs::create_dir(&paths.extension_dir).unwrap();
        std::fs::write(paths.extension_lock(), b"").unwrap();
        let holder = PythonHolder::hold(&paths.extension_lock());
        match RunLock::acquire(&paths) {
            Err(LockError::Held { path, pid }) => {
                assert_eq!(path, paths.extension_lock());
                assert_eq!(pid, Some(holder.pid));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(
            lockable_by_other_process(&paths.run_lock()),
            "quiesce's own lock was released after the failure"
        );
        drop(holder);
        RunLock::acquire(&paths).unwrap();
    }

    #[test]
    fn refuses_a_symlink_as_lock_file() {
        let scratch = Scratch::new();
        let paths = scratch.paths();
        std::fs::create_dir(&paths.run_dir).unwrap();
        std::fs::set_permissions(&paths.run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = scratch.0.join("target");
        std::os::unix::fs::symlink(&target, paths.run_lock()).unwrap();
        match RunLock::acquire(&paths) {
            Err(LockError::Open(p, e)) => {
                assert_eq!(p, paths.run_lock());
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
            }
            other => panic!("expected Open, got {other:?}"),
        }
        assert!(!target.exists(), "the link's target was not created");
    }

    #[test]
    fn refuses_a_run_dir_others_can_write() {
        let scratch = Scratch::new();
        let paths = scratch.paths();
        std::fs::create_dir(&paths.run_dir).unwrap();
        std::fs::set_permissions(&paths.run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            RunLock::acquire(&paths),
            Err(LockError::UnsafeDir {
                why: "writable by group or others",
                ..
            })
        ));
        assert!(!paths.run_lock().exists());
    }
}
