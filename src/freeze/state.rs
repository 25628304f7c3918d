//! Recovery state (SPEC.md §6.4 point 5): `/run/quiesce/state.json` records,
//! on tmpfs and never on a disk that may be frozen, which mounts a runner is
//! about to freeze and who that runner is. It is written before the first
//! freeze and removed after the last thaw; if a runner and its watchdog both
//! die in between, `quiesce thaw` and the start of the next run find it and
//! thaw what the dead runner left behind.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::Fix;
use crate::integrity::{self, DirTrustError};
use crate::replace::{replace_file, Fsync};
use serde::{Deserialize, Serialize};

use super::ioctl::thaw_fd;
use crate::supervise::procfs;

pub const DEFAULT_RUN_DIR: &str = "/run/quiesce";

/// One mount a window froze or was about to freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedMount {
    pub path: PathBuf,
    /// `major:minor` of the filesystem, checked before thawing so a mount
    /// point that now holds another filesystem is left alone.
    pub device: String,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowRecord {
    pub operation_id: String,
    pub runner_pid: i32,
    /// `/proc/PID/stat` start time: with the pid, identifies the runner
    /// across pid reuse.
    pub runner_start: u64,
    pub watchdog_pid: Option<i32>,
    /// Every mount the window planned to freeze, in freeze order.
    pub mounts: Vec<RecordedMount>,
    /// The file (in the run directory) holding the page the runner shares
    /// with its watchdog: state i says what became of mount i (attempting,
    /// frozen, thawed, someone else's). The window writes no file, but its
    /// stores to this tmpfs mapping survive both processes, so recovery
    /// thaws only what this run really froze or was freezing. Absent in
    /// records of older versions: then every recorded mount is thawed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
}

impl WindowRecord {
    /// Whether the runner that wrote this record is still the live process.
    pub fn runner_alive(&self) -> bool {
        procfs::read_stat(self.runner_pid)
            .is_some_and(|s| s.start == self.runner_start && !s.is_zombie())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create directory {0}: {1}")]
    RunDir(PathBuf, io::Error),
    #[error("directory {path} is not trusted: {rule}")]
    Untrusted {
        path: PathBuf,
        rule: String,
        /// What makes it trusted.
        fix: Fix,
    },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error("{0} is damaged: {1}")]
    Parse(PathBuf, String),
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, io::Error),
}

impl StateError {
    /// The run directory failed its trust check (SPEC §4: a file that
    /// decides what quiesce does, here which processes it ends).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, StateError::Untrusted { .. })
    }

    /// What the operator does about it. `option` names the directory's
    /// command-line option (`--run-dir`, `--state-dir`).
    pub fn fix(&self, option: &'static str) -> Fix {
        match self {
            StateError::Untrusted { fix, .. } => fix.clone(),
            StateError::RunDir(path, e) => {
                let denied = matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
                if denied && !nix::unistd::geteuid().is_root() {
                    Fix::RunAsRoot
                } else {
                    Fix::CreateDirectory {
                        path: path.clone(),
                        option,
                    }
                }
            }
            StateError::Write(p, _)
            | StateError::Read(p, _)
            | StateError::Parse(p, _)
            | StateError::Lock(p, _) => Fix::Unreadable(p.clone()),
        }
    }
}

/// The runner's directory on tmpfs (`/run/quiesce`, or `--run-dir`).
///
/// Its records decide what quiesce thaws and which processes it ends, so it
/// is checked like every trusted file, on every use: opened once as a
/// directory descriptor (`O_DIRECTORY | O_NOFOLLOW`), owned by uid 0 and not
/// writable by group or others, every directory above it root-owned and not
/// group- or world-writable; records are then read and written relative to
/// that descriptor, never by path again.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl Default for RunDir {
    fn default() -> Self {
        RunDir {
            path: DEFAULT_RUN_DIR.into(),
        }
    }
}

/// A run or state directory opened once through [`RunDir::open`], its trust
/// checks done then: several reads through one descriptor.
pub struct CheckedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The checked descriptor, for what is written in the directory.
impl AsFd for CheckedDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl CheckedDir {
    /// Reads `name`; `None` when absent.
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.path.join(name);
        let fd = match openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(StateError::Read(path, e.into())),
        };
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        let mut file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StateError::Read(path.clone(), e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Parse(path, e.to_string()))
    }

    /// Whether `name` exists in the directory.
    pub fn has(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }
}

/// An exclusive `flock` on a lock file of the run directory, released on drop.
pub struct RecordLock {
    _held: nix::fcntl::Flock<fs::File>,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// Creates the directory (0700, root only) if needed.
    pub fn ensure(&self) -> Result<(), StateError> {
        self.open_checked().map(drop)
    }

    /// Creates the directory if needed and checks it and its parents: the
    /// check every command that uses the directory runs before anything.
    pub fn check(&self) -> Result<(), StateError> {
        self.ensure()
    }

    /// The checked directory descriptor every record is reached through:
    /// created 0700 if missing, then [`integrity::open_trusted_dir`]. Not
    /// being able to create, open or inspect it is [`StateError::RunDir`]
    /// (its fix creates the directory); any other failure is untrusted.
    fn open_checked(&self) -> Result<OwnedFd, StateError> {
        match fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StateError::RunDir(self.path.clone(), e)),
        }
        integrity::open_trusted_dir(&self.path).map_err(|e| match e {
            DirTrustError::Open(path, e) | DirTrustError::Inspect(path, e) => {
                StateError::RunDir(path, e)
            }
            e => StateError::Untrusted {
                path: self.path.clone(),
                rule: e.rule(),
                fix: e.fix(),
            },
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn state_path(&self) -> PathBuf {
        self.file("state.json")
    }

    /// Writes `name` atomically, mode 0600, in the checked directory
    /// ([`replace_file`]). The file is synced, the directory is not: after
    /// a crash the name holds the old record or the new one. A writer whose
    /// record must outlive a crash (a pending post-script's) syncs the
    /// directory after.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        self.replace_json(name, value, Fsync::File)
    }

    /// [`RunDir::write_json`] without the fsync ([`Fsync::Nothing`]): what
    /// no one needs across a reboot.
    pub fn write_json_unsynced<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.replace_json(name, value, Fsync::Nothing)
    }

    /// [`RunDir::write_json`], and the directory synced after the rename:
    /// the record is the name's once this returns, crash or not.
    pub fn write_json_durable<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.replace_json(name, value, Fsync::FileAndDirectory)
    }

    fn replace_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        fsync: Fsync,
    ) -> Result<(), StateError> {
        let dir = self.open_checked()?;
        let body = serde_json::to_vec_pretty(value).expect("state serialises");
        replace_file(dir.as_fd(), name, &body, 0o600, fsync)
            .map_err(|e| StateError::Write(self.file(name), e))
    }

    /// Reads `name` through the checked directory; `None` when absent.
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        self.open()?.read_json(name)
    }

    /// The directory, opened and checked once, for several reads.
    pub fn open(&self) -> Result<CheckedDir, StateError> {
        Ok(CheckedDir {
            fd: self.open_checked()?,
            path: self.path.clone(),
        })
    }

    /// Holds an exclusive lock on `name` (created 0600 in the checked
    /// directory) until the returned guard is dropped: a read-modify-write
    /// of a record by concurrent runs must not lose what the other wrote.
    pub fn lock(&self, name: &str) -> Result<RecordLock, StateError> {
        let dir = self.open_checked()?;
        let path = self.file(name);
        let fd = openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| StateError::Lock(path.clone(), e.into()))?;
        // SAFETY: `openat` just returned this descriptor and nothing else owns it.
        let file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| StateError::Lock(path, e.into()))?;
        Ok(RecordLock { _held: held })
    }

    /// Locks the existing file `name` itself with an exclusive `flock`
    /// (blocking), creating nothing — so it works on a filesystem that is
    /// full, out of inodes or read-only. `None` when there is no such file.
    /// The lock is on the file the name names once it is held: a file
    /// renamed over the name meanwhile is locked in its turn.
    pub fn lock_existing(&self, name: &str) -> Result<Option<RecordLock>, StateError> {
        let dir = self.open_checked()?;
        let path = self.file(name);
        loop {
            let fd = match openat(
                Some(dir.as_raw_fd()),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(StateError::Lock(path, e.into())),
            };
            // SAFETY: `openat` just returned this descriptor and nothing else owns it.
            let file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| StateError::Lock(path.clone(), e.into()))?;
            let mine = held.metadata().map(|m| m.ino()).ok();
            let now = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            match now {
                Ok(st) if Some(st.st_ino) == mine => return Ok(Some(RecordLock { _held: held })),
                Err(Errno::ENOENT) => return Ok(None),
                _ => continue, // replaced while we waited: lock the new one
            }
        }
    }

    /// Removes `name`; the error when it could not (a read-only filesystem).
    pub fn try_remove(&self, name: &str) -> Result<(), StateError> {
        let dir = self.open_checked()?;
        match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(StateError::Write(self.file(name), e.into())),
        }
    }

    /// Whether `name` exists in the directory.
    pub fn has(&self, name: &str) -> bool {
        self.open().is_ok_and(|dir| dir.has(name))
    }

    /// Removes `name`, when the directory is still trusted.
    pub fn remove(&self, name: &str) {
        if let Ok(dir) = self.open_checked() {
            let _ = unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
        }
    }

    pub fn write_state(&self, record: &WindowRecord) -> Result<(), StateError> {
        self.write_json("state.json", record)
    }

    pub fn read_state(&self) -> Result<Option<WindowRecord>, StateError> {
        self.read_json("state.json")
    }

    pub fn clear_state(&self) {
        self.remove("state.json");
    }
}

/// What happened to one mount in a recovery or an emergency thaw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThawResult {
    pub path: PathBuf,
    pub device: String,
    pub outcome: ThawOutcome,
}

impl ThawResult {
    /// Thawed now, was not frozen, or was not ours to thaw.
    pub fn ok(&self) -> bool {
        self.outcome.ok()
    }
}

/// How one thaw ended. In the status JSON and the trail it is the text of
/// its `Display`: `thawed`, `not-frozen`, `device-changed (recorded …)`,
/// `skipped: …` or `error: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThawOutcome {
    Thawed,
    /// `FITHAW` answered EINVAL: it was not frozen.
    NotFrozen,
    /// Another filesystem is mounted there now: left alone.
    DeviceChanged {
        recorded: String,
    },
    /// The record says that run never froze it, thawed it since, or saw
    /// another tool freeze it: not ours to thaw.
    Skipped(&'static str),
    /// It could not be opened, examined or thawed.
    Failed(String),
}

impl ThawOutcome {
    /// Thawed now, was not frozen, or was not ours to thaw.
    pub fn ok(&self) -> bool {
        matches!(
            self,
            ThawOutcome::Thawed | ThawOutcome::NotFrozen | ThawOutcome::Skipped(_)
        )
    }
}

impl std::fmt::Display for ThawOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThawOutcome::Thawed => f.write_str("thawed"),
            ThawOutcome::NotFrozen => f.write_str("not-frozen"),
            ThawOutcome::DeviceChanged { recorded } => {
                write!(f, "device-changed (recorded {recorded})")
            }
            ThawOutcome::Skipped(why) => write!(f, "skipped: {why}"),
            ThawOutcome::Failed(why) => write!(f, "error: {why}"),
        }
    }
}

impl Serialize for ThawOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a recorded mount is not thawed, from its state in the page; `None`
/// when it must be thawed (attempting or frozen: ours, or becoming ours).
fn skip_reason(state: u8) -> Option<&'static str> {
    use super::watchdog::{ATTEMPTING, FROZEN, IDLE, NOT_OURS, THAWED};
    match state {
        ATTEMPTING | FROZEN => None,
        IDLE => Some("never frozen by that run"),
        THAWED => Some("already thawed by that run or its watchdog"),
        NOT_OURS => Some("frozen by another tool, not by that run"),
        _ => None,
    }
}

/// `major:minor` of a device number, as mountinfo writes it.
pub fn dev_string(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// Thaws one mount point. `expect_device` guards against thawing a different
/// filesystem mounted there since it was recorded.
pub fn thaw_path(path: &Path, expect_device: Option<&str>) -> ThawResult {
    let result = |device: String, outcome: ThawOutcome| ThawResult {
        path: path.to_path_buf(),
        device,
        outcome,
    };
    // Opening a directory read-only is harmless on a frozen filesystem.
    let dir = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(d) => d,
        Err(e) => {
            return result(
                expect_device.unwrap_or("?").into(),
                ThawOutcome::Failed(format!("cannot open: {e}")),
            )
        }
    };
    let device = match dir.metadata() {
        Ok(md) => dev_string(md.dev()),
        Err(e) => return result("?".into(), ThawOutcome::Failed(format!("cannot stat: {e}"))),
    };
    if let Some(want) = expect_device {
        if want != device {
            let recorded = want.to_string();
            return result(device, ThawOutcome::DeviceChanged { recorded });
        }
    }
    match thaw_fd(dir.as_raw_fd()) {
        Ok(()) => result(device, ThawOutcome::Thawed),
        Err(nix::errno::Errno::EINVAL) => result(device, ThawOutcome::NotFrozen),
        Err(e) => result(device, ThawOutcome::Failed(e.to_string())),
    }
}

/// What a recovery found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub record: WindowRecord,
    pub mounts: Vec<ThawResult>,
}

/// Removes the watchdog pages (`window-PID.page`) of runners that are gone
/// and whose window no record names: a run killed before its window left
/// its page behind (its watchdog was started before its scripts).
pub fn remove_stale_pages(run_dir: &RunDir, keep: Option<&str>) {
    let Ok(entries) = fs::read_dir(&run_dir.path) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("window-")
            .and_then(|n| n.strip_suffix(".page"))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if Some(name.as_str()) != keep && procfs::read_stat(pid).is_none() {
            run_dir.remove(&name);
        }
    }
}

/// If a dead runner left a record, thaws its mounts (newest first) and
/// removes the record. A record of a live runner is left alone and returned
/// as `Err` with that runner's pid.
pub fn recover(run_dir: &RunDir) -> Result<Option<Recovery>, RecoverError> {
    let record = match run_dir.read_state() {
        Ok(Some(r)) => r,
        Ok(None) => {
            remove_stale_pages(run_dir, None);
            return Ok(None);
        }
        Err(e) => return Err(RecoverError::State(e)),
    };
    if record.runner_alive() {
        return Err(RecoverError::RunnerAlive(record.runner_pid));
    }
    // What became of each mount. An unreadable page of a record that names
    // one: thaw everything recorded (leaving a filesystem frozen is worse).
    let states = record.page.as_ref().and_then(|name| {
        super::watchdog::SharedState::read_states(&run_dir.file(name), record.mounts.len()).ok()
    });
    let mounts: Vec<ThawResult> = record
        .mounts
        .iter()
        .enumerate()
        .rev()
        .map(
            |(i, m)| match states.as_ref().and_then(|s| skip_reason(s[i])) {
                Some(why) => ThawResult {
                    path: m.path.clone(),
                    device: m.device.clone(),
                    outcome: ThawOutcome::Skipped(why),
                },
                None => thaw_path(&m.path, Some(&m.device)),
            },
        )
        .collect();
    // The record goes only once every mount is known thawed: a failure is
    // retried by the next `quiesce thaw` or run, never forgotten.
    if mounts.iter().all(ThawResult::ok) {
        run_dir.clear_state();
        if let Some(name) = &record.page {
            run_dir.remove(name);
        }
    }
    remove_stale_pages(run_dir, record.page.as_deref());
    Ok(Some(Recovery { record, mounts }))
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0}")]
    State(StateError),
    #[error("the runner that recorded the freeze (pid {0}) is still alive; it thaws by its own deadline")]
    RunnerAlive(i32),
}

/// What a dead runner left frozen cannot be recovered: the freeze (or the
/// thaw) does not go ahead (`FsFreezeFailed`). A runner still alive inside
/// its window is waited for.
impl From<RecoverError> for crate::error::Problem {
    fn from(e: RecoverError) -> Self {
        let fix = match &e {
            RecoverError::State(s) => s.fix("--run-dir"),
            RecoverError::RunnerAlive(pid) => Fix::Wait(Some(*pid)),
        };
        crate::error::Problem::new(crate::error::ErrorCode::FsFreezeFailed, e.to_string())
            .with_fix(fix)
    }
}

#[cfg(test)]
mod thaw_outcome_tests {
    use super::ThawOutcome;

    /// The texts are the status JSON's and the trail's: stable.
    #[test]
    fn outcomes_read_as_before_and_only_failures_are_not_ok() {
        let cases = [
            (ThawOutcome::Thawed, "thawed", true),
            (ThawOutcome::NotFrozen, "not-frozen", true),
            (
                ThawOutcome::Skipped("never frozen by that run"),
                "skipped: never frozen by that run",
                true,
            ),
            (
                ThawOutcome::DeviceChanged {
                    recorded: "7:3".into(),
                },
                "device-changed (recorded 7:3)",
                false,
            ),
            (ThawOutcome::Failed("EIO".into()), "error: EIO", false),
        ];
        for (o, text, ok) in cases {
            assert_eq!(o.to_string(), text);
            assert_eq!(serde_json::to_value(&o).unwrap(), text);
            assert_eq!(o.ok(), ok, "{text}");
        }
    }
}
