//! Pending post-scripts (SPEC.md §6.6): the durable record that a
//! pre-script has started and its post-script has not yet run.
//!
//! A record is written and synced under the state directory (`--state-dir`,
//! default `/var/lib/quiesce`) before the pre-script starts — never inside
//! the freeze window — and removed once the post-script has run. Whoever
//! finds a record whose post-script is due (the guard of a dead runner,
//! `quiesce recover` at boot, the start of the next run) runs it; a lock per
//! record, held while the post-script runs, and a re-read of the record under
//! that lock make each pending post-script run exactly once however many of
//! them race.
//!
//! The state directory decides which scripts run as root, so it is trusted
//! like the run directory ([`RunDir`]): root-owned, not group- or
//! world-writable, every parent too, reached through a checked directory
//! descriptor; records are written with `O_EXCL` temporaries and `rename`.
//! A record carries a seal (the SHA-256 of its own fields), so a truncated
//! or edited record is reported and kept, never acted on.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Problem};
use crate::freeze::state::{CheckedDir, RecordLock, RunDir, StateError};
use crate::supervise::procfs;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/quiesce";
/// `--post-due` default: the extension's 1800 s cap on a script phase plus
/// the 60 s freeze maximum — a bridge-mode `post` later than that is not
/// coming.
pub const DEFAULT_POST_DUE_SECS: u64 = 1800 + 60;
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
const PREFIX: &str = "pending-post-";
const SUFFIX: &str = ".json";
const VERSION: u32 = 1;

/// Where pending post-scripts are recorded, and when a bridge-mode post is
/// due.
#[derive(Debug, Clone)]
pub struct PendingOptions {
    pub state_dir: RunDir,
    /// `--post-due`: after a separate `quiesce pre`, how long the `post`
    /// call may take to come before recovery runs the post-script.
    pub post_due: Duration,
    /// The run directory (tmpfs): where a record whose post-script ran but
    /// which could not be removed (the state directory went read-only) is
    /// marked settled, so that it never runs again as a recovery.
    pub run_dir: RunDir,
}

impl Default for PendingOptions {
    fn default() -> Self {
        PendingOptions {
            state_dir: RunDir::new(DEFAULT_STATE_DIR),
            post_due: Duration::from_secs(DEFAULT_POST_DUE_SECS),
            run_dir: RunDir::default(),
        }
    }
}

/// The name of the mark of a record that is settled but not yet removed.
fn settled_name(record: &str) -> String {
    format!("settled-{record}")
}

/// The name of the tombstone a record awaiting a separate `post` leaves in
/// the state directory when its post-script has run.
fn tombstone_name(record: &str) -> String {
    format!("done-{record}")
}
const TOMBSTONE_PREFIX: &str = "done-";

/// A separate `pre`'s post-script has run (by its `post`, or by a recovery
/// once it was due): the `post` calls that still come for that `pre` — a
/// late one, one racing it — find this and run it no second time (SPEC
/// §6.6: one `pre`, one post-script run, however many `post` calls come).
/// Kept until the next pre-script of the same config starts (a new
/// operation), or for a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    pub operation_id: String,
    pub app_index: usize,
    pub config: PathBuf,
    /// `post`, or the recovery (`post-overdue`, `reboot`, `runner-died`).
    pub settled_by: String,
    pub settled_unix: u64,
}

/// How long a tombstone is kept when no new pre-script of its config starts.
const TOMBSTONE_KEEP_SECS: u64 = 24 * 3600;

/// Who is expected to run the post-script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Awaits {
    /// The runner that wrote the record (a `snapshot`, or a `pre` whose
    /// pre-script is still running): due as soon as that runner is gone.
    Runner,
    /// A separate `quiesce post` (bridge mode, cron) after a finished `pre`:
    /// due at `dueUnix`, or at once after a reboot.
    PostCommand,
}

/// One pending post-script: the content of `pending-post-OPID.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingPost {
    pub version: u32,
    pub operation_id: String,
    /// The run that wrote it (`snapshot`, `pre`).
    pub operation: String,
    /// The application's name (SPEC §3.1).
    pub application: Option<String>,
    /// Its place in application order: a dead runner's post-scripts are run
    /// in reverse order. 0 for a single application (and older records).
    #[serde(default)]
    pub app_index: usize,
    pub config: PathBuf,
    pub config_sha256: String,
    pub host_config: PathBuf,
    pub post_script: PathBuf,
    pub post_sha256: String,
    /// The run directory of that run: its pre-script holders are there.
    pub run_dir: PathBuf,
    pub runner_pid: i32,
    /// `/proc/PID/stat` start time: with the pid, the runner across reuse.
    pub runner_start: u64,
    pub boot_id: String,
    pub created_unix: u64,
    pub post_due_secs: u64,
    pub awaits: Awaits,
    /// When a [`Awaits::PostCommand`] record becomes due.
    pub due_unix: Option<u64>,
    /// How many recoveries of it ran and failed; the next one waits until
    /// `retry_unix` (backoff), so a database that is still down is asked
    /// again later, until it works or an operator removes the record.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The post guard of the run that wrote it (pid and start time): after
    /// a separate `pre` it waits for the due time; the `post` that settles
    /// the last record of that operation ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<(i32, u64)>,
    /// SHA-256 of the record with an empty seal.
    #[serde(default)]
    pub seal: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The wait after the `n`-th failed recovery: 15 s, doubling, at most 10 min.
pub fn backoff(n: u32) -> u64 {
    if crate::fault::active("short-backoff") {
        return 1; // the suite's retries, without its minutes
    }
    (15u64 << n.saturating_sub(1).min(6)).min(600)
}

/// Why a pending post-script is run now; the script's `QUIESCE_RECOVERY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// The runner died (SIGKILL, OOM, a crash) between pre and post.
    RunnerDied,
    /// The machine rebooted since the pre-script started.
    Reboot,
    /// A separate `quiesce pre` finished and no `quiesce post` came by
    /// `--post-due`.
    PostOverdue,
}

impl Recovery {
    pub fn name(self) -> &'static str {
        match self {
            Recovery::RunnerDied => "runner-died",
            Recovery::Reboot => "reboot",
            Recovery::PostOverdue => "post-overdue",
        }
    }
}

/// What the due rule says about a record now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Now(Recovery),
    /// Not due: why (the runner is alive; the `post` call has until …).
    NotYet(String),
}

impl PendingPost {
    /// The "is it due" rule: after a reboot, at once; a runner's record, once
    /// that runner is gone; a bridge-mode record, once `dueUnix` has passed.
    pub fn due(&self, boot_id: &str, now_unix: u64) -> Due {
        if let Some(at) = self.retry_unix.filter(|&at| at > now_unix) {
            return Due::NotYet(format!(
                "its post-script failed {} time(s) (last: {}); retried in {} s",
                self.failures,
                self.last_error.as_deref().unwrap_or("?"),
                at - now_unix
            ));
        }
        if self.boot_id != boot_id {
            return Due::Now(Recovery::Reboot);
        }
        match self.awaits {
            Awaits::Runner if self.runner_alive() => Due::NotYet(format!(
                "runner pid {} is alive and runs it itself",
                self.runner_pid
            )),
            Awaits::Runner => Due::Now(Recovery::RunnerDied),
            Awaits::PostCommand => {
                let due = self
                    .due_unix
                    .unwrap_or(self.created_unix + self.post_due_secs);
                if now_unix >= due {
                    Due::Now(Recovery::PostOverdue)
                } else {
                    Due::NotYet(format!(
                        "waiting for `quiesce post` for {} more s (--post-due)",
                        due - now_unix
                    ))
                }
            }
        }
    }

    fn runner_alive(&self) -> bool {
        procfs::read_stat(self.runner_pid)
            .is_some_and(|s| s.start == self.runner_start && !s.is_zombie())
    }

    /// The record's name in the state directory.
    pub fn name(&self) -> String {
        record_name(&self.operation_id, self.app_index)
    }

    fn compute_seal(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut unsealed = self.clone();
        unsealed.seal = String::new();
        let body = serde_json::to_vec(&unsealed).expect("record serialises");
        crate::integrity::hex(&Sha256::digest(&body))
    }

    /// Age in seconds at `now_unix`.
    pub fn age(&self, now_unix: u64) -> u64 {
        now_unix.saturating_sub(self.created_unix)
    }
}

/// What is known of the runner that writes a record.
#[derive(Debug, Clone)]
pub struct Writer {
    pub operation: String,
    pub operation_id: String,
    pub application: Option<String>,
    pub app_index: usize,
    pub config: PathBuf,
    pub config_sha256: String,
    pub host_config: PathBuf,
    pub post_script: PathBuf,
    pub post_sha256: String,
    pub run_dir: PathBuf,
    /// This run's post guard (pid, start time), when it has one.
    pub guard: Option<(i32, u64)>,
}

/// The mark in the run directory that exists from right before a record is
/// written until its pre-script's child is about to exec: a runner killed
/// in between leaves it, and the recovery knows that pre-script never
/// started (so its post-script must not run).
pub fn unstarted_name(record: &str) -> String {
    format!("unstarted-{record}")
}

/// `pending-post-OPID.json` for the first application (the name a single
/// application's record always had), `pending-post-OPID.N.json` for the
/// N-th (0-based) of several.
pub fn record_name(operation_id: &str, app_index: usize) -> String {
    if app_index == 0 {
        format!("{PREFIX}{operation_id}{SUFFIX}")
    } else {
        format!("{PREFIX}{operation_id}.{app_index}{SUFFIX}")
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): a record of another
/// boot is due at once.
pub fn boot_id() -> String {
    fs::read_to_string(BOOT_ID_PATH)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A record that could not be trusted: kept for the operator.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub name: String,
    pub why: String,
}

/// One entry of the state directory.
#[derive(Debug, Clone)]
pub enum Entry {
    Record(Box<PendingPost>),
    Damaged(Damaged),
    /// Its post-script ran, but the record could not be removed (the state
    /// directory is read-only): it never runs again; why it is still there.
    Settled(Damaged),
}

/// The state directory failed its trust check, or cannot be created: 304,
/// naming it; nothing is run.
pub fn untrusted(e: &StateError) -> Problem {
    let cause = match e {
        StateError::RunDir(_, io)
        | StateError::Write(_, io)
        | StateError::Read(_, io)
        | StateError::Lock(_, io) => Some(io),
        _ => None,
    };
    crate::error::problem_or_out_of_descriptors(
        ErrorCode::IncorrectPluginhostFile,
        format!("state directory: {e}; nothing was run"),
        cause,
    )
    .with_fix(e.fix("--state-dir"))
}

/// The marker a run leaves in the state directory: the filesystem it was
/// created on (`statfs` f_fsid), so that `recover` can tell the directory
/// from an empty one on the filesystem underneath a mount not yet made.
const FS_MARKER: &str = ".filesystem";

/// The filesystem id of `path` (`statfs` f_fsid, hex): stable across
/// boots for ext4, xfs and btrfs (derived from their UUID).
fn fs_id(path: &Path) -> Option<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a zeroed statfs we own; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // SAFETY: fsid_t is two ints, read as bytes.
    let raw: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// The mount point of a filesystem `fstab` puts at or above `path` that is
/// not mounted now, with its device: the boot has not mounted it yet.
fn unmounted_above(path: &Path, fstab: &str, mountinfo: &str) -> Option<(PathBuf, String)> {
    let mounted: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect();
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, point, opts) = (*f.first()?, *f.get(1)?, f.get(3).copied().unwrap_or(""));
            let point = PathBuf::from(point.replace("\\040", " "));
            (point.is_absolute()
                && point != Path::new("/")
                && !opts.split(',').any(|o| o == "noauto"))
            .then(|| (point, dev.to_string()))
        })
        .filter(|(point, _)| path.starts_with(point) && !mounted.contains(point))
        .max_by_key(|(point, _)| point.components().count())
}

impl PendingOptions {
    /// Creates the state directory (0700) if needed and checks it.
    pub fn check(&self) -> Result<(), Problem> {
        self.state_dir.check().map_err(|e| untrusted(&e))
    }

    /// For `recover`: the state directory, which it never creates (at boot
    /// it may be on a filesystem not mounted yet, and one created on the
    /// filesystem underneath would hide the records). `Ok(false)`: there is
    /// none, so nothing was ever recorded. A filesystem `/etc/fstab` puts
    /// at or above it that is not mounted, or a directory on another
    /// filesystem than the one it was created on, is 304: nothing is run,
    /// and the recovery unit tries again.
    pub fn check_for_recovery(&self) -> Result<bool, Problem> {
        let dir = &self.state_dir.path;
        let fstab = fs::read_to_string("/etc/fstab").unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if let Some((point, dev)) = unmounted_above(dir, &fstab, &mountinfo) {
            return Err(Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                format!(
                    "state directory {}: the filesystem /etc/fstab mounts on {} ({dev}) is not mounted yet, so its pending post-scripts cannot be seen; nothing was run: run quiesce recover again once it is mounted",
                    dir.display(),
                    point.display()
                ),
            ));
        }
        if !dir.exists() {
            return Ok(false);
        }
        self.check()?;
        let recorded: Option<serde_json::Value> =
            self.state_dir.read_json(FS_MARKER).ok().flatten();
        let recorded = recorded.and_then(|v| v["fsid"].as_str().map(str::to_string));
        match (recorded, fs_id(dir)) {
            (Some(was), Some(now)) if was != now => Err(Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                format!(
                    "state directory {} is not on the filesystem it was created on (filesystem id {now}, recorded {was}): the right one is not mounted there yet, or another was; nothing was run: mount it, then run quiesce recover again",
                    dir.display()
                ),
            )),
            _ => Ok(true),
        }
    }

    /// Records the state directory's filesystem, once (see
    /// [`PendingOptions::check_for_recovery`]).
    fn mark_filesystem(&self) {
        if self.state_dir.has(FS_MARKER) {
            return;
        }
        if let Some(id) = fs_id(&self.state_dir.path) {
            let _ = self
                .state_dir
                .write_json(FS_MARKER, &serde_json::json!({ "fsid": id }));
        }
    }

    /// Writes and syncs the record of a pre-script about to start.
    pub fn begin(&self, w: &Writer) -> Result<PendingPost, StateError> {
        let me = std::process::id() as i32;
        let start = procfs::read_stat(me).map_or(0, |s| s.start);
        let mut rec = PendingPost {
            version: VERSION,
            operation_id: w.operation_id.clone(),
            operation: w.operation.clone(),
            application: w.application.clone(),
            app_index: w.app_index,
            config: w.config.clone(),
            config_sha256: w.config_sha256.clone(),
            host_config: w.host_config.clone(),
            post_script: w.post_script.clone(),
            post_sha256: w.post_sha256.clone(),
            run_dir: w.run_dir.clone(),
            runner_pid: me,
            runner_start: start,
            boot_id: boot_id(),
            created_unix: now_unix(),
            post_due_secs: self.post_due.as_secs(),
            awaits: Awaits::Runner,
            due_unix: None,
            failures: 0,
            retry_unix: None,
            last_error: None,
            guard: w.guard,
            seal: String::new(),
        };
        self.write(&mut rec)?;
        self.mark_filesystem();
        self.forget_tombstones(&w.config);
        Ok(rec)
    }

    /// A separate `pre` finished: its post-script now waits for a `quiesce
    /// post`, until `--post-due` from now.
    ///
    /// Replaced, not synced: the record written before the pre-script is
    /// durable already, and only a crash of the machine could bring it
    /// back — after which a record of either kind is due at once (the
    /// reboot rule of [`PendingPost::due`]), so both mean the same.
    pub fn await_post_command(&self, rec: &mut PendingPost) -> Result<(), StateError> {
        rec.awaits = Awaits::PostCommand;
        rec.due_unix = Some(now_unix() + rec.post_due_secs);
        rec.seal = rec.compute_seal();
        self.state_dir.write_json_unsynced(&rec.name(), rec)
    }

    fn write(&self, rec: &mut PendingPost) -> Result<(), StateError> {
        rec.seal = rec.compute_seal();
        // The rename is durable only once the directory is synced.
        self.state_dir.write_json_durable(&rec.name(), rec)
    }

    /// Reads one record; `None` when it is gone (its post-script has run).
    pub fn read(&self, name: &str) -> Result<Option<PendingPost>, Damaged> {
        match self.state_dir.open() {
            Ok(dir) => Self::read_in(&dir, name),
            Err(e) => Err(Damaged {
                name: name.to_string(),
                why: e.to_string(),
            }),
        }
    }

    /// [`PendingOptions::read`] through the state directory opened once.
    fn read_in(dir: &CheckedDir, name: &str) -> Result<Option<PendingPost>, Damaged> {
        let damaged = |why: String| Damaged {
            name: name.to_string(),
            why,
        };
        let rec: Option<PendingPost> = match dir.read_json(name) {
            Ok(r) => r,
            Err(StateError::Parse(_, why)) => return Err(damaged(format!("unreadable: {why}"))),
            Err(e) => return Err(damaged(e.to_string())),
        };
        let Some(rec) = rec else { return Ok(None) };
        if rec.version != VERSION {
            return Err(damaged(format!("unknown version {}", rec.version)));
        }
        if rec.seal != rec.compute_seal() || rec.name() != name {
            return Err(damaged(
                "its seal does not match its content (edited or damaged)".into(),
            ));
        }
        Ok(Some(rec))
    }

    /// Every record of the state directory, oldest run first; the records of
    /// one run in reverse application order (the order its post-scripts
    /// run in).
    pub fn list(&self) -> Result<Vec<Entry>, Problem> {
        self.check()?;
        let dir = fs::read_dir(&self.state_dir.path)
            .map_err(|e| untrusted(&StateError::Read(self.state_dir.path.clone(), e)))?;
        let mut names: Vec<String> = dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .collect();
        names.sort();
        // Each directory opened and checked once, not once a record.
        let state_dir = self.state_dir.open().map_err(|e| untrusted(&e))?;
        // Never created here (a caller without a run of its own, such as
        // the metrics, names none): no run directory, no settled marks.
        let run_dir = self
            .run_dir
            .path
            .is_dir()
            .then(|| self.run_dir.open().ok())
            .flatten();
        let mut out: Vec<Entry> = names
            .iter()
            .filter_map(|n| {
                if run_dir.as_ref().is_some_and(|d| d.has(&settled_name(n))) {
                    return self.finish_settling(n).err().map(Entry::Settled);
                }
                match Self::read_in(&state_dir, n) {
                    Ok(Some(r)) => Some(Entry::Record(Box::new(r))),
                    Ok(None) => None,
                    Err(d) => Some(Entry::Damaged(d)),
                }
            })
            .collect();
        let mut started: std::collections::HashMap<String, u64> = Default::default();
        for e in &out {
            if let Entry::Record(r) = e {
                let t = started
                    .entry(r.operation_id.clone())
                    .or_insert(r.created_unix);
                *t = (*t).min(r.created_unix);
            }
        }
        out.sort_by_key(|e| match e {
            Entry::Record(r) => (
                started[&r.operation_id],
                r.operation_id.clone(),
                std::cmp::Reverse(r.app_index),
            ),
            Entry::Damaged(_) | Entry::Settled(_) => (0, String::new(), std::cmp::Reverse(0)),
        });
        Ok(out)
    }

    /// The tombstones of separate `pre`s whose post-script ran (those older
    /// than a day are removed).
    pub fn tombstones(&self) -> Vec<(String, Tombstone)> {
        let Ok(dir) = fs::read_dir(&self.state_dir.path) else {
            return Vec::new();
        };
        let now = now_unix();
        let mut out = Vec::new();
        for name in dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(TOMBSTONE_PREFIX) && n.ends_with(SUFFIX))
        {
            match self.state_dir.read_json::<Tombstone>(&name) {
                Ok(Some(t)) if now.saturating_sub(t.settled_unix) < TOMBSTONE_KEEP_SECS => {
                    out.push((name, t))
                }
                _ => self.state_dir.remove(&name),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A new operation of `config` begins: the `post` calls that come from
    /// now on are its own, not late ones of the operation before.
    fn forget_tombstones(&self, config: &Path) {
        for (name, _) in self
            .tombstones()
            .into_iter()
            .filter(|(_, t)| t.config == config)
        {
            self.state_dir.remove(&name);
        }
    }

    /// Removes a record marked settled, then its mark; why it could not.
    fn finish_settling(&self, name: &str) -> Result<(), Damaged> {
        match self.state_dir.try_remove(name) {
            Ok(()) => {
                self.run_dir.remove(&settled_name(name));
                Ok(())
            }
            Err(e) => Err(Damaged {
                name: name.to_string(),
                why: format!(
                    "its post-script has run, but the record cannot be removed ({e}); it is marked settled in {} and never runs again as a recovery: remove it once the state directory is writable",
                    self.run_dir.path.display()
                ),
            }),
        }
    }

    /// Locks record `name` for running its post-script (blocking: whoever
    /// holds it is running that post-script right now), then re-reads it:
    /// `None` when someone else ran it meanwhile, or it is settled. The lock
    /// is the record file's own (`flock`): claiming creates nothing, so it
    /// works when the state directory's filesystem is full or out of
    /// inodes.
    pub fn claim(&self, name: &str) -> Result<Option<Claim>, Damaged> {
        let damaged = |why: String| Damaged {
            name: name.to_string(),
            why,
        };
        let Some(lock) = self
            .state_dir
            .lock_existing(name)
            .map_err(|e| damaged(e.to_string()))?
        else {
            return Ok(None);
        };
        if self.run_dir.has(&settled_name(name)) {
            return Ok(None);
        }
        let claim = Claim {
            opts: self.clone(),
            name: name.to_string(),
            _lock: lock,
        };
        match self.read(name)? {
            Some(rec) => Ok(Some(claim).filter(|_| rec.name() == name)),
            None => Ok(None),
        }
    }
}

/// A record locked by this process while its post-script runs.
pub struct Claim {
    opts: PendingOptions,
    name: String,
    _lock: RecordLock,
}

impl Claim {
    /// The record as it is now (under the lock).
    pub fn record(&self) -> Result<Option<PendingPost>, Damaged> {
        self.opts.read(&self.name)
    }

    /// A recovered post-script failed: the record stays, for a retry after
    /// a backoff (SPEC §6.6), its failures counted.
    pub fn retry_later(self, mut rec: PendingPost, error: &str) -> Result<u64, StateError> {
        rec.failures += 1;
        let wait = backoff(rec.failures);
        rec.retry_unix = Some(now_unix() + wait);
        rec.last_error = Some(error.chars().take(300).collect());
        self.opts.write(&mut rec)?;
        Ok(wait)
    }

    /// Before [`Claim::done`] of a record that awaited a separate `post`:
    /// its tombstone, so that no later `post` of that `pre` runs it again.
    pub fn leave_tombstone(&self, rec: &PendingPost, settled_by: &str) -> Result<(), StateError> {
        let t = Tombstone {
            operation_id: rec.operation_id.clone(),
            app_index: rec.app_index,
            config: rec.config.clone(),
            settled_by: settled_by.to_string(),
            settled_unix: now_unix(),
        };
        self.opts
            .state_dir
            .write_json(&tombstone_name(&self.name), &t)
    }

    /// The post-script has run: the record goes (still locked: a waiter
    /// finds it gone). An unlink needs no free block or inode, so only a
    /// read-only (or failing) filesystem keeps it: then it is marked
    /// settled in the run directory, so that it never runs again as a
    /// recovery, and why is returned, for the caller to report loudly.
    pub fn done(self) -> Result<(), String> {
        let Err(e) = self.opts.state_dir.try_remove(&self.name) else {
            return Ok(());
        };
        let mark = settled_name(&self.name);
        let marked = self.opts.run_dir.write_json(
            &mark,
            &serde_json::json!({"record": self.name, "why": e.to_string()}),
        );
        Err(match marked {
            Ok(()) => format!(
                "the pending post-script record {} could not be removed ({e}); its post-script ran, and {} marks it settled so that it never runs again as a recovery: remove the record once the state directory is writable",
                self.opts.state_dir.file(&self.name).display(),
                self.opts.run_dir.file(&mark).display()
            ),
            Err(m) => format!(
                "the pending post-script record {} could not be removed ({e}) nor marked settled ({m}); its post-script ran: remove the record by hand, or a recovery runs the post-script again",
                self.opts.state_dir.file(&self.name).display()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(awaits: Awaits) -> PendingPost {
        PendingPost {
            version: VERSION,
            operation_id: "op".into(),
            operation: "pre".into(),
            application: None,
            app_index: 0,
            config: "/etc/c.json".into(),
            config_sha256: "00".into(),
            host_config: "/etc/h".into(),
            post_script: "/etc/post.sh".into(),
            post_sha256: "11".into(),
            run_dir: "/run/quiesce".into(),
            // pid 0 never names a live runner.
            runner_pid: 0,
            runner_start: 1,
            boot_id: "boot-a".into(),
            created_unix: 1000,
            post_due_secs: 60,
            awaits,
            due_unix: Some(1060),
            failures: 0,
            retry_unix: None,
            last_error: None,
            guard: None,
            seal: String::new(),
        }
    }

    #[test]
    fn a_state_directory_under_an_fstab_mount_not_made_yet_is_seen() {
        let fstab = "# comment\nUUID=1 / ext4 defaults 0 1\nUUID=2 /var/lib ext4 defaults 0 2\n/dev/x /mnt/later ext4 noauto 0 0\n";
        let mounted = "25 1 254:0 / / rw - ext4 /dev/vda rw\n";
        let dir = Path::new("/var/lib/quiesce");
        assert_eq!(
            unmounted_above(dir, fstab, mounted),
            Some((PathBuf::from("/var/lib"), "UUID=2".into()))
        );
        let both = format!("{mounted}26 25 254:1 / /var/lib rw - ext4 /dev/vdb rw\n");
        assert_eq!(unmounted_above(dir, fstab, &both), None);
        assert_eq!(
            unmounted_above(Path::new("/mnt/later/q"), fstab, mounted),
            None,
            "noauto"
        );
    }

    #[test]
    fn a_record_of_an_older_version_keeps_its_seal() {
        // The new fields are left out when they have their old meaning, so
        // a record written before them re-serialises to the same bytes.
        let mut r = record(Awaits::Runner);
        r.seal = r.compute_seal();
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("failures") && !json.contains("retry"),
            "{json}"
        );
        let back: PendingPost = serde_json::from_str(&json).unwrap();
        assert_eq!(back.seal, back.compute_seal());
    }

    #[test]
    fn a_failed_recovery_waits_for_its_backoff() {
        let mut r = record(Awaits::Runner);
        r.failures = 2;
        r.retry_unix = Some(1100);
        assert!(matches!(r.due("boot-a", 1099), Due::NotYet(_)));
        assert_eq!(r.due("boot-a", 1100), Due::Now(Recovery::RunnerDied));
        assert_eq!((backoff(1), backoff(2), backoff(9)), (15, 30, 600));
    }

    #[test]
    fn another_boot_is_due_at_once() {
        let r = record(Awaits::PostCommand);
        assert_eq!(r.due("boot-b", 1001), Due::Now(Recovery::Reboot));
    }

    #[test]
    fn a_bridge_post_waits_for_its_deadline() {
        let r = record(Awaits::PostCommand);
        assert!(matches!(r.due("boot-a", 1059), Due::NotYet(_)));
        assert_eq!(r.due("boot-a", 1060), Due::Now(Recovery::PostOverdue));
    }

    #[test]
    fn a_dead_runners_record_is_due() {
        let r = record(Awaits::Runner);
        assert_eq!(r.due("boot-a", 1001), Due::Now(Recovery::RunnerDied));
    }

    #[test]
    fn the_seal_covers_every_field() {
        let mut r = record(Awaits::Runner);
        r.seal = r.compute_seal();
        let sealed = r.seal.clone();
        r.post_script = "/tmp/evil.sh".into();
        assert_ne!(r.compute_seal(), sealed);
    }
}
