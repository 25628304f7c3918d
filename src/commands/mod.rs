//! One module per subcommand: each returns the status document and the exit
//! code; `main` only parses the command line and prints.

pub mod audit;
pub mod check;
pub mod executable;
pub mod freeze;
pub mod phase;
pub mod runner;
pub mod script;
pub mod snapshot;
pub mod thaw;
pub mod window;

use std::path::PathBuf;

use crate::error::{ErrorCode, Problem};
use crate::freeze::mounts::{self, MountPlan, SysBlockInfo};
use crate::freeze::state::RunDir;
use crate::precheck::InputPaths;

/// Options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub paths: InputPaths,
    pub verbose: bool,
    /// `/run/quiesce`: lock, recovery state, pre-script holders.
    pub run_dir: RunDir,
    /// `/etc/azure/vmbackup.conf` (its `MountsToSkip`).
    pub vmbackup_conf: PathBuf,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            paths: InputPaths::default(),
            verbose: false,
            run_dir: RunDir::default(),
            vmbackup_conf: mounts::VMBACKUP_CONF_PATH.into(),
        }
    }
}

/// The mount plan: the `--mount` list when given (it replaces discovery),
/// else discovery from `/proc/self/mountinfo` minus `MountsToSkip`.
pub fn mount_plan(common: &Common, requested: &[PathBuf]) -> Result<MountPlan, Problem> {
    let cannot = |e: String| Problem::new(ErrorCode::UnableToOpenMount, e);
    if requested.is_empty() {
        return mounts::discover_system(&common.vmbackup_conf).map_err(|e| cannot(e.to_string()));
    }
    let infos = mounts::load_mounts().map_err(|e| cannot(e.to_string()))?;
    mounts::plan_explicit(&infos, requested, &SysBlockInfo::default())
        .map_err(|e| Problem::new(e.code(), e.to_string()))
}
