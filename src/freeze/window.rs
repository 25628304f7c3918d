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

use super::guard::{self, Slot};
use super::ioctl::FreezeOps;
use super::state::{RecordedMount, RunDir, WindowRecord};
use super::watchdog::{self, ChildFilter, SharedState, Watchdog};
use crate::error::{ErrorCode, Problem};

/// Default and maximum of `--max-freeze`.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(60);
pub const MAX_MAX_FREEZE: Duration = Duration::from_secs(1800);
/// Deadline of one `FIFREEZE` call (it can block, e.g. on fanotify).
pub const PER_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// A mount to freeze, with its descriptor opened before the window.
#[derive(Debug)]
pub struct MountTarget {
    pub path: PathBuf,
    pub device: String,
    pub fs_type: String,
    pub fd: OwnedFd,
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
            fd,
        })
    }
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
    /// Set when its thaw ioctl failed (it is reported, never retried blindly).
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

struct FreezeJob {
    index: usize,
    fd: RawFd,
    state: Arc<AtomicU8>,
}

/// The thread that issues `FIFREEZE`, so that a call that blocks can be
/// abandoned at its deadline. If an abandoned call later succeeds, the
/// worker thaws that mount itself; the watchdog covers the runner's death.
struct FreezeWorker {
    jobs: Option<mpsc::Sender<FreezeJob>>,
    results: mpsc::Receiver<(usize, Result<(), Errno>)>,
    handle: Option<thread::JoinHandle<()>>,
}

impl FreezeWorker {
    fn start(ops: Arc<dyn FreezeOps>, shared: Arc<SharedState>) -> FreezeWorker {
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
                    let r = ops.freeze(job.fd);
                    let abandoned = job
                        .state
                        .compare_exchange(PENDING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err();
                    if abandoned && r.is_ok() {
                        // The window gave up on this mount and thawed the
                        // others; this one must not stay frozen.
                        let _ = ops.thaw(job.fd);
                        shared.set_state(job.index, watchdog::THAWED);
                    }
                    if tx.send((job.index, r)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn freeze worker");
        FreezeWorker {
            jobs: Some(jobs),
            results,
            handle: Some(handle),
        }
    }
}

/// How a freeze attempt ended.
enum FreezeCall {
    Done(Result<(), Errno>),
    TimedOut,
}

/// An open freeze window.
pub struct FreezeWindow {
    targets: Vec<MountTarget>,
    ops: Arc<dyn FreezeOps>,
    shared: Arc<SharedState>,
    worker: FreezeWorker,
    watchdog: Option<Watchdog>,
    run_dir: Option<RunDir>,
    /// In freeze order: (target index, guard slot, frozen at, how long the
    /// FIFREEZE call took in ms).
    frozen: Vec<(usize, Slot, Instant, f64)>,
    /// A `FIFREEZE` that passed its deadline and may still complete.
    pending_freeze: bool,
    started: Option<Instant>,
    max_freeze: Duration,
    per_call: Duration,
    reports: Vec<MountReport>,
    oom_restore: Option<String>,
    /// `finish` ran (by `close`, or by `Drop` on an early way out).
    finished: bool,
    pub warnings: Vec<String>,
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
        let shared =
            Arc::new(SharedState::new().map_err(|e| internal(format!("shared page: {e}")))?);
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
        let worker = FreezeWorker::start(ops.clone(), shared.clone());
        let mut window = FreezeWindow {
            targets,
            ops,
            shared,
            worker,
            watchdog: None,
            run_dir: opts.run_dir,
            frozen: Vec::new(),
            pending_freeze: false,
            started: None,
            max_freeze,
            per_call: opts.per_call,
            reports: Vec::new(),
            oom_restore,
            finished: false,
            warnings,
        };
        if opts.watchdog {
            let fds: Vec<RawFd> = window.targets.iter().map(|t| t.fd.as_raw_fd()).collect();
            // The watchdog's own deadline is the window's longest possible
            // one (counted from now, before the first freeze), plus a margin.
            let deadline = Instant::now() + max_freeze;
            let w = Watchdog::spawn(&window.shared, &fds, deadline, opts.watchdog_filter)
                .map_err(|e| internal(format!("cannot start the watchdog: {e}")))?;
            window.watchdog = Some(w);
        }
        if let Some(dir) = &window.run_dir {
            let me = crate::supervise::procfs::read_stat(std::process::id() as i32)
                .map(|s| s.start)
                .unwrap_or(0);
            let record = WindowRecord {
                operation_id: opts.operation_id.clone(),
                runner_pid: std::process::id() as i32,
                runner_start: me,
                watchdog_pid: window.watchdog_pid(),
                // The device as fstat of the opened mount point sees it (what
                // thaw_path compares with): on btrfs a subvolume's st_dev
                // differs from the superblock device mountinfo shows.
                mounts: window
                    .targets
                    .iter()
                    .map(|t| RecordedMount {
                        path: t.path.clone(),
                        device: nix::sys::stat::fstat(t.fd.as_raw_fd())
                            .map(|st| super::state::dev_string(st.st_dev))
                            .unwrap_or_else(|_| t.device.clone()),
                    })
                    .collect(),
            };
            // On failure the window is dropped: its Drop dismisses the
            // watchdog and restores oom_score_adj.
            dir.write_state(&record)
                .map_err(|e| internal(format!("recovery state: {e}")))?;
        }
        Ok(window)
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
            .map(|(i, _, _, ms)| (&self.targets[*i], *ms))
            .collect()
    }

    /// When the window must be closed: `--max-freeze` after the first freeze.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.max_freeze)
    }

    /// Freezes every target in order. On any failure, thaws what it froze
    /// (reverse order) and returns the problem (121/122).
    pub fn freeze_all(&mut self) -> Result<(), Problem> {
        for i in 0..self.targets.len() {
            // A signal already thawed what was frozen: freeze nothing more.
            if let Some(sig) = crate::freeze::signals::pending() {
                self.thaw_all();
                return Err(Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!(
                        "interrupted by signal {sig} while freezing; everything frozen was thawed"
                    ),
                ));
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
            return Err(Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("interrupted by signal {sig} while freezing; everything frozen was thawed"),
            ));
        }
        Ok(())
    }

    fn freeze_one(&mut self, i: usize) -> Result<(), Problem> {
        let fd = self.targets[i].fd.as_raw_fd();
        let path = self.targets[i].path.display().to_string();
        let started = *self.started.get_or_insert_with(Instant::now);
        let window_left = (started + self.max_freeze).saturating_duration_since(Instant::now());
        let limit = self.per_call.min(window_left);
        // Armed before the ioctl: a signal arriving while it runs thaws it.
        let slot = guard::arm(fd).expect("plan size checked in prepare");
        self.shared.set_state(i, watchdog::ATTEMPTING);
        let call_started = Instant::now();
        let call = self.call_freeze(i, fd, limit);
        match call {
            FreezeCall::Done(Ok(())) => {
                self.shared.set_state(i, watchdog::FROZEN);
                let call_ms = call_started.elapsed().as_secs_f64() * 1000.0;
                self.frozen.push((i, slot, Instant::now(), call_ms));
                Ok(())
            }
            FreezeCall::Done(Err(Errno::EBUSY)) => {
                // Someone else froze it: never thaw what we did not freeze.
                guard::disarm(slot);
                self.shared.set_state(i, watchdog::NOT_OURS);
                Err(Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!(
                        "{path} is already frozen by another tool (EBUSY); it is left as it is"
                    ),
                ))
            }
            FreezeCall::Done(Err(e)) => {
                guard::disarm(slot);
                self.shared.set_state(i, watchdog::IDLE);
                Err(Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!("cannot freeze {path}: {e} ({})", e.desc()),
                ))
            }
            FreezeCall::TimedOut => {
                // Still armed and marked attempting, but not in `frozen`:
                // thawing now would only get EINVAL. The worker thaws it if
                // the call ever completes, the watchdog if we are gone.
                let _ = slot;
                self.pending_freeze = true;
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

    fn call_freeze(&mut self, index: usize, fd: RawFd, limit: Duration) -> FreezeCall {
        let state = Arc::new(AtomicU8::new(PENDING));
        let job = FreezeJob {
            index,
            fd,
            state: state.clone(),
        };
        let Some(jobs) = &self.worker.jobs else {
            return FreezeCall::Done(Err(Errno::EIO));
        };
        if jobs.send(job).is_err() {
            return FreezeCall::Done(Err(Errno::EIO));
        }
        match self.worker.results.recv_timeout(limit) {
            Ok((_, r)) => FreezeCall::Done(r),
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
                        Ok((_, r)) => FreezeCall::Done(r),
                        Err(_) => FreezeCall::Done(Err(Errno::EIO)),
                    }
                }
            }
        }
    }

    /// Thaws everything frozen, in exact reverse of the order that froze.
    /// Idempotent: a mount already thawed by a signal handler is not thawed
    /// twice.
    pub fn thaw_all(&mut self) {
        while let Some((i, slot, at, freeze_ms)) = self.frozen.pop() {
            // Out of the table first, so a signal arriving now does not
            // thaw it a second time. Thawed on its own descriptor even when
            // a handler already took it: the handler may have run while this
            // FIFREEZE was still in flight (its thaw then got EINVAL and the
            // freeze completed after it). A second thaw is EINVAL, harmless.
            let _ = guard::disarm(slot);
            let result = Some(self.ops.thaw(self.targets[i].fd.as_raw_fd()));
            self.shared.set_state(i, watchdog::THAWED);
            let t = &self.targets[i];
            let thaw_error = match result {
                Some(Err(Errno::EINVAL)) | Some(Ok(())) | None => None,
                Some(Err(e)) => Some(format!("{e} ({})", e.desc())),
            };
            if let Some(err) = &thaw_error {
                self.warnings
                    .push(format!("thawing {} failed: {err}", t.path.display()));
            }
            self.reports.push(MountReport {
                path: t.path.clone(),
                device: t.device.clone(),
                fs_type: t.fs_type.clone(),
                frozen_ms: at.elapsed().as_secs_f64() * 1000.0,
                freeze_ms,
                thaw_error,
            });
        }
    }

    /// Closes the window: thaws, dismisses the watchdog (or leaves it armed
    /// when a freeze call may still complete), removes `state.json`, restores
    /// `oom_score_adj`. Returns per-mount reports (in freeze order) and the
    /// window's length.
    pub fn close(mut self) -> WindowReport {
        self.finish()
    }

    fn finish(&mut self) -> WindowReport {
        if self.finished {
            return WindowReport::default();
        }
        self.finished = true;
        self.thaw_all();
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
        if let Some(w) = self.watchdog.take() {
            if self.pending_freeze {
                self.warnings.push(
                    "a freeze call is still blocked in the kernel; the watchdog stays to thaw it when it completes"
                        .into(),
                );
                w.leave_armed();
            } else {
                w.dismiss();
            }
        }
        if let Some(dir) = &self.run_dir {
            if !self.pending_freeze {
                dir.clear_state();
            }
        }
        if let Some(old) = self.oom_restore.take() {
            let _ = std::fs::write("/proc/self/oom_score_adj", old);
        }
        // Stop the worker unless it is stuck in the kernel.
        if !self.pending_freeze {
            self.worker.jobs = None;
            if let Some(h) = self.worker.handle.take() {
                let _ = h.join();
            }
        }
        guard::reset_if(!self.pending_freeze);
        let mut mounts = std::mem::take(&mut self.reports);
        mounts.reverse();
        WindowReport {
            mounts,
            window_ms,
            warnings: std::mem::take(&mut self.warnings),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the call order; `busy` fds answer EBUSY, `fail` fds EIO.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(&'static str, RawFd)>>,
        busy: Vec<RawFd>,
        fail: Vec<RawFd>,
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
            Ok(())
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
                    fd: f.into(),
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
}
