//! The freeze window (SPEC.md §6.2–§6.5): from the first `FIFREEZE` to the
//! last `FITHAW`, every way out thaws.
//!
//! Layers, each enough on its own for the failures it covers:
//! 1. `thaw_all` on the normal path, in exact reverse of what froze;
//! 2. the window's deadline, enforced by the caller's wait (thaw, then kill);
//! 3. the signal handlers and the panic hook thaw through the [`guard`] table;
//! 4. `Drop` thaws on any early return or unwinding;
//! 5. the [`watchdog`] thaws when the runner dies, SIGKILL included;
//! 6. [`state`](super::state) lets the next run or `quiesce thaw` recover.
//!
//! During the window the runner writes no file: `state.json` is written
//! before the first freeze and removed after the last thaw (it is on tmpfs
//! anyway), and log records are held in memory by the caller.

use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::Serialize;

use super::crew::{
    thaw_retrying, Call, Crew, FreezeThreads, FreezeWorkers, ABANDONED, DONE, ISSUED, LATE,
    NEVER_RAN, NO_JOB, NO_THAW, RUNNING, THAW_ATTEMPTS,
};
use super::error::FreezeError;
use super::guard::{self, Slot, Taken};
use super::ioctl::FreezeOps;
use super::mounts::PlanEntry;
use super::state::{RecordedMount, RunDir, WindowRecord};
use super::watchdog::{self, ChildFilter, SharedState, Watchdog};

/// Default and maximum of `--max-freeze`.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(60);
pub const MAX_MAX_FREEZE: Duration = Duration::from_secs(1800);
/// Deadline of one `FIFREEZE` call (it can block, e.g. on fanotify).
pub const PER_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// A mount to freeze, with its descriptor opened before the window. The
/// descriptor is shared with the freeze worker: a `FIFREEZE` still blocked in
/// the kernel keeps its own reference, so its fd number can never be closed
/// or reused under it (a late thaw always lands on that mount).
#[derive(Debug)]
pub struct MountTarget {
    pub path: PathBuf,
    pub device: String,
    pub fs_type: String,
    pub fd: Arc<OwnedFd>,
    /// Its stage in the plan (SPEC.md §6.1): the mounts of one stage are
    /// frozen concurrently; targets come in stage order.
    pub stage: u32,
}

impl MountTarget {
    /// Opens the mount point (a read-only directory open: harmless even on a
    /// frozen filesystem), in stage 1. Failure is `UnableToOpenMount` (123).
    pub fn open(
        path: PathBuf,
        device: String,
        fs_type: String,
    ) -> Result<MountTarget, FreezeError> {
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| FreezeError::Open {
            path: path.clone(),
            errno,
        })?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(MountTarget {
            path,
            device,
            fs_type,
            fd: Arc::new(fd),
            stage: 1,
        })
    }

    /// Opens a mount of the plan and checks that the descriptor is still on
    /// the planned mount: the pre-script ran since the plan was made, and a
    /// mount point unmounted in between opens its parent's filesystem, which
    /// must never be frozen in its place. The mount id (statx) identifies the
    /// mount; when it changed, the same filesystem remounted there (same
    /// `st_dev` as the planned `major:minor`) is still accepted. btrfs
    /// subvolumes have an `st_dev` of their own, so for them only the mount
    /// id can confirm. A mismatch is `UnableToOpenMount` (123). The target
    /// is in the entry's stage.
    pub fn open_planned(e: &PlanEntry) -> Result<MountTarget, FreezeError> {
        let mount_id = e.mount_id;
        let mut t = MountTarget::open(e.path.clone(), e.device.clone(), e.fs_type.clone())?;
        t.stage = e.stage.unwrap_or(1);
        let changed = |why: String| FreezeError::MountChanged {
            path: t.path.clone(),
            device: t.device.clone(),
            why,
        };
        let id = mount_id_of(t.fd.as_raw_fd())
            .map_err(|e| changed(format!("cannot read its mount id: {e}")))?;
        if id == u64::from(mount_id) {
            return Ok(t);
        }
        let st = nix::sys::stat::fstat(t.fd.as_raw_fd())
            .map_err(|e| changed(format!("cannot stat it: {e}")))?;
        let dev = super::state::dev_string(st.st_dev);
        if dev == t.device {
            return Ok(t);
        }
        Err(changed(format!(
            "it is now mount {id} on device {dev}, planned mount {mount_id}"
        )))
    }
}

/// `stx_mnt_id` of an open descriptor.
fn mount_id_of(fd: RawFd) -> Result<u64, Errno> {
    // SAFETY: a zeroed statx buffer we own; the empty path with AT_EMPTY_PATH
    // makes statx describe `fd` itself.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the path is a static NUL-terminated empty string.
    let r = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    Errno::result(r)?;
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(stx.stx_mnt_id)
}

/// One mount's line in the status (`phases.freeze.mounts[]`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountReport {
    pub path: PathBuf,
    pub device: String,
    pub fs_type: String,
    /// The plan's stage it was frozen in (1 first, SPEC.md §6.1).
    pub stage: u32,
    /// When its `FIFREEZE` was issued, counted from the window's start (the
    /// first freeze call of stage 1).
    pub freeze_start_ms: f64,
    /// How long its `FIFREEZE` call took (writeback of dirty data, the RCU
    /// grace periods of a cold freeze).
    pub freeze_ms: f64,
    /// Time between its freeze and its thaw (by the runner, or by the
    /// watchdog when that came first).
    pub frozen_ms: f64,
    /// The watchdog thawed it at its deadline: the runner could not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub thawed_by_watchdog: bool,
    /// Set when its thaw still failed after every retry: it is still frozen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thaw_error: Option<String>,
}

/// What the caller chooses for a window.
pub struct WindowOptions {
    pub max_freeze: Duration,
    pub per_call: Duration,
    /// Where `state.json` goes; `None` only in tests of the call order.
    pub run_dir: Option<RunDir>,
    pub operation_id: String,
    /// The page, watchdog and threads started for it (a watchdog always,
    /// except in tests of the call order).
    pub standby: WindowStandby,
}

/// How long closing a window waits for a `FIFREEZE` that passed its deadline
/// (or was still in flight when the window gave up) before handing that
/// mount to the watchdog (see [`FreezeWindow::finish`]).
pub const PENDING_GRACE: Duration = Duration::from_secs(2);
/// The file on tmpfs that holds the page shared with the watchdog, one per
/// runner (`window-PID.page`): a run starts its watchdog before its first
/// script, while the page of a dead run's window may still be waiting for
/// recovery, which reads the name `state.json` records.
pub fn page_file() -> String {
    format!("window-{}.page", std::process::id())
}
/// The longest the window sleeps between two looks at its calls: the freeze
/// threads wake it on every return, this only bounds how late it notices a
/// signal (whose handler has already thawed everything armed).
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// Why a stage was aborted.
enum Abort {
    /// A call failed (EBUSY: someone else froze that mount).
    Failed(usize, Errno),
    /// The calls still in flight passed their deadline.
    Deadline(Duration),
    Signal(i32),
}

/// A mount this window froze.
struct Frozen {
    index: usize,
    slot: Option<Slot>,
    began_ns: u64,
    ended_ns: u64,
    thawed_by_worker: Option<Result<(), Errno>>,
}

/// A mount thawed by `thaw_all`: what its thaw said, and when.
struct Thawed {
    frozen: Frozen,
    result: Result<(), Errno>,
    at: Instant,
}

/// An open freeze window.
pub struct FreezeWindow {
    targets: Vec<MountTarget>,
    /// Index ranges of `targets`, one per stage, in freeze order.
    stages: Vec<Range<usize>>,
    ops: Arc<dyn FreezeOps>,
    shared: Arc<SharedState>,
    workers: FreezeWorkers,
    watchdog: Option<Watchdog>,
    run_dir: Option<RunDir>,
    /// In freeze order: stage by stage, within a stage as the calls returned.
    /// INVARIANT: this and the next two vectors are reserved for every
    /// target in `prepare`, so the window never allocates to fill them.
    frozen: Vec<Frozen>,
    /// Calls the window gave up on that may still complete (or just did).
    pending: Vec<usize>,
    thawed: Vec<Thawed>,
    /// Targets whose thaw failed after every retry: still frozen.
    still_frozen: Vec<usize>,
    started: Option<Instant>,
    max_freeze: Duration,
    per_call: Duration,
    reports: Vec<MountReport>,
    oom_restore: Option<String>,
    /// `finish` ran (by `close`, or by `Drop` on an early way out).
    finished: bool,
    /// When the runner's own last thaw returned.
    last_thaw: Option<Instant>,
    pub warnings: Vec<String>,
    problems: Vec<FreezeError>,
}

/// The stages of `targets` (consecutive runs of one stage number), or what
/// is wrong with their order.
fn stage_ranges(targets: &[MountTarget]) -> Result<Vec<Range<usize>>, String> {
    let mut stages: Vec<Range<usize>> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match stages.last_mut() {
            Some(r) if targets[r.start].stage == t.stage => r.end = i + 1,
            Some(r) if targets[r.start].stage > t.stage => {
                return Err(format!(
                    "{} (stage {}) comes after {} (stage {}): the mounts are not in stage order",
                    t.path.display(),
                    t.stage,
                    targets[r.start].path.display(),
                    targets[r.start].stage
                ))
            }
            _ => stages.push(i..i + 1),
        }
    }
    Ok(stages)
}
/// What a window needs running before the run's first script: the page it
/// shares with its watchdog, the watchdog (idle until the window arms it)
/// and the freeze threads. A script can only be kept from signalling the
/// processes and threads that exist when it is forked (SPEC §8), so a
/// `snapshot` starts these before its pre-scripts; a `freeze` starts them
/// just before its window.
pub struct WindowStandby {
    shared: Arc<SharedState>,
    watchdog: Option<Watchdog>,
    threads: FreezeThreads,
}

impl WindowStandby {
    /// Starts `threads` freeze threads and, when `watchdog`, the watchdog
    /// (under `filter`). The page lives in a file on tmpfs when there is a
    /// run directory, so that recovery sees what the watchdog did after both
    /// are gone (stores to a shared mapping of tmpfs: memory, no write, no
    /// disk).
    pub fn start(
        run_dir: Option<&RunDir>,
        threads: usize,
        watchdog: bool,
        filter: Option<ChildFilter<'_>>,
    ) -> Result<WindowStandby, FreezeError> {
        let internal = FreezeError::Setup;
        let shared = match run_dir {
            Some(dir) => {
                let _ = dir.ensure();
                SharedState::in_file(&dir.file(&page_file()))
            }
            None => SharedState::new(),
        };
        let shared = Arc::new(shared.map_err(|e| internal(format!("shared page: {e}")))?);
        let watchdog = watchdog
            .then(|| Watchdog::spawn(&shared, filter))
            .transpose()
            .map_err(|e| {
                internal(format!(
                    "cannot start the watchdog: {e}; nothing was frozen"
                ))
            })?;
        let threads = FreezeThreads::start(threads).map_err(|e| {
            internal(format!(
                "cannot start the freeze threads ({e}); nothing was frozen (TasksMax or RLIMIT_NPROC too low?)"
            ))
        })?;
        Ok(WindowStandby {
            shared,
            watchdog,
            threads,
        })
    }

    pub fn watchdog_pid(&self) -> Option<i32> {
        self.watchdog.as_ref().map(|w| w.pid())
    }

    /// No window came: the watchdog and the threads end.
    pub fn dismiss(self) {
        if let Some(w) = self.watchdog {
            w.dismiss();
        }
        self.threads.dismiss();
    }
}

impl FreezeWindow {
    /// Prepares the window with what `opts.standby` started: records
    /// `state.json`, raises the OOM shield, hands the freeze threads their
    /// calls and arms the watchdog. Nothing is frozen yet.
    pub fn prepare(
        targets: Vec<MountTarget>,
        ops: Arc<dyn FreezeOps>,
        opts: WindowOptions,
    ) -> Result<FreezeWindow, FreezeError> {
        let internal = FreezeError::Setup;
        let WindowStandby {
            shared,
            mut watchdog,
            threads,
        } = opts.standby;
        if targets.len() > guard::MAX_MOUNTS {
            return Err(internal(format!(
                "{} mounts to freeze; at most {} are supported",
                targets.len(),
                guard::MAX_MOUNTS
            )));
        }
        let stages = stage_ranges(&targets).map_err(internal)?;
        let max_freeze = opts.max_freeze.min(MAX_MAX_FREEZE);
        let width = stages.iter().map(|r| r.len()).max().unwrap_or(0);
        let threads = if threads.len() >= width {
            threads
        } else {
            threads.dismiss();
            FreezeThreads::start(width).map_err(|e| {
                internal(format!(
                    "cannot start the freeze threads ({e}); nothing was frozen (TasksMax or RLIMIT_NPROC too low?)"
                ))
            })?
        };
        let mut warnings = Vec::new();
        // Neither the runner nor its watchdog may be the OOM killer's choice
        // while filesystems are frozen (the watchdog set its own at its start).
        let oom_restore = match std::fs::read_to_string("/proc/self/oom_score_adj") {
            Ok(old) => match std::fs::write("/proc/self/oom_score_adj", "-1000") {
                Ok(()) => Some(old.trim().to_string()),
                Err(e) => {
                    warnings.push(format!("cannot set oom_score_adj to -1000: {e}"));
                    None
                }
            },
            Err(e) => {
                warnings.push(format!("cannot read oom_score_adj: {e}"));
                None
            }
        };
        let n = targets.len();
        let crew = Arc::new(Crew {
            ops: ops.clone(),
            shared: shared.clone(),
            fds: targets.iter().map(|t| t.fd.clone()).collect(),
            calls: (0..n).map(|_| Call::new()).collect(),
            mailboxes: (0..threads.len())
                .map(|_| AtomicUsize::new(NO_JOB))
                .collect(),
            waiter: thread::current(),
            base: Instant::now(),
        });
        let fds: Vec<RawFd> = targets.iter().map(|t| t.fd.as_raw_fd()).collect();
        // The watchdog's own deadline is the window's longest possible one
        // (counted from now, before the first freeze); it adds its margin.
        let armed = watchdog
            .as_mut()
            .map(|w| w.arm(&shared, &fds, Instant::now() + max_freeze))
            .transpose();
        let window = FreezeWindow {
            targets,
            stages,
            ops,
            shared,
            workers: FreezeWorkers::start(crew, threads),
            watchdog,
            run_dir: opts.run_dir,
            frozen: Vec::with_capacity(n),
            pending: Vec::with_capacity(n),
            thawed: Vec::with_capacity(n),
            still_frozen: Vec::with_capacity(n),
            started: None,
            max_freeze,
            per_call: opts.per_call,
            reports: Vec::with_capacity(n),
            oom_restore,
            finished: false,
            warnings,
            problems: Vec::new(),
            last_thaw: None,
        };
        // On failure the window is dropped: its Drop dismisses the watchdog
        // and restores oom_score_adj.
        armed.map_err(|e| internal(format!("cannot arm the watchdog: {e}; nothing was frozen")))?;
        if let Some(dir) = &window.run_dir {
            let record = window.record(&opts.operation_id);
            dir.write_state(&record)
                .map_err(|e| internal(format!("recovery state: {e}")))?;
        }
        Ok(window)
    }

    /// The recovery record: every planned mount in freeze order (index i is
    /// state i of the page in [`page_file`], which says what became of it).
    fn record(&self, operation_id: &str) -> WindowRecord {
        let me = crate::supervise::procfs::read_stat(std::process::id() as i32)
            .map(|s| s.start)
            .unwrap_or(0);
        WindowRecord {
            operation_id: operation_id.to_string(),
            runner_pid: std::process::id() as i32,
            runner_start: me,
            watchdog_pid: self.watchdog_pid(),
            // The device as fstat of the opened mount point sees it (what
            // thaw_path compares with): on btrfs a subvolume's st_dev
            // differs from the superblock device mountinfo shows.
            mounts: self
                .targets
                .iter()
                .map(|t| RecordedMount {
                    path: t.path.clone(),
                    device: nix::sys::stat::fstat(t.fd.as_raw_fd())
                        .map(|st| super::state::dev_string(st.st_dev))
                        .unwrap_or_else(|_| t.device.clone()),
                })
                .collect(),
            page: self.run_dir.as_ref().map(|_| page_file()),
        }
    }

    pub fn targets(&self) -> &[MountTarget] {
        &self.targets
    }

    pub fn watchdog_pid(&self) -> Option<i32> {
        self.watchdog.as_ref().map(|w| w.pid())
    }

    /// Whether the watchdog is still there to cover a SIGKILL of the runner.
    pub fn watchdog_alive(&self) -> bool {
        self.watchdog.as_ref().is_some_and(|w| w.alive())
    }

    /// The page shared with the watchdog (the caller records the snapshot
    /// command's process group there).
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// The mounts frozen so far, in freeze order, with how long each
    /// `FIFREEZE` took (for the audit trail).
    pub fn frozen_mounts(&self) -> Vec<(&MountTarget, f64)> {
        self.frozen
            .iter()
            .map(|f| {
                let ns = f.ended_ns.saturating_sub(f.began_ns);
                (&self.targets[f.index], ns as f64 / 1e6)
            })
            .collect()
    }

    /// When the window must be closed: `--max-freeze` after the first freeze.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.max_freeze)
    }

    /// Freezes every target, stage by stage, the calls of a stage
    /// concurrently. On any failure, deadline or signal, thaws what froze
    /// (reverse order) and returns the problem (121/122).
    pub fn freeze_all(&mut self) -> Result<(), FreezeError> {
        for s in 0..self.stages.len() {
            // A signal already thawed what was frozen: freeze nothing more.
            let abort = match crate::freeze::signals::pending() {
                Some(sig) => Err(Abort::Signal(sig)),
                None => self.freeze_stage(self.stages[s].clone()),
            };
            if let Err(a) = abort {
                self.thaw_all();
                return Err(self.problem_of(a));
            }
        }
        // A signal during the last freeze calls: do not hand back a window
        // the handler believes it thawed.
        if let Some(sig) = crate::freeze::signals::pending() {
            self.thaw_all();
            return Err(self.problem_of(Abort::Signal(sig)));
        }
        Ok(())
    }

    /// Issues every call of one stage at once, each with its deadline, and
    /// waits for all of them; on the first failure, deadline or signal it
    /// gives up on the calls still in flight (their threads thaw a late
    /// success). What froze is in `frozen` either way.
    /// INVARIANT: no allocation, no I/O but the ioctls (in the threads).
    fn freeze_stage(&mut self, stage: Range<usize>) -> Result<(), Abort> {
        let crew = self.workers.crew.clone();
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let window_left = (started + self.max_freeze).saturating_duration_since(now);
        let limit = self.per_call.min(window_left);
        for i in stage.clone() {
            // Attempting, for the watchdog only: a call in flight when the
            // runner is SIGKILLed is a freeze in progress (EBUSY is answered
            // at once, before any wait), so what completes after the runner
            // is ours. The signal guard is armed by the thread on success.
            self.shared.set_state(i, watchdog::ATTEMPTING);
            let c = &crew.calls[i];
            c.self_thaw.store(NO_THAW, Ordering::SeqCst);
            c.state.store(ISSUED, Ordering::SeqCst);
        }
        // Every call of the stage gets the same deadline: its own issue
        // time (they are issued together) plus the per-call limit.
        let deadline = Instant::now() + limit;
        for (k, i) in stage.clone().enumerate() {
            self.workers.issue(k, i);
        }
        let abort = loop {
            let mut in_flight = false;
            let mut failed = None;
            for i in stage.clone() {
                let c = &crew.calls[i];
                match c.state.load(Ordering::SeqCst) {
                    DONE => match c.errno.load(Ordering::SeqCst) {
                        0 => {}
                        e => failed = failed.or(Some(Abort::Failed(i, Errno::from_raw(e)))),
                    },
                    _ => in_flight = true,
                }
            }
            if let Some(a) = failed {
                break Some(a);
            }
            if let Some(sig) = crate::freeze::signals::pending() {
                break Some(Abort::Signal(sig));
            }
            if !in_flight {
                break None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Some(Abort::Deadline(limit));
            }
            thread::park_timeout(left.min(WAIT_SLICE));
        };
        if abort.is_some() {
            for i in stage.clone() {
                let state = &crew.calls[i].state;
                let gave_up = [ISSUED, RUNNING].into_iter().any(|from| {
                    state
                        .compare_exchange(from, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                });
                if gave_up {
                    self.pending.push(i);
                }
            }
        }
        // Adopt what returned to the window, in the order it froze.
        let first = self.frozen.len();
        for i in stage {
            let c = &crew.calls[i];
            if c.state.load(Ordering::SeqCst) == DONE && c.errno.load(Ordering::SeqCst) == 0 {
                self.frozen.push(Frozen {
                    index: i,
                    slot: Slot::from_raw(c.slot.load(Ordering::SeqCst)),
                    began_ns: c.began.load(Ordering::SeqCst),
                    ended_ns: c.ended.load(Ordering::SeqCst),
                    thawed_by_worker: c.self_thaw(),
                });
            }
        }
        self.frozen[first..].sort_unstable_by_key(|f| f.ended_ns);
        abort.map_or(Ok(()), Err)
    }

    /// The error of an aborted window (built after the thaw: it allocates).
    fn problem_of(&self, abort: Abort) -> FreezeError {
        let path = |i: usize| self.targets[i].path.clone();
        match abort {
            // Someone else froze it: never thaw what we did not freeze.
            Abort::Failed(i, Errno::EBUSY) => FreezeError::Busy { path: path(i) },
            Abort::Failed(i, errno) => FreezeError::Ioctl {
                path: path(i),
                errno,
            },
            Abort::Deadline(limit) => FreezeError::Timeout {
                paths: self
                    .pending
                    .iter()
                    .filter(|&&i| {
                        self.workers.crew.calls[i].errno.load(Ordering::SeqCst) != NEVER_RAN
                    })
                    .map(|&i| path(i))
                    .collect(),
                limit,
            },
            Abort::Signal(sig) => FreezeError::Interrupted(sig),
        }
    }

    /// Thaws everything frozen, stage by stage in reverse, in exact reverse
    /// of the order that froze. Idempotent: a mount a signal handler or its
    /// freeze thread already thawed is not thawed twice. A thaw that still
    /// fails after [`THAW_ATTEMPTS`] is `FsFreezeFailed`: the mount stays
    /// marked frozen for the watchdog, armed for a later signal, and recorded
    /// for `quiesce thaw` and the next run.
    pub fn thaw_all(&mut self) {
        // INVARIANT: no allocation until the last thaw (`thawed` is reserved).
        while let Some(f) = self.frozen.pop() {
            let fd = self.targets[f.index].fd.as_raw_fd();
            // Out of the table first, so a signal arriving now does not
            // thaw it a second time.
            let taken = f.slot.map(guard::take);
            let result = match (f.thawed_by_worker, taken) {
                (Some(Ok(())), _) => Ok(()),
                (_, Some(Taken::Thawed(Ok(()) | Err(Errno::EINVAL)))) => Ok(()),
                _ => thaw_retrying(&*self.ops, fd),
            };
            match result {
                Ok(()) => self.shared.set_state(f.index, watchdog::THAWED),
                Err(_) => {
                    let _ = guard::arm(fd);
                }
            }
            self.thawed.push(Thawed {
                frozen: f,
                result,
                at: Instant::now(),
            });
        }
        let mut thawed = std::mem::take(&mut self.thawed);
        for t in thawed.drain(..) {
            self.report_thawed(t);
        }
        self.thawed = thawed;
    }

    /// The status line of one thawed mount, and its problem if still frozen.
    fn report_thawed(&mut self, t: Thawed) {
        let crew = &self.workers.crew;
        let f = &t.frozen;
        let target = &self.targets[f.index];
        let thaw_error = t.result.err().map(|e| {
            self.still_frozen.push(f.index);
            self.problems.push(FreezeError::Thaw {
                path: target.path.clone(),
                errno: e,
                attempts: THAW_ATTEMPTS,
            });
            format!("{e} ({})", e.desc())
        });
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let start = self.started.unwrap_or(crew.base);
        self.last_thaw = self.last_thaw.max(Some(t.at));
        // Frozen until whoever thawed first: the runner, or its watchdog
        // when the runner could not act in time (SPEC §6.4 point 6).
        let by_watchdog = self
            .shared
            .watchdog_thawed_at(f.index)
            .filter(|&w| w < t.at);
        self.reports.push(MountReport {
            path: target.path.clone(),
            device: target.device.clone(),
            fs_type: target.fs_type.clone(),
            stage: target.stage,
            freeze_start_ms: ms(crew.at(f.began_ns).saturating_duration_since(start)),
            freeze_ms: ms(Duration::from_nanos(f.ended_ns.saturating_sub(f.began_ns))),
            frozen_ms: ms(by_watchdog
                .unwrap_or(t.at)
                .saturating_duration_since(crew.at(f.ended_ns))),
            thawed_by_watchdog: by_watchdog.is_some(),
            thaw_error,
        });
    }

    /// Closes the window: thaws, dismisses the watchdog (or leaves it armed
    /// when a mount may still be frozen), removes `state.json`, restores
    /// `oom_score_adj`. Returns per-mount reports (in freeze order), the
    /// window's length and the thaws that failed.
    pub fn close(mut self) -> WindowReport {
        self.finish()
    }

    /// The calls the window gave up on: wait for them, bounded by
    /// [`PENDING_GRACE`]. One that completes has been dealt with by its
    /// thread (a success thawed at once). One that does not stays attempting
    /// in the page and is the watchdog's: the runner's process cannot end
    /// before that call returns (a thread in the kernel holds the thread
    /// group), the watchdog waits for exactly that end and then thaws it,
    /// without a deadline.
    fn await_pending(&mut self) {
        let crew = self.workers.crew.clone();
        let until = Instant::now() + PENDING_GRACE;
        let late = |i: usize| crew.calls[i].state.load(Ordering::SeqCst) == LATE;
        while !self.pending.iter().all(|&i| late(i)) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::park_timeout(left.min(WAIT_SLICE));
        }
        let pending = std::mem::take(&mut self.pending);
        for i in pending {
            let path = self.targets[i].path.display().to_string();
            let c = &crew.calls[i];
            if !late(i) {
                self.warnings.push(format!(
                    "the freeze call of {path} is still blocked in the kernel after the window gave up on it; the watchdog thaws it when the call completes (this process ends only then)"
                ));
                self.pending.push(i);
                continue;
            }
            if c.errno.load(Ordering::SeqCst) != 0 {
                continue; // it failed or never ran: nothing of ours is frozen
            }
            match c.self_thaw() {
                Some(Err(e)) => {
                    self.still_frozen.push(i);
                    self.problems.push(FreezeError::LateThaw {
                        path: self.targets[i].path.clone(),
                        errno: e,
                    });
                }
                _ => self.warnings.push(format!(
                    "the freeze of {path} completed after the window gave up on it and was thawed at once"
                )),
            }
        }
    }

    fn finish(&mut self) -> WindowReport {
        if self.finished {
            return WindowReport::default();
        }
        self.finished = true;
        self.thaw_all();
        if !self.pending.is_empty() {
            self.await_pending();
        }
        let window_ms = self
            .started
            .map(|s| s.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let broke = self.broke();
        // Something may still be frozen: the watchdog stays (it thaws when
        // the runner is gone), and the record stays for `quiesce thaw`.
        let handover = !self.pending.is_empty() || !self.still_frozen.is_empty();
        if let Some(w) = self.watchdog.take() {
            if handover {
                w.leave_armed();
            } else {
                w.dismiss();
            }
        }
        if let Some(dir) = &self.run_dir {
            if !handover {
                dir.clear_state();
                dir.remove(&page_file());
            }
        }
        if let Some(old) = self.oom_restore.take() {
            let _ = std::fs::write("/proc/self/oom_score_adj", old);
        }
        // A mount still frozen stays armed on its descriptor: keep that
        // descriptor open for the life of the process.
        for &i in &self.still_frozen {
            std::mem::forget(self.targets[i].fd.clone());
        }
        // Stop the threads; one stuck in the kernel ends when its call does.
        let stuck = std::mem::take(&mut self.pending);
        self.workers.stop(&stuck);
        self.pending = stuck;
        guard::reset_if(!handover);
        let mut mounts = std::mem::take(&mut self.reports);
        mounts.reverse();
        WindowReport {
            mounts,
            window_ms,
            warnings: std::mem::take(&mut self.warnings),
            problems: std::mem::take(&mut self.problems),
            broke,
        }
    }

    /// Why the freeze did not hold for the whole window, as SPEC §6.4
    /// point 6 judges it: the watchdog thawed a mount (the runner could not
    /// act by the deadline: stopped, stuck or killed), or the runner's own
    /// last thaw came after `--max-freeze`. `None`: it held.
    fn broke(&self) -> Option<FreezeError> {
        let paths: Vec<PathBuf> = (0..self.targets.len())
            .filter(|&i| self.shared.watchdog_thawed_at(i).is_some())
            .map(|i| self.targets[i].path.clone())
            .collect();
        if !paths.is_empty() {
            return Some(FreezeError::WatchdogThawed {
                paths,
                max_freeze: self.max_freeze,
            });
        }
        let late = self.last_thaw?.checked_duration_since(self.deadline()?)?;
        (!late.is_zero()).then_some(FreezeError::Overran {
            max_freeze: self.max_freeze,
            late,
        })
    }
}

impl Drop for FreezeWindow {
    fn drop(&mut self) {
        // Any early return or unwinding: thaw first, then the rest.
        self.finish();
    }
}

/// The window's part of the status (`phases.freeze`).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WindowReport {
    pub mounts: Vec<MountReport>,
    pub window_ms: f64,
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Thaws that failed (`FsFreezeFailed`): those mounts are still frozen.
    #[serde(skip)]
    pub problems: Vec<FreezeError>,
    /// Why the freeze did not hold until the runner's own thaw, in time
    /// (FsFreezeTimeout), when it did not.
    #[serde(skip)]
    pub broke: Option<FreezeError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::path::Path;
    use std::sync::Mutex;

    /// Records the call order; `busy` fds answer EBUSY, `fail` fds EIO,
    /// `thaw_fail` fds fail every FITHAW with EIO.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(&'static str, RawFd)>>,
        busy: Vec<RawFd>,
        fail: Vec<RawFd>,
        thaw_fail: Vec<RawFd>,
    }

    impl FreezeOps for Recorder {
        fn freeze(&self, fd: RawFd) -> Result<(), Errno> {
            self.calls.lock().unwrap().push(("freeze", fd));
            if self.busy.contains(&fd) {
                Err(Errno::EBUSY)
            } else if self.fail.contains(&fd) {
                Err(Errno::EIO)
            } else {
                Ok(())
            }
        }
        fn thaw(&self, fd: RawFd) -> Result<(), Errno> {
            self.calls.lock().unwrap().push(("thaw", fd));
            if self.thaw_fail.contains(&fd) {
                Err(Errno::EIO)
            } else {
                Ok(())
            }
        }
    }

    // The guard table is process-wide: these tests run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn targets(n: usize) -> Vec<MountTarget> {
        (0..n)
            .map(|i| {
                // Real descriptors (of /dev/null) so fd numbers are distinct;
                // the recorder never passes them to the kernel, but the guard
                // table's thaw does (EINVAL/ENOTTY there is harmless).
                let f = std::fs::File::open("/dev/null").unwrap();
                MountTarget {
                    path: format!("/m{i}").into(),
                    device: format!("7:{i}"),
                    fs_type: "ext4".into(),
                    fd: Arc::new(f.into()),
                    stage: i as u32 + 1,
                }
            })
            .collect()
    }

    /// `n` targets in one stage, then `after` more in a stage of their own each.
    fn staged(n: usize, after: usize) -> Vec<MountTarget> {
        let mut t = targets(n + after);
        for (i, x) in t.iter_mut().enumerate() {
            x.stage = if i < n { 1 } else { (i - n) as u32 + 2 };
        }
        t
    }

    /// Freezes that wait until `width` of them are in flight at once (so a
    /// sequential window would time out), sleep `slow` on the `slow_fds`,
    /// answer EBUSY on `busy`.
    struct Concurrent {
        calls: Mutex<Vec<(&'static str, RawFd)>>,
        in_flight: std::sync::atomic::AtomicUsize,
        width: usize,
        slow_fds: Vec<RawFd>,
        slow: Duration,
        busy: Vec<RawFd>,
        /// Set once a busy call has returned: slow calls wait for it, so
        /// they complete after the abort however the threads are scheduled.
        busy_done: std::sync::atomic::AtomicBool,
    }

    impl Concurrent {
        fn new(width: usize) -> Concurrent {
            Concurrent {
                calls: Mutex::new(Vec::new()),
                in_flight: Default::default(),
                width,
                slow_fds: Vec::new(),
                slow: Duration::ZERO,
                busy: Vec::new(),
                busy_done: Default::default(),
            }
        }
        fn thaws(&self) -> Vec<RawFd> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .filter(|c| c.0 == "thaw")
                .map(|c| c.1)
                .collect()
        }
    }

    impl FreezeOps for Concurrent {
        fn freeze(&self, fd: RawFd) -> Result<(), Errno> {
            if self.busy.contains(&fd) {
                // Answer only once the slow calls are in flight, so the
                // abort gives up on calls that were issued.
                let until = Instant::now() + Duration::from_secs(5);
                while self.in_flight.load(Ordering::SeqCst) < self.slow_fds.len()
                    && Instant::now() < until
                {
                    thread::sleep(Duration::from_millis(1));
                }
                self.calls.lock().unwrap().push(("busy", fd));
                self.busy_done.store(true, Ordering::SeqCst);
                return Err(Errno::EBUSY);
            }
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let until = Instant::now() + Duration::from_secs(5);
            while n <= self.width
                && self.in_flight.load(Ordering::SeqCst) < self.width
                && Instant::now() < until
            {
                thread::sleep(Duration::from_millis(1));
            }
            if self.slow_fds.contains(&fd) {
                let until = Instant::now() + Duration::from_secs(5);
                while !self.busy.is_empty()
                    && !self.busy_done.load(Ordering::SeqCst)
                    && Instant::now() < until
                {
                    thread::sleep(Duration::from_millis(1));
                }
                thread::sleep(self.slow);
            }
            self.calls.lock().unwrap().push(("freeze", fd));
            Ok(())
        }
        fn thaw(&self, fd: RawFd) -> Result<(), Errno> {
            self.calls.lock().unwrap().push(("thaw", fd));
            Ok(())
        }
    }

    /// SPEC.md §6.1: the calls of a stage are in flight together (each of
    /// the three waits for the other two, under a per-call deadline that a
    /// sequential window would pass), the next stage begins only when the
    /// first has completed, and the thaw goes stage by stage in reverse.
    #[test]
    fn a_stage_is_frozen_concurrently_and_thawed_in_reverse() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ops = Arc::new(Concurrent::new(3));
        let mut o = opts();
        o.per_call = Duration::from_secs(2);
        let mut w = FreezeWindow::prepare(staged(3, 1), ops.clone(), o).unwrap();
        let f = fds(&w);
        w.freeze_all().unwrap();
        let report = w.close();
        let calls = ops.calls.lock().unwrap().clone();
        let pos = |c: (&'static str, RawFd)| calls.iter().position(|x| *x == c).unwrap();
        // Stage 2 after every call of stage 1; thawed first.
        assert!((0..3).all(|i| pos(("freeze", f[i])) < pos(("freeze", f[3]))));
        assert_eq!(ops.thaws()[0], f[3]);
        assert_eq!(ops.thaws().len(), 4);
        let stages: Vec<u32> = report.mounts.iter().map(|m| m.stage).collect();
        assert_eq!(stages, vec![1, 1, 1, 2]);
        assert!(report.mounts.iter().all(|m| m.frozen_ms >= 0.0));
        assert!(!guard::any_armed());
    }

    /// EBUSY on one mount of a stage aborts it: the foreign freeze is never
    /// thawed, and the other calls of the stage, which succeed only after the
    /// abort, are thawed by their threads; nothing stays armed.
    #[test]
    fn ebusy_in_a_stage_thaws_the_calls_that_complete_after_the_abort() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = staged(3, 0);
        let f: Vec<RawFd> = t.iter().map(|t| t.fd.as_raw_fd()).collect();
        let mut ops = Concurrent::new(0);
        ops.busy = vec![f[1]];
        ops.slow_fds = vec![f[0], f[2]];
        ops.slow = Duration::from_millis(200);
        let ops = Arc::new(ops);
        let mut w = FreezeWindow::prepare(t, ops.clone(), opts()).unwrap();
        let err = w.freeze_all().unwrap_err();
        assert_eq!(err.code(), ErrorCode::FsFreezeFailed);
        assert!(
            matches!(&err, FreezeError::Busy { path } if path == Path::new("/m1")),
            "{err:?}"
        );
        let report = w.close();
        let mut thawed = ops.thaws();
        thawed.sort_unstable();
        assert_eq!(thawed, vec![f[0], f[2]]);
        assert!(report.mounts.is_empty());
        let late = report
            .warnings
            .iter()
            .filter(|w| w.contains("thawed at once"));
        assert_eq!(late.count(), 2, "{:?}", report.warnings);
        assert!(!guard::any_armed());
    }

    /// One call of a stage passes its deadline: 122; the calls that froze
    /// are thawed by the window, the late one by its thread when it returns.
    #[test]
    fn one_call_past_its_deadline_aborts_the_stage_and_everything_is_thawed() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = staged(3, 1);
        let f: Vec<RawFd> = t.iter().map(|t| t.fd.as_raw_fd()).collect();
        let mut ops = Concurrent::new(0);
        ops.slow_fds = vec![f[1]];
        ops.slow = Duration::from_millis(400);
        let ops = Arc::new(ops);
        let mut o = opts();
        o.per_call = Duration::from_millis(100);
        let mut w = FreezeWindow::prepare(t, ops.clone(), o).unwrap();
        let err = w.freeze_all().unwrap_err();
        assert_eq!(err.code(), ErrorCode::FsFreezeTimeout);
        assert!(
            matches!(&err, FreezeError::Timeout { paths, .. } if paths.contains(&"/m1".into())),
            "{err:?}"
        );
        let report = w.close();
        let mut thawed = ops.thaws();
        thawed.sort_unstable();
        assert_eq!(thawed, vec![f[0], f[1], f[2]]);
        // Stage 2 never began.
        assert!(!ops.calls.lock().unwrap().contains(&("freeze", f[3])));
        assert_eq!(report.mounts.len(), 2);
        assert!(!guard::any_armed());
    }

    /// A window with no watchdog and no thread yet (prepare starts as many
    /// as the widest stage), as tests of the call order need.
    fn opts() -> WindowOptions {
        WindowOptions {
            max_freeze: Duration::from_secs(5),
            per_call: Duration::from_secs(5),
            run_dir: None,
            operation_id: "t".into(),
            standby: WindowStandby::start(None, 0, false, None).unwrap(),
        }
    }

    fn fds(w: &FreezeWindow) -> Vec<RawFd> {
        w.targets().iter().map(|t| t.fd.as_raw_fd()).collect()
    }

    #[test]
    fn thaw_is_the_reverse_of_freeze() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let rec = Arc::new(Recorder::default());
        let mut w = FreezeWindow::prepare(targets(3), rec.clone(), opts()).unwrap();
        let f = fds(&w);
        w.freeze_all().unwrap();
        let report = w.close();
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                ("freeze", f[0]),
                ("freeze", f[1]),
                ("freeze", f[2]),
                ("thaw", f[2]),
                ("thaw", f[1]),
                ("thaw", f[0]),
            ]
        );
        let paths: Vec<_> = report.mounts.iter().map(|m| m.path.clone()).collect();
        assert_eq!(
            paths,
            vec![PathBuf::from("/m0"), "/m1".into(), "/m2".into()]
        );
        assert!(!guard::any_armed());
    }

    #[test]
    fn busy_mount_stops_the_window_and_is_never_thawed() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = targets(3);
        let t0 = t[0].fd.as_raw_fd();
        let busy = t[1].fd.as_raw_fd();
        let rec = Arc::new(Recorder {
            busy: vec![busy],
            ..Default::default()
        });
        let mut w = FreezeWindow::prepare(t, rec.clone(), opts()).unwrap();
        let err = w.freeze_all().unwrap_err();
        assert_eq!(err.code(), ErrorCode::FsFreezeFailed);
        assert!(matches!(err, FreezeError::Busy { .. }), "{err:?}");
        let report = w.close();
        // Only the first mount was frozen, so only it is reported thawed;
        // the third was never attempted.
        assert_eq!(report.mounts.len(), 1);
        assert_eq!(report.mounts[0].path, PathBuf::from("/m0"));
        let calls = rec.calls.lock().unwrap().clone();
        let first = t0;
        assert_eq!(
            calls,
            vec![("freeze", first), ("freeze", busy), ("thaw", first)]
        );
        assert!(!guard::any_armed());
    }

    #[test]
    fn failed_freeze_reports_121() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = targets(2);
        let bad = t[0].fd.as_raw_fd();
        let rec = Arc::new(Recorder {
            fail: vec![bad],
            ..Default::default()
        });
        let mut w = FreezeWindow::prepare(t, rec, opts()).unwrap();
        let err = w.freeze_all().unwrap_err();
        assert_eq!(err.code(), ErrorCode::FsFreezeFailed);
        assert!(
            matches!(
                err,
                FreezeError::Ioctl {
                    errno: Errno::EIO,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(w.close().mounts.is_empty());
    }

    /// A freeze that blocks past its per-call deadline: 122, and the worker
    /// thaws the mount itself when the call finally completes.
    #[test]
    fn blocked_freeze_times_out_and_is_thawed_when_it_completes() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        struct Slow(Mutex<Vec<&'static str>>);
        impl FreezeOps for Slow {
            fn freeze(&self, _fd: RawFd) -> Result<(), Errno> {
                thread::sleep(Duration::from_millis(300));
                self.0.lock().unwrap().push("freeze");
                Ok(())
            }
            fn thaw(&self, _fd: RawFd) -> Result<(), Errno> {
                self.0.lock().unwrap().push("thaw");
                Ok(())
            }
        }
        let ops = Arc::new(Slow(Mutex::new(Vec::new())));
        let mut o = opts();
        o.per_call = Duration::from_millis(50);
        let mut w = FreezeWindow::prepare(targets(1), ops.clone(), o).unwrap();
        let err = w.freeze_all().unwrap_err();
        assert_eq!(err.code(), ErrorCode::FsFreezeTimeout);
        drop(w);
        thread::sleep(Duration::from_millis(500));
        assert_eq!(*ops.0.lock().unwrap(), vec!["freeze", "thaw"]);
        guard::reset_if(true);
    }

    /// Issue 10 item 6: a FITHAW that fails is retried, then reported as
    /// FsFreezeFailed; the mount stays marked frozen for the watchdog and
    /// the recovery record stays; the other mount is thawed normally.
    #[test]
    fn failed_thaw_is_121_retried_and_kept_for_recovery() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = targets(2);
        let stuck = t[1].fd.as_raw_fd();
        let ok = t[0].fd.as_raw_fd();
        let rec = Arc::new(Recorder {
            thaw_fail: vec![stuck],
            ..Default::default()
        });
        // The run directory is trusted only under root-owned directories
        // nobody else may write (never /tmp): /run, as root.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (the recovery record goes to a root-owned run directory under /run); CI runs as root");
            return;
        }
        let dir = std::path::PathBuf::from(format!("/run/quiesce-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut o = opts();
        o.run_dir = Some(RunDir::new(&dir));
        let mut w = FreezeWindow::prepare(t, rec.clone(), o).unwrap();
        w.freeze_all().unwrap();
        let shared = w.shared.clone();
        let report = w.close();
        let calls = rec.calls.lock().unwrap().clone();
        let thaws_of = |fd| calls.iter().filter(|c| **c == ("thaw", fd)).count();
        assert_eq!(thaws_of(stuck), THAW_ATTEMPTS as usize);
        assert_eq!(thaws_of(ok), 1);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].code(), ErrorCode::FsFreezeFailed);
        assert!(
            matches!(&report.problems[0], FreezeError::Thaw { path, attempts: THAW_ATTEMPTS, .. } if path == Path::new("/m1")),
            "{:?}",
            report.problems[0]
        );
        assert_eq!(shared.state(1), watchdog::FROZEN);
        assert_eq!(shared.state(0), watchdog::THAWED);
        assert!(RunDir::new(&dir).read_state().unwrap().is_some());
        assert!(report.mounts[1].thaw_error.is_some());
        guard::shut();
        guard::reset_if(true);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 10 item 7: a signal while a FIFREEZE is in flight thaws that
    /// mount once the call succeeds (the worker sees `closing`), and a
    /// mount that answered EBUSY is never armed, so no handler thaws it.
    #[test]
    fn only_what_froze_is_armed() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let t = targets(1);
        let busy = t[0].fd.as_raw_fd();
        let rec = Arc::new(Recorder {
            busy: vec![busy],
            ..Default::default()
        });
        let mut w = FreezeWindow::prepare(t, rec.clone(), opts()).unwrap();
        assert!(w.freeze_all().is_err());
        assert!(!guard::any_armed(), "an EBUSY mount was armed");
        drop(w);
        assert_eq!(*rec.calls.lock().unwrap(), vec![("freeze", busy)]);
    }
}
