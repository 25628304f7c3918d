//! The pre-check: config, plugin-host file and both scripts, in the
//! extension's order (SPEC.md §4). Nothing is executed here.
//!
//! Every problem found is collected (so `check` can list them all); the first
//! one is the pre-check result that the decision table of §5 acts on.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ScriptConfig};
use crate::error::{ErrorCode, Problem};
use crate::integrity::{CheckedFile, FileRole, TrustError};

/// Where the inputs live (defaults are the extension's paths).
#[derive(Debug, Clone)]
pub struct InputPaths {
    pub config: PathBuf,
    pub host_config: PathBuf,
}

impl Default for InputPaths {
    fn default() -> Self {
        InputPaths {
            config: config::DEFAULT_CONFIG_PATH.into(),
            host_config: config::DEFAULT_HOST_CONFIG_PATH.into(),
        }
    }
}

/// Largest script accepted: scripts are read into memory once (hashed, and
/// a pinned script's sealed copy made from those bytes).
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024 * 1024;

/// Which script: decides the error-table rows and the environment's phase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
    pub fn not_found(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptNotFound,
            Phase::Post => ErrorCode::PostScriptNotFound,
        }
    }
    pub fn permission(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::InsufficientPermissionforPreScript,
            Phase::Post => ErrorCode::InsufficientPermissionforPostScript,
        }
    }
    pub fn execution_failed(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptExecutionFailed,
            Phase::Post => ErrorCode::PostScriptExecutionFailed,
        }
    }
    pub fn timeout(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptTimeout,
            Phase::Post => ErrorCode::PostScriptTimeout,
        }
    }
}

/// A script that passed its checks, ready to run.
#[derive(Debug)]
pub struct CheckedScript {
    pub phase: Phase,
    pub file: CheckedFile,
    /// SHA-256 of `content` (recorded in the audit trail).
    pub sha256: String,
    /// The bytes read once from the checked descriptor and hashed. A pinned
    /// script runs exactly these bytes (a sealed copy of them); an unpinned
    /// one is executed by its path after a (device, inode) re-check, so
    /// these are what runs unless root rewrites the file in place (SPEC §4).
    pub content: Vec<u8>,
    /// Whether a pin was configured (then the sealed copy of `content` runs).
    pub pinned: bool,
    pub settings: ScriptConfig,
}

/// Everything the pre-check found.
#[derive(Debug, Default)]
pub struct Prechecked {
    pub config: Option<Config>,
    /// SHA-256 of the config file's bytes, for the audit trail.
    pub config_sha256: Option<String>,
    pub pre: Option<CheckedScript>,
    pub post: Option<CheckedScript>,
    /// In pre-check order; the first is the pre-check result.
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Prechecked {
    /// The pre-check passed: scripts may run.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// `continueBackupOnFailure`, or `true` when the config could not be read
    /// (SPEC §5: the flag is unknown, so the extension's default applies).
    pub fn continue_on_failure(&self) -> bool {
        self.config.as_ref().is_none_or(|c| c.continue_on_failure)
    }
}

/// Runs the whole pre-check.
pub fn run(paths: &InputPaths) -> Prechecked {
    let mut out = Prechecked::default();

    let host_timeout = match load_host_config(&paths.host_config) {
        Ok(t) => t,
        Err(p) => {
            out.problems.push(p);
            None
        }
    };

    match load_config(&paths.config, host_timeout) {
        Ok((loaded, digest)) => {
            out.warnings.extend(loaded.warnings);
            out.config_sha256 = Some(digest);
            out.config = Some(loaded.config);
        }
        Err(p) => {
            out.problems.push(p);
            out.warnings.push(
                "the configuration could not be loaded, so continueBackupOnFailure is unknown and taken as true (the extension's default); no script will run"
                    .to_string(),
            );
            return out;
        }
    }
    let config = out.config.as_ref().expect("config loaded above");
    let pre = check_script(Phase::Pre, &config.pre);
    let post = check_script(Phase::Post, &config.post);
    for (slot, result) in [(&mut out.pre, pre), (&mut out.post, post)] {
        match result {
            Ok(s) => *slot = Some(s),
            Err(p) => out.problems.push(p),
        }
    }
    out
}

/// Loads the optional plugin-host file: absent is fine, anything else wrong
/// is `IncorrectPluginhostFile`.
pub fn load_host_config(path: &Path) -> Result<Option<u64>, Problem> {
    let bad = |detail: String| Problem::new(ErrorCode::IncorrectPluginhostFile, detail);
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let file = CheckedFile::open(path, FileRole::Policy)
        .map_err(|e| bad(format!("plugin-host file: {e}")))?;
    let bytes = file
        .read_limited(config::MAX_CONFIG_BYTES)
        .map_err(|e| bad(format!("plugin-host file: {e}")))?;
    config::parse_host_config(path, &bytes).map_err(|e| bad(e.to_string()))
}

/// Opens, checks and parses the configuration; every failure is
/// `IncorrectJSONConfigFile` naming the file and the rule.
pub fn load_config(
    path: &Path,
    host_timeout: Option<u64>,
) -> Result<(config::Loaded, String), Problem> {
    let bad = |detail: String| Problem::new(ErrorCode::IncorrectJSONConfigFile, detail);
    let file = CheckedFile::open(path, FileRole::Config)
        .map_err(|e| bad(format!("configuration file: {e}")))?;
    let bytes = file
        .read_limited(config::MAX_CONFIG_BYTES)
        .map_err(|e| bad(format!("configuration file: {e}")))?;
    let digest = {
        use sha2::{Digest, Sha256};
        crate::integrity::hex(&Sha256::digest(&bytes))
    };
    let loaded = config::parse(path, &bytes, host_timeout).map_err(|e| bad(e.to_string()))?;
    Ok((loaded, digest))
}

/// Checks one script: found, permissions, then its pin.
pub fn check_script(phase: Phase, settings: &ScriptConfig) -> Result<CheckedScript, Problem> {
    let key = format!("{}ScriptLocation", phase.name());
    let file = CheckedFile::open(&settings.location, FileRole::Script).map_err(|e| {
        let code = if e.is_not_found() {
            phase.not_found()
        } else {
            phase.permission()
        };
        let detail = match e {
            TrustError::EmptyPath => format!("{key} is empty"),
            e => format!("{key}: {e}"),
        };
        Problem::new(code, detail)
    })?;
    let content = file
        .read_limited(MAX_SCRIPT_BYTES)
        .map_err(|e| Problem::new(phase.permission(), format!("{key}: {e}")))?;
    let sha256 = {
        use sha2::{Digest, Sha256};
        crate::integrity::hex(&Sha256::digest(&content))
    };
    if let Some(pin) = &settings.sha256 {
        if *pin != sha256 {
            return Err(Problem::new(
                ErrorCode::ScriptChecksumMismatch,
                format!(
                    "{}: SHA-256 is {sha256}, but {}ScriptSha256 pins {pin}",
                    settings.location.display(),
                    phase.name()
                ),
            ));
        }
    }
    Ok(CheckedScript {
        phase,
        file,
        sha256,
        content,
        pinned: settings.sha256.is_some(),
        settings: settings.clone(),
    })
}
