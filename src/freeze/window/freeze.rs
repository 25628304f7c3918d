//! The window itself: prepared with what the standby started (the freeze
//! threads handed their crew, the watchdog armed, `state.json` recorded),
//! then each stage's `FIFREEZE` calls issued concurrently, each with its
//! deadline. Its thaw and close are in `thaw.rs`.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::standby::{page_file, WindowStandby};
use super::targets::{stage_ranges, MountTarget};
use super::thaw::{MountReport, Thawed};
use crate::freeze::crew::{
    Call, Crew, FreezeThreads, FreezeWorkers, ABANDONED, DONE, ISSUED, NEVER_RAN, NO_JOB, NO_THAW,
    RUNNING,
};
use crate::freeze::error::FreezeError;
use crate::freeze::guard::{self, Slot};
use crate::freeze::ioctl::FreezeOps;
use crate::freeze::state::{RecordedMount, RunDir, WindowRecord};
use crate::freeze::watchdog::{self, SharedState, Watchdog};

/// Default and maximum of `--max-freeze`.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(60);
pub const MAX_MAX_FREEZE: Duration = Duration::from_secs(1800);
/// Deadline of one `FIFREEZE` call (it can block, e.g. on fanotify).
pub const PER_CALL_DEADLINE: Duration = Duration::from_secs(10);

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

/// The longest the window sleeps between two looks at its calls: the freeze
/// threads wake it on every return, this only bounds how late it notices a
/// signal (whose handler has already thawed everything armed).
pub(super) const WAIT_SLICE: Duration = Duration::from_millis(10);

/// Why a stage was aborted.
enum Abort {
    /// A call failed (EBUSY: someone else froze that mount).
    Failed(usize, Errno),
    /// The calls still in flight passed their deadline.
    Deadline(Duration),
    Signal(i32),
}

/// A mount this window froze.
pub(super) struct Frozen {
    pub(super) index: usize,
    pub(super) slot: Option<Slot>,
    pub(super) began_ns: u64,
    pub(super) ended_ns: u64,
    pub(super) thawed_by_worker: Option<Result<(), Errno>>,
}

/// An open freeze window.
pub struct FreezeWindow {
    pub(super) targets: Vec<MountTarget>,
    /// Index ranges of `targets`, one per stage, in freeze order.
    stages: Vec<Range<usize>>,
    pub(super) ops: Arc<dyn FreezeOps>,
    pub(super) shared: Arc<SharedState>,
    pub(super) workers: FreezeWorkers,
    pub(super) watchdog: Option<Watchdog>,
    pub(super) run_dir: Option<RunDir>,
    /// In freeze order: stage by stage, within a stage as the calls returned.
    /// INVARIANT: this and the next two vectors are reserved for every
    /// target in `prepare`, so the window never allocates to fill them.
    pub(super) frozen: Vec<Frozen>,
    /// Calls the window gave up on that may still complete (or just did).
    pub(super) pending: Vec<usize>,
    pub(super) thawed: Vec<Thawed>,
    /// Targets whose thaw failed after every retry: still frozen.
    pub(super) still_frozen: Vec<usize>,
    pub(super) started: Option<Instant>,
    pub(super) max_freeze: Duration,
    per_call: Duration,
    pub(super) reports: Vec<MountReport>,
    pub(super) oom_restore: Option<String>,
    /// `finish` ran (by `close`, or by `Drop` on an early way out).
    pub(super) finished: bool,
    /// When the runner's own last thaw returned.
    pub(super) last_thaw: Option<Instant>,
    pub warnings: Vec<String>,
    pub(super) problems: Vec<FreezeError>,
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
                        .map(|st| crate::freeze::state::dev_string(st.st_dev))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::freeze::crew::THAW_ATTEMPTS;
    use std::path::{Path, PathBuf};
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
