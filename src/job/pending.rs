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
use crate::freeze::state::{RecordLock, RunDir, StateError};
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
    /// SHA-256 of the record with an empty seal.
    #[serde(default)]
    pub seal: String,
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
pub struct Writer<'a> {
    pub operation: &'a str,
    pub operation_id: &'a str,
    pub application: Option<String>,
    pub app_index: usize,
    pub config: &'a Path,
    pub config_sha256: &'a str,
    pub host_config: &'a Path,
    pub post_script: &'a Path,
    pub post_sha256: &'a str,
    pub run_dir: &'a Path,
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

impl PendingOptions {
    /// Creates the state directory (0700) if needed and checks it.
    pub fn check(&self) -> Result<(), Problem> {
        self.state_dir.check().map_err(|e| untrusted(&e))
    }

    /// Writes and syncs the record of a pre-script about to start.
    pub fn begin(&self, w: &Writer<'_>) -> Result<PendingPost, StateError> {
        let me = std::process::id() as i32;
        let start = procfs::read_stat(me).map_or(0, |s| s.start);
        let mut rec = PendingPost {
            version: VERSION,
            operation_id: w.operation_id.to_string(),
            operation: w.operation.to_string(),
            application: w.application.clone(),
            app_index: w.app_index,
            config: w.config.to_path_buf(),
            config_sha256: w.config_sha256.to_string(),
            host_config: w.host_config.to_path_buf(),
            post_script: w.post_script.to_path_buf(),
            post_sha256: w.post_sha256.to_string(),
            run_dir: w.run_dir.to_path_buf(),
            runner_pid: me,
            runner_start: start,
            boot_id: boot_id(),
            created_unix: now_unix(),
            post_due_secs: self.post_due.as_secs(),
            awaits: Awaits::Runner,
            due_unix: None,
            seal: String::new(),
        };
        self.write(&mut rec)?;
        Ok(rec)
    }

    /// A separate `pre` finished: its post-script now waits for a `quiesce
    /// post`, until `--post-due` from now.
    pub fn await_post_command(&self, rec: &mut PendingPost) -> Result<(), StateError> {
        rec.awaits = Awaits::PostCommand;
        rec.due_unix = Some(now_unix() + rec.post_due_secs);
        self.write(rec)
    }

    fn write(&self, rec: &mut PendingPost) -> Result<(), StateError> {
        rec.seal = rec.compute_seal();
        self.state_dir.write_json(&rec.name(), rec)?;
        // The rename is durable only once the directory is synced.
        fs::File::open(&self.state_dir.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| StateError::Write(self.state_dir.path.clone(), e))
    }

    /// Reads one record; `None` when it is gone (its post-script has run).
    pub fn read(&self, name: &str) -> Result<Option<PendingPost>, Damaged> {
        let damaged = |why: String| Damaged {
            name: name.to_string(),
            why,
        };
        let rec: Option<PendingPost> = match self.state_dir.read_json(name) {
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
        let mut out: Vec<Entry> = names
            .iter()
            .filter_map(|n| {
                if self.run_dir.has(&settled_name(n)) {
                    return self.finish_settling(n).err().map(Entry::Settled);
                }
                match self.read(n) {
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
            seal: String::new(),
        }
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
