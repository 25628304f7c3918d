//! What can go wrong in a freeze window, one variant per failed operation,
//! with the path and the errno as data. The error table's [`Problem`]
//! (name, code, action) is made from it once, through `From`, where the job
//! files it.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{ErrorCode, Fix, Problem};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    /// A mount to freeze could not be opened (123).
    #[error("cannot open mount point {}: {errno}", path.display())]
    Open { path: PathBuf, errno: Errno },
    /// The mount point no longer holds the planned filesystem (123).
    #[error("mount point {} no longer holds the planned filesystem {device} ({why}); it was unmounted or replaced since the plan, so nothing is frozen in its place", path.display())]
    MountChanged {
        path: PathBuf,
        device: String,
        why: String,
    },
    /// Someone else froze it (EBUSY): never thawed by us.
    #[error("{} is already frozen by another tool (EBUSY); it is left as it is, everything this run froze was thawed", path.display())]
    Busy { path: PathBuf },
    /// `FIFREEZE` failed.
    #[error("cannot freeze {}: {errno} ({}); everything frozen was thawed", path.display(), errno.desc())]
    Ioctl { path: PathBuf, errno: Errno },
    /// Calls that did not complete within their deadline (122).
    #[error("freezing {} did not complete within {} ms; everything frozen was thawed", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "), limit.as_millis())]
    Timeout {
        paths: Vec<PathBuf>,
        limit: Duration,
    },
    /// A signal reached the runner while it was freezing.
    #[error("interrupted by signal {0} while freezing; everything frozen was thawed")]
    Interrupted(i32),
    /// `FITHAW` still failed after its retries: the mount is still frozen.
    #[error("cannot thaw {} ({attempts} attempts): {errno} ({}); it is still frozen and recorded for recovery: run `quiesce thaw`", path.display(), errno.desc())]
    Thaw {
        path: PathBuf,
        errno: Errno,
        attempts: u32,
    },
    /// A freeze the window had given up on completed, and its thaw failed.
    #[error("the freeze of {} completed after the window gave up on it and its thaw failed: {errno}; it is still frozen and recorded for recovery: run `quiesce thaw`", path.display())]
    LateThaw { path: PathBuf, errno: Errno },
    /// The runner could not thaw by the deadline (stopped, stuck, killed):
    /// the watchdog did (122; SPEC §6.4 point 6).
    #[error("{} not thawed by the runner within --max-freeze ({} s) (it was stopped, stuck or killed): the watchdog thawed {} at its deadline, so the snapshot command may have run on thawed filesystems; the snapshot is at most crash-consistent", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "), max_freeze.as_secs(), if paths.len() == 1 { "it" } else { "them" })]
    WatchdogThawed {
        paths: Vec<PathBuf>,
        max_freeze: Duration,
    },
    /// The runner's own thaw came after the deadline (122).
    #[error("the filesystems stayed frozen past --max-freeze ({} s): the runner thawed them {} ms late (it was stopped or starved); a window that exceeds its deadline is not reported consistent", max_freeze.as_secs(), late.as_millis())]
    Overran {
        max_freeze: Duration,
        late: Duration,
    },
    /// The window could not be set up (too many mounts, the shared page,
    /// the watchdog, a thread): nothing was frozen.
    #[error("{0}")]
    Setup(String),
}

impl FreezeError {
    /// Its row of the error table.
    pub fn code(&self) -> ErrorCode {
        match self {
            FreezeError::Open { .. } | FreezeError::MountChanged { .. } => {
                ErrorCode::UnableToOpenMount
            }
            FreezeError::Timeout { .. }
            | FreezeError::WatchdogThawed { .. }
            | FreezeError::Overran { .. } => ErrorCode::FsFreezeTimeout,
            _ => ErrorCode::FsFreezeFailed,
        }
    }
}

impl FreezeError {
    /// What the operator does about it.
    pub fn fix(&self) -> Fix {
        match self {
            FreezeError::Open { path, .. } | FreezeError::MountChanged { path, .. } => {
                Fix::Mount(path.clone())
            }
            FreezeError::Busy { path } => Fix::FrozenElsewhere(path.clone()),
            FreezeError::Ioctl { path, errno } => match errno {
                Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EINVAL => Fix::Unfreezable(path.clone()),
                Errno::EPERM => Fix::RunAsRoot,
                _ => Fix::Row,
            },
            FreezeError::Timeout { .. } => Fix::Row,
            FreezeError::WatchdogThawed { .. } | FreezeError::Overran { .. } => Fix::RunnerStalled,
            FreezeError::Interrupted(sig) => Fix::Interrupted(*sig),
            FreezeError::Thaw { .. } | FreezeError::LateThaw { .. } => Fix::Thaw,
            FreezeError::Setup(_) => Fix::WindowSetup,
        }
    }
}

impl From<FreezeError> for Problem {
    fn from(e: FreezeError) -> Problem {
        let fix = e.fix();
        Problem::new(e.code(), e.to_string()).with_fix(fix)
    }
}
