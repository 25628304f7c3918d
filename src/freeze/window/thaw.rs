//! Closing the window: thaw stage by stage in reverse, in exact reverse of
//! what froze, with the retries of a failed `FITHAW`; the calls the window
//! gave up on, waited for or handed to the watchdog; the per-mount reports;
//! whether the freeze held (`broke`). `Drop` closes a window left open.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::Serialize;

use super::freeze::{FreezeWindow, Frozen, WAIT_SLICE};
use super::standby::page_file;
use crate::freeze::crew::{thaw_retrying, LATE, THAW_ATTEMPTS};
use crate::freeze::error::FreezeError;
use crate::freeze::guard::{self, Taken};
use crate::freeze::watchdog;

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

/// How long closing a window waits for a `FIFREEZE` that passed its deadline
/// (or was still in flight when the window gave up) before handing that
/// mount to the watchdog (see `FreezeWindow::finish`).
pub const PENDING_GRACE: Duration = Duration::from_secs(2);

/// A mount thawed by `thaw_all`: what its thaw said, and when.
pub(super) struct Thawed {
    frozen: Frozen,
    result: Result<(), Errno>,
    at: Instant,
}

impl FreezeWindow {
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
