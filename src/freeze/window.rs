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

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::Serialize;

use super::guard::{self, Slot, Taken};
use super::ioctl::FreezeOps;
use super::state::{RecordedMount, RunDir, WindowRecord};
use super::watchdog::{self, ChildFilter, SharedState, Watchdog};
use crate::error::{ErrorCode, Problem};

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
}

impl MountTarget {
    /// Opens the mount point (a read-only directory open: harmless even on a
    /// frozen filesystem). Failure is `UnableToOpenMount` (123).
    pub fn open(path: PathBuf, device: String, fs_type: String) -> Result<MountTarget, Problem> {
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            Problem::new(
                ErrorCode::UnableToOpenMount,
                format!("cannot open mount point {}: {e}", path.display()),
            )
        })?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(MountTarget {
            path,
            device,
            fs_type,
            fd: Arc::new(fd),
        })
    }

    /// Opens a mount of the plan and checks that the descriptor is still on
    /// the planned mount: the pre-script ran since the plan was made, and a
    /// mount point unmounted in between opens its parent's filesystem, which
    /// must never be frozen in its place. The mount id (statx) identifies the
    /// mount; when it changed, the same filesystem remounted there (same
    /// `st_dev` as the planned `major:minor`) is still accepted. btrfs
    /// subvolumes have an `st_dev` of their own, so for them only the mount
    /// id can confirm. A mismatch is `UnableToOpenMount` (123).
    pub fn open_planned(
        path: PathBuf,
        device: String,
        fs_type: String,
        mount_id: u32,
    ) -> Result<MountTarget, Problem> {
        let t = MountTarget::open(path, device, fs_type)?;
        let changed = |what: String| {
            Problem::new(
                ErrorCode::UnableToOpenMount,
                format!(
                    "mount point {} no longer holds the planned filesystem {} ({what}); it was unmounted or replaced since the plan, so nothing is frozen in its place",
                    t.path.display(),
                    t.device
                ),
            )
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
    /// Time between its freeze and its thaw.
    pub frozen_ms: f64,
    /// How long its `FIFREEZE` call took (writeback of dirty data).
    pub freeze_ms: f64,
    /// Set when its thaw still failed after every retry: it is still frozen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thaw_error: Option<String>,
}

/// What the caller chooses for a window.
pub struct WindowOptions<'a> {
    pub max_freeze: Duration,
    pub per_call: Duration,
    /// Where `state.json` goes; `None` only in tests of the call order.
    pub run_dir: Option<RunDir>,
    pub operation_id: String,
    /// Fork a watchdog (always, except in tests of the call order).
    pub watchdog: bool,
    pub watchdog_filter: Option<ChildFilter<'a>>,
}

const PENDING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// How many times a `FITHAW` that fails is issued before the mount is
/// reported still frozen (`FsFreezeFailed`), and the pause between tries.
pub const THAW_ATTEMPTS: u32 = 3;
const THAW_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long closing a window waits for a `FIFREEZE` that passed its deadline
/// before handing that mount to the watchdog (see [`FreezeWindow::finish`]).
pub const PENDING_GRACE: Duration = Duration::from_secs(2);
/// The file on tmpfs that holds the page shared with the watchdog.
pub const PAGE_FILE: &str = "window.page";

/// Test-only fault points (`--features fault-injection`, `QUIESCE_FAULT`).
pub(crate) fn fault(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var("QUIESCE_FAULT").is_ok_and(|v| v.split(',').any(|f| f == name))
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}

/// Thaws `fd`, retrying a failure a bounded number of times. `EINVAL` (not
/// frozen: someone thawed it already) counts as thawed.
pub fn thaw_retrying(ops: &dyn FreezeOps, fd: RawFd) -> Result<(), Errno> {
    let mut last = Ok(());
    for attempt in 0..THAW_ATTEMPTS {
        if attempt > 0 {
            thread::sleep(THAW_RETRY_PAUSE);
        }
        match ops.thaw(fd) {
            Ok(()) | Err(Errno::EINVAL) => return Ok(()),
            Err(e) => last = Err(e),
        }
    }
    last
}

struct FreezeJob {
    index: usize,
    /// The worker's own reference: the descriptor outlives the window while
    /// this call is in the kernel.
    fd: Arc<OwnedFd>,
    state: Arc<AtomicU8>,
}

/// What the worker saw of one call.
struct CallDone {
    result: Result<(), Errno>,
    slot: Option<Slot>,
    /// Set when the worker thawed the mount itself (the window had given up
    /// on the call, or a signal was thawing everything): what the thaw said.
    thawed_by_worker: Option<Result<(), Errno>>,
}

/// One `FIFREEZE`, recorded the instant it returns, in the thread that made
/// it: the watchdog's page and the signal guard learn of a freeze of ours
/// only when it succeeded, and of nothing else (EBUSY: another tool's).
fn run_job(ops: &dyn FreezeOps, shared: &SharedState, job: &FreezeJob) -> CallDone {
    let fd = job.fd.as_raw_fd();
    let result = ops.freeze(fd);
    if fault("freeze-return-delay") {
        // Widens the gap between the call's return and its record, which a
        // signal or a SIGKILL could otherwise only hit by luck.
        thread::sleep(Duration::from_secs(1));
    }
    let slot = match result {
        Ok(()) => {
            shared.set_state(job.index, watchdog::FROZEN);
            guard::arm(fd)
        }
        Err(Errno::EBUSY) => {
            shared.set_state(job.index, watchdog::NOT_OURS);
            None
        }
        Err(_) => {
            shared.set_state(job.index, watchdog::IDLE);
            None
        }
    };
    let abandoned = job
        .state
        .compare_exchange(PENDING, DONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_err();
    let mut thawed_by_worker = None;
    if result.is_ok() && (abandoned || guard::closing()) {
        // Nobody else will thaw this one in time: do it now.
        let r = match slot.map(guard::take) {
            Some(Taken::Thawed(Ok(()))) => Ok(()),
            _ => thaw_retrying(ops, fd),
        };
        if r.is_ok() {
            shared.set_state(job.index, watchdog::THAWED);
        } else {
            // Still frozen: armed again for a later signal, and the
            // descriptor kept open for the life of the process so that
            // number stays this mount's. The watchdog still sees FROZEN.
            guard::arm(fd);
            std::mem::forget(job.fd.clone());
        }
        thawed_by_worker = Some(r);
    }
    CallDone {
        result,
        slot,
        thawed_by_worker,
    }
}

/// The thread that issues `FIFREEZE`, so that a call that blocks can be
/// abandoned at its deadline. If an abandoned call later succeeds while the
/// runner lives, the worker thaws that mount itself; once the runner is
/// gone, the watchdog does (it waits for the whole thread group).
struct FreezeWorker {
    jobs: Option<mpsc::Sender<FreezeJob>>,
    results: mpsc::Receiver<CallDone>,
    handle: Option<thread::JoinHandle<()>>,
}

impl FreezeWorker {
    fn start(ops: Arc<dyn FreezeOps>, shared: Arc<SharedState>) -> std::io::Result<FreezeWorker> {
        if fault("freeze-thread-spawn") {
            // What TasksMax or RLIMIT_NPROC make of a thread spawn.
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let (jobs, rx) = mpsc::channel::<FreezeJob>();
        let (tx, results) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("quiesce-freeze".into())
            .spawn(move || {
                // Signals are for the main thread, whose handler thaws.
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&nix::sys::signal::SigSet::all()),
                    None,
                );
                for job in rx {
                    let done = run_job(&*ops, &shared, &job);
                    drop(job);
                    if tx.send(done).is_err() {
                        break;
                    }
                }
            })?;
        Ok(FreezeWorker {
            jobs: Some(jobs),
            results,
            handle: Some(handle),
        })
    }
}

/// How a freeze attempt ended.
enum FreezeCall {
    Done(CallDone),
    TimedOut,
}

/// A mount this window froze.
struct Frozen {
    index: usize,
    slot: Option<Slot>,
    at: Instant,
    call_ms: f64,
    thawed_by_worker: Option<Result<(), Errno>>,
}

/// An open freeze window.
pub struct FreezeWindow {
    targets: Vec<MountTarget>,
    ops: Arc<dyn FreezeOps>,
    shared: Arc<SharedState>,
    worker: FreezeWorker,
    watchdog: Option<Watchdog>,
    run_dir: Option<RunDir>,
    /// In freeze order.
    frozen: Vec<Frozen>,
    /// The target whose `FIFREEZE` passed its deadline and may still complete.
    pending_freeze: Option<usize>,
    /// Targets whose thaw failed after every retry: still frozen.
    still_frozen: Vec<usize>,
    started: Option<Instant>,
    max_freeze: Duration,
    per_call: Duration,
    reports: Vec<MountReport>,
    oom_restore: Option<String>,
    /// `finish` ran (by `close`, or by `Drop` on an early way out).
    finished: bool,
    pub warnings: Vec<String>,
    problems: Vec<Problem>,
}

impl FreezeWindow {
    /// Prepares the window: records `state.json`, raises the OOM shield and
    /// forks the watchdog. Nothing is frozen yet.
    pub fn prepare(
        targets: Vec<MountTarget>,
        ops: Arc<dyn FreezeOps>,
        opts: WindowOptions<'_>,
    ) -> Result<FreezeWindow, Problem> {
        let internal = |what: String| Problem::new(ErrorCode::FsFreezeFailed, what);
        if targets.len() > guard::MAX_MOUNTS {
            return Err(internal(format!(
                "{} mounts to freeze; at most {} are supported",
                targets.len(),
                guard::MAX_MOUNTS
            )));
        }
        let max_freeze = opts.max_freeze.min(MAX_MAX_FREEZE);
        // The page lives in a file on tmpfs when there is a run directory, so
        // that recovery sees what the watchdog did after both are gone
        // (stores to a shared mapping of tmpfs: memory, no write, no disk).
        let shared = match &opts.run_dir {
            Some(dir) => {
                let _ = dir.ensure();
                SharedState::in_file(&dir.file(PAGE_FILE))
            }
            None => SharedState::new(),
        };
        let shared = Arc::new(shared.map_err(|e| internal(format!("shared page: {e}")))?);
        let mut warnings = Vec::new();
        // Neither the runner nor its watchdog may be the OOM killer's choice
        // while filesystems are frozen (the watchdog inherits the value).
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
        let worker = FreezeWorker::start(ops.clone(), shared.clone()).map_err(|e| {
            internal(format!(
                "cannot start the freeze thread ({e}); nothing was frozen (TasksMax or RLIMIT_NPROC too low?)"
            ))
        });
        let worker = match worker {
            Ok(w) => w,
            Err(p) => {
                if let Some(old) = oom_restore {
                    let _ = std::fs::write("/proc/self/oom_score_adj", old);
                }
                return Err(p);
            }
        };
        let mut window = FreezeWindow {
            targets,
            ops,
            shared,
            worker,
            watchdog: None,
            run_dir: opts.run_dir,
            frozen: Vec::new(),
            pending_freeze: None,
            still_frozen: Vec::new(),
            started: None,
            max_freeze,
            per_call: opts.per_call,
            reports: Vec::new(),
            oom_restore,
            finished: false,
            warnings,
            problems: Vec::new(),
        };
        if opts.watchdog {
            let fds: Vec<RawFd> = window.targets.iter().map(|t| t.fd.as_raw_fd()).collect();
            // The watchdog's own deadline is the window's longest possible
            // one (counted from now, before the first freeze), plus a margin.
            let deadline = Instant::now() + max_freeze;
            let w = Watchdog::spawn(&window.shared, &fds, deadline, opts.watchdog_filter).map_err(
                |e| {
                    internal(format!(
                        "cannot start the watchdog: {e}; nothing was frozen"
                    ))
                },
            )?;
            window.watchdog = Some(w);
        }
        if let Some(dir) = &window.run_dir {
            let record = window.record(&opts.operation_id);
            // On failure the window is dropped: its Drop dismisses the
            // watchdog and restores oom_score_adj.
            dir.write_state(&record)
                .map_err(|e| internal(format!("recovery state: {e}")))?;
        }
        Ok(window)
    }

    /// The recovery record: every planned mount in freeze order (index i is
    /// state i of the page in [`PAGE_FILE`], which says what became of it).
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
            page: self.run_dir.as_ref().map(|_| PAGE_FILE.to_string()),
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
            .map(|f| (&self.targets[f.index], f.call_ms))
            .collect()
    }

    /// When the window must be closed: `--max-freeze` after the first freeze.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.max_freeze)
    }

    /// Freezes every target in order. On any failure, thaws what it froze
    /// (reverse order) and returns the problem (121/122).
    pub fn freeze_all(&mut self) -> Result<(), Problem> {
        let interrupted = |sig: i32| {
            Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("interrupted by signal {sig} while freezing; everything frozen was thawed"),
            )
        };
        for i in 0..self.targets.len() {
            // A signal already thawed what was frozen: freeze nothing more.
            if let Some(sig) = crate::freeze::signals::pending() {
                self.thaw_all();
                return Err(interrupted(sig));
            }
            if let Err(p) = self.freeze_one(i) {
                self.thaw_all();
                return Err(p);
            }
        }
        // A signal during the last freeze call: do not hand back a window
        // the handler believes it thawed.
        if let Some(sig) = crate::freeze::signals::pending() {
            self.thaw_all();
            return Err(interrupted(sig));
        }
        Ok(())
    }

    fn freeze_one(&mut self, i: usize) -> Result<(), Problem> {
        let path = self.targets[i].path.display().to_string();
        let started = *self.started.get_or_insert_with(Instant::now);
        let window_left = (started + self.max_freeze).saturating_duration_since(Instant::now());
        let limit = self.per_call.min(window_left);
        // Attempting, for the watchdog only: a call in flight when the runner
        // is SIGKILLed is a freeze in progress (EBUSY is answered at once,
        // before any wait), so what completes after the runner is ours. The
        // signal guard is armed by the worker on success only.
        self.shared.set_state(i, watchdog::ATTEMPTING);
        let call_started = Instant::now();
        match self.call_freeze(i, limit) {
            FreezeCall::Done(done) => match done.result {
                Ok(()) => {
                    self.frozen.push(Frozen {
                        index: i,
                        slot: done.slot,
                        at: Instant::now(),
                        call_ms: call_started.elapsed().as_secs_f64() * 1000.0,
                        thawed_by_worker: done.thawed_by_worker,
                    });
                    Ok(())
                }
                // Someone else froze it: never thaw what we did not freeze.
                Err(Errno::EBUSY) => Err(Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!(
                        "{path} is already frozen by another tool (EBUSY); it is left as it is"
                    ),
                )),
                Err(e) => Err(Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!("cannot freeze {path}: {e} ({})", e.desc()),
                )),
            },
            FreezeCall::TimedOut => {
                // Not in `frozen`: thawing now would only get EINVAL. The
                // worker thaws it if the call completes while we live, the
                // watchdog (which sees it attempting) once we are gone.
                self.pending_freeze = Some(i);
                Err(Problem::new(
                    ErrorCode::FsFreezeTimeout,
                    format!(
                        "freezing {path} did not complete within {} ms",
                        limit.as_millis()
                    ),
                ))
            }
        }
    }

    fn call_freeze(&mut self, index: usize, limit: Duration) -> FreezeCall {
        let state = Arc::new(AtomicU8::new(PENDING));
        let job = FreezeJob {
            index,
            fd: self.targets[index].fd.clone(),
            state: state.clone(),
        };
        let failed = || {
            FreezeCall::Done(CallDone {
                result: Err(Errno::EIO),
                slot: None,
                thawed_by_worker: None,
            })
        };
        let Some(jobs) = &self.worker.jobs else {
            return failed();
        };
        if jobs.send(job).is_err() {
            return failed();
        }
        match self.worker.results.recv_timeout(limit) {
            Ok(done) => FreezeCall::Done(done),
            Err(_) => {
                if state
                    .compare_exchange(PENDING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    // The worker stays blocked in the kernel; no more jobs.
                    self.worker.jobs = None;
                    FreezeCall::TimedOut
                } else {
                    // It completed just now: take its result.
                    match self.worker.results.recv() {
                        Ok(done) => FreezeCall::Done(done),
                        Err(_) => failed(),
                    }
                }
            }
        }
    }

    /// Thaws everything frozen, in exact reverse of the order that froze.
    /// Idempotent: a mount a signal handler or the worker already thawed is
    /// not thawed twice. A thaw that still fails after [`THAW_ATTEMPTS`] is
    /// `FsFreezeFailed`: the mount stays marked frozen for the watchdog, armed
    /// for a later signal, and recorded for `quiesce thaw` and the next run.
    pub fn thaw_all(&mut self) {
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
            let t = &self.targets[f.index];
            let thaw_error = match result {
                Ok(()) => {
                    self.shared.set_state(f.index, watchdog::THAWED);
                    None
                }
                Err(e) => {
                    guard::arm(fd);
                    self.still_frozen.push(f.index);
                    self.problems.push(Problem::new(
                        ErrorCode::FsFreezeFailed,
                        format!(
                            "cannot thaw {} ({} attempts): {e} ({}); it is still frozen and recorded for recovery: run `quiesce thaw`",
                            t.path.display(),
                            THAW_ATTEMPTS,
                            e.desc()
                        ),
                    ));
                    Some(format!("{e} ({})", e.desc()))
                }
            };
            self.reports.push(MountReport {
                path: t.path.clone(),
                device: t.device.clone(),
                fs_type: t.fs_type.clone(),
                frozen_ms: f.at.elapsed().as_secs_f64() * 1000.0,
                freeze_ms: f.call_ms,
                thaw_error,
            });
        }
    }

    /// Closes the window: thaws, dismisses the watchdog (or leaves it armed
    /// when a mount may still be frozen), removes `state.json`, restores
    /// `oom_score_adj`. Returns per-mount reports (in freeze order), the
    /// window's length and the thaws that failed.
    pub fn close(mut self) -> WindowReport {
        self.finish()
    }

    /// A `FIFREEZE` that passed its deadline: wait for it, bounded by
    /// [`PENDING_GRACE`]. If it completes, the worker has already thawed it
    /// (it was abandoned). If not, the mount stays attempting in the page and
    /// is the watchdog's: the runner's process cannot end before that call
    /// returns (a thread in the kernel holds the thread group), the watchdog
    /// waits for exactly that end and then thaws it, without a deadline.
    fn await_pending(&mut self, i: usize) {
        let path = self.targets[i].path.display().to_string();
        match self.worker.results.recv_timeout(PENDING_GRACE) {
            Ok(done) => {
                self.pending_freeze = None;
                match done.thawed_by_worker {
                    Some(Ok(())) => self.warnings.push(format!(
                        "the freeze of {path} completed after its deadline and was thawed at once"
                    )),
                    Some(Err(e)) => {
                        self.still_frozen.push(i);
                        self.problems.push(Problem::new(
                            ErrorCode::FsFreezeFailed,
                            format!("the freeze of {path} completed after its deadline and its thaw failed: {e}; it is still frozen and recorded for recovery: run `quiesce thaw`"),
                        ));
                    }
                    None => {}
                }
            }
            Err(_) => self.warnings.push(format!(
                "the freeze call of {path} is still blocked in the kernel after its deadline; the watchdog thaws it when the call completes (this process ends only then)"
            )),
        }
    }

    fn finish(&mut self) -> WindowReport {
        if self.finished {
            return WindowReport::default();
        }
        self.finished = true;
        self.thaw_all();
        if let Some(i) = self.pending_freeze {
            self.await_pending(i);
        }
        let window_ms = self
            .started
            .map(|s| s.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        let (acted, thawed_by_watchdog) = self.shared.acted();
        if acted != watchdog::ACTED_NONE {
            self.warnings.push(format!(
                "the watchdog thawed {thawed_by_watchdog} mount(s) at its deadline"
            ));
        }
        // Something may still be frozen: the watchdog stays (it thaws when
        // the runner is gone), and the record stays for `quiesce thaw`.
        let handover = self.pending_freeze.is_some() || !self.still_frozen.is_empty();
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
                dir.remove(PAGE_FILE);
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
        // Stop the worker unless it is stuck in the kernel.
        if self.pending_freeze.is_none() {
            self.worker.jobs = None;
            if let Some(h) = self.worker.handle.take() {
                let _ = h.join();
            }
        }
        guard::reset_if(!handover);
        let mut mounts = std::mem::take(&mut self.reports);
        mounts.reverse();
        WindowReport {
            mounts,
            window_ms,
            warnings: std::mem::take(&mut self.warnings),
            problems: std::mem::take(&mut self.problems),
        }
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
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;
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
                }
            })
            .collect()
    }

    fn opts() -> WindowOptions<'static> {
        WindowOptions {
            max_freeze: Duration::from_secs(5),
            per_call: Duration::from_secs(5),
            run_dir: None,
            operation_id: "t".into(),
            watchdog: false,
            watchdog_filter: None,
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
        assert_eq!(err.code, ErrorCode::FsFreezeFailed);
        assert!(err.detail.contains("already frozen"));
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
        assert_eq!(err.code, ErrorCode::FsFreezeFailed);
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
        assert_eq!(err.code, ErrorCode::FsFreezeTimeout);
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
        assert_eq!(report.problems[0].code, ErrorCode::FsFreezeFailed);
        assert!(report.problems[0].detail.contains("/m1"));
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
