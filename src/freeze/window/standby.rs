//! What a window needs running before the run's first script (SPEC §8):
//! the page shared with the watchdog, the watchdog, idle until the window
//! arms it, and the freeze threads, idle until the window hands them their
//! crew.

use std::sync::Arc;

use crate::freeze::crew::FreezeThreads;
use crate::freeze::error::FreezeError;
use crate::freeze::state::RunDir;
use crate::freeze::watchdog::{ChildFilter, SharedState, Watchdog};

/// The file on tmpfs that holds the page shared with the watchdog, one per
/// runner (`window-PID.page`): a run starts its watchdog before its first
/// script, while the page of a dead run's window may still be waiting for
/// recovery, which reads the name `state.json` records.
pub fn page_file() -> String {
    format!("window-{}.page", std::process::id())
}

/// What a window needs running before the run's first script: the page it
/// shares with its watchdog, the watchdog (idle until the window arms it)
/// and the freeze threads. A script can only be kept from signalling the
/// processes and threads that exist when it is forked (SPEC §8), so a
/// `snapshot` starts these before its pre-scripts; a `freeze` starts them
/// just before its window.
pub struct WindowStandby {
    pub(super) shared: Arc<SharedState>,
    pub(super) watchdog: Option<Watchdog>,
    pub(super) threads: FreezeThreads,
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
