//! The preflight: every check made before anything runs, every finding
//! returned. Nothing is executed here.
//!
//! - [`Prechecked`] (`run`): the config, the plugin-host file and both
//!   scripts, in the extension's order (SPEC.md §4); the first problem is
//!   the pre-check result that the decision table of §5 acts on.
//! - [`Readiness`]: what the runner itself needs (§8): the sandbox policy,
//!   loaded and compiled (fail closed), the watchdog's filter, and
//!   `CAP_SYS_ADMIN` for a freeze.
//!
//! A run refuses on the first readiness problem; `check` lists every
//! finding; `audit` reports them.

use std::io;
use std::path::{Path, PathBuf};

use log::Level;

use crate::config::{self, Config, ScriptConfig};
use crate::error::{ErrorCode, Fix, Problem};
use crate::integrity::{CheckedFile, CheckedIdentity, FileRole, TrustError};
use crate::sandbox::inspect::RunnerCaps;
use crate::sandbox::{PreparedFilter, PreparedSandbox, ScriptPolicy, WatchdogPolicy};
use crate::trail::{self, Record};

use super::interpreter::{self, Interpreter};
use crate::job::phase::Phase;

/// The installed sandbox policy, used when `--policy` is not given.
pub const DEFAULT_POLICY_PATH: &str = "/etc/quiesce/policy.json";

/// What `--no-sandbox` costs, said loudly in the status and the trail.
pub const NO_SANDBOX_WARNING: &str =
    "--no-sandbox: scripts run WITHOUT capability drops, no_new_privs, rlimits or seccomp";

/// What the runner needs before it runs anything, and what it lacks.
pub struct Readiness {
    pub caps: Option<RunnerCaps>,
    pub policy: Option<ScriptPolicy>,
    /// The compiled sandbox; `None` with `--no-sandbox` or a broken policy.
    pub sandbox: Option<PreparedSandbox>,
    /// For runs that freeze.
    pub watchdog_filter: Option<PreparedFilter>,
    /// In a fixed order: the policy, its sandbox, the watchdog's filter,
    /// the capability. All fail closed.
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Readiness {
    /// Everything the runner needs for a run that may freeze (`freezes`).
    pub fn of(policy: Option<&Path>, no_sandbox: bool, freezes: bool) -> Readiness {
        let mut r = Readiness {
            caps: None,
            policy: None,
            sandbox: None,
            watchdog_filter: None,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let bad = |e: String| Problem::new(ErrorCode::IncorrectPluginhostFile, e);
        match load_policy(policy) {
            Ok(policy) => {
                if !no_sandbox {
                    match PreparedSandbox::prepare(&policy) {
                        Ok(s) => r.sandbox = Some(s),
                        Err(e) => r
                            .problems
                            .push(bad(e.to_string()).with_fix(Fix::Policy(policy.origin.clone()))),
                    }
                }
                r.policy = Some(policy);
            }
            Err(p) => r.problems.push(p),
        }
        if freezes {
            match WatchdogPolicy::builtin().and_then(|wp| PreparedFilter::prepare(&wp)) {
                Ok(f) => r.watchdog_filter = Some(f),
                Err(e) => r.problems.push(bad(e.to_string()).with_fix(Fix::Report)),
            }
        }
        match RunnerCaps::current() {
            Ok(c) => r.caps = Some(c),
            Err(e) => r
                .warnings
                .push(format!("cannot read the runner's capabilities: {e}")),
        }
        if freezes && !r.caps.as_ref().is_some_and(|c| c.has_sys_admin()) {
            r.problems.push(no_sys_admin());
        }
        r
    }
}

impl Readiness {
    /// For `check` and `audit`: whether a script's own mount namespace (SPEC
    /// §8) can be set up here, by a probe process; a run would refuse to
    /// start its scripts otherwise.
    pub fn probe_confinement(&mut self) {
        if let Some(s) = &self.sandbox {
            if let Err(why) = crate::sandbox::confine::probe(&s.confinement) {
                self.problems.push(Problem::new(
                    ErrorCode::IncorrectPluginhostFile,
                    crate::sandbox::confine::unavailable(&why),
                ));
            }
        }
    }
}

/// The runner lacks `CAP_SYS_ADMIN`, which `FIFREEZE` needs (SPEC §8): a
/// run that may freeze refuses before anything runs.
pub fn no_sys_admin() -> Problem {
    Problem::new(
        ErrorCode::FsFreezeFailed,
        "the runner lacks CAP_SYS_ADMIN, which freezing needs; a run that freezes refuses to start (nothing was run or frozen)",
    )
    .with_fix(Fix::RunAsRoot)
}

/// Loads the script policy: the named file, else the installed one, else
/// the built-in default. An installed or named policy must pass the trust
/// checks and parse; any failure is `IncorrectPluginhostFile` and nothing runs.
pub fn load_policy(named: Option<&Path>) -> Result<ScriptPolicy, Problem> {
    let bad = |d: String| Problem::new(ErrorCode::IncorrectPluginhostFile, d);
    let path = match named {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_POLICY_PATH).exists() => Some(DEFAULT_POLICY_PATH.into()),
        None => None,
    };
    match path {
        None => ScriptPolicy::builtin()
            .map_err(|e| bad(format!("built-in policy: {e}")).with_fix(Fix::Report)),
        Some(p) => {
            let trust = |e: TrustError| {
                let fix = match e {
                    TrustError::Missing(_) => Fix::NamedPolicyMissing(p.clone()),
                    ref e => e.fix(FileRole::Policy),
                };
                trust_problem(
                    &e,
                    ErrorCode::IncorrectPluginhostFile,
                    format!("policy file: {e}"),
                    fix,
                )
            };
            let file = CheckedFile::open(&p, FileRole::Policy).map_err(trust)?;
            let bytes = file.read_limited(1024 * 1024).map_err(trust)?;
            ScriptPolicy::from_bytes(&p, &bytes)
                .map_err(|e| bad(e.to_string()).with_fix(Fix::Policy(p.clone())))
        }
    }
}

/// Where one application's inputs live (a recovered post-script's).
#[derive(Debug, Clone)]
pub struct InputPaths {
    pub config: PathBuf,
    pub host_config: PathBuf,
}

/// Largest script accepted: scripts are read into memory once (hashed, and
/// a pinned script's sealed copy made from those bytes).
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024 * 1024;

/// A script that passed its checks, ready to run.
#[derive(Debug)]
pub struct CheckedScript {
    pub phase: Phase,
    /// The checked file; its descriptor was closed once `content` was read
    /// through it (a run's descriptors stay flat in its applications).
    pub file: CheckedIdentity,
    /// SHA-256 of `content` (recorded in the audit trail).
    pub sha256: String,
    /// The bytes read once from the checked descriptor and hashed. A pinned
    /// script runs exactly these bytes (a sealed copy of them); an unpinned
    /// one is executed by its path after a (device, inode) re-check, so
    /// these are what runs unless root rewrites the file in place (SPEC §4).
    pub content: Vec<u8>,
    /// Whether a pin was configured (then the sealed copy of `content` runs).
    pub pinned: bool,
    /// What runs as root before its bytes, in order, each checked like the
    /// script (SPEC §4); empty for an ELF binary.
    pub interpreters: Vec<Interpreter>,
    pub settings: ScriptConfig,
    /// quiesce's own workload helper (SPEC §3.2), not an operator's
    /// script: it is given the run directory, and its exit status names
    /// its row of the error table.
    pub workload: bool,
}

/// Everything the pre-check found.
#[derive(Debug, Default)]
pub struct Prechecked {
    pub config: Option<Config>,
    /// SHA-256 of the config file's bytes, for the audit trail.
    pub config_sha256: Option<String>,
    pub pre: Option<CheckedScript>,
    pub post: Option<CheckedScript>,
    /// The plugin-host file's `timeoutInSeconds`, when it has one.
    pub host_timeout: Option<u64>,
    /// In pre-check order; the first is the pre-check result.
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// Unknown keys that are near misses of known ones: a run goes on
    /// (the warning says it), `check` fails on them (SPEC §3).
    pub typos: Vec<Problem>,
    /// A workload application's source (SPEC §3.2).
    pub workload: Option<(
        crate::workload::helper::Source,
        crate::config::workload::Engine,
    )>,
}

impl Prechecked {
    /// The checked script of `phase` and the config, when the pre-check
    /// passed (else nothing of it may run).
    pub fn ready(&self, phase: Phase) -> Option<(&CheckedScript, &Config)> {
        let script = match phase {
            Phase::Pre => self.pre.as_ref(),
            Phase::Post => self.post.as_ref(),
        };
        match (self.passed(), script, self.config.as_ref()) {
            (true, Some(s), Some(c)) => Some((s, c)),
            _ => None,
        }
    }

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

/// One audit record per check of the pre-check (SPEC §9 "each check"), in
/// the extension's order: what passed, and each problem with its name and
/// code.
pub fn record(operation: &str, pc: &Prechecked) {
    if let Some(c) = &pc.config {
        trail::event(
            Level::Info,
            Record::Check,
            operation,
            &[
                ("item", "config".into()),
                ("outcome", "ok".into()),
                ("sha256", pc.config_sha256.clone().unwrap_or_default()),
                ("appName", c.app_name.clone().unwrap_or_default()),
                ("timeoutSeconds", c.timeout_secs.to_string()),
                ("continueBackupOnFailure", c.continue_on_failure.to_string()),
                ("fsFreezeEnabled", c.fs_freeze_enabled.to_string()),
            ],
            "configuration verified",
        );
    }
    for s in [&pc.pre, &pc.post].into_iter().flatten() {
        trail::event(
            Level::Info,
            Record::Check,
            operation,
            &[
                ("item", format!("{}-script", s.phase.name())),
                ("outcome", "ok".into()),
                ("script", s.file.path.display().to_string()),
                ("sha256", s.sha256.clone()),
                ("pinned", s.pinned.to_string()),
                (
                    "interpreters",
                    s.interpreters
                        .iter()
                        .map(|i| i.resolved.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ],
            &format!("{}-script verified", s.phase.name()),
        );
    }
    for p in &pc.problems {
        trail::event(
            Level::Error,
            Record::Check,
            operation,
            &[
                ("outcome", "failed".into()),
                ("error", p.code.name().into()),
                (
                    "code",
                    p.code.code().map_or(String::new(), |c| c.to_string()),
                ),
                ("detail", p.detail.clone()),
            ],
            &format!("check failed: {}", p.code),
        );
    }
    for w in &pc.warnings {
        trail::event(Level::Warn, Record::CheckWarning, operation, &[], w);
    }
}

/// The plugin-host file, loaded once for every application of a run.
#[derive(Debug, Clone, Default)]
pub struct HostFile {
    pub path: PathBuf,
    /// Parsed, when it exists and passed its checks.
    pub parsed: Option<config::HostConfig>,
    /// `timeoutInSeconds`, when it has one.
    pub timeout: Option<u64>,
    /// Insecure, unreadable or malformed: the pre-check result of every
    /// application (`IncorrectPluginhostFile`).
    pub problem: Option<Problem>,
}

impl HostFile {
    /// The extension's plugin list (SPEC §3.1), when the file has one. A
    /// file that failed its checks has none: its problem fails the pre-check
    /// of every application instead.
    pub fn plugins(&self) -> Result<Option<Vec<config::HostPlugin>>, config::HostConfigError> {
        match &self.parsed {
            Some(h) => h.plugins(&self.path),
            None => Ok(None),
        }
    }
}

/// Loads the optional plugin-host file: absent is fine, anything else wrong
/// is `IncorrectPluginhostFile`.
pub fn load_host(path: &Path) -> HostFile {
    let mut out = HostFile {
        path: path.to_path_buf(),
        ..HostFile::default()
    };
    match load_host_config(path) {
        Ok(parsed) => {
            out.timeout = parsed.as_ref().and_then(|h| h.timeout);
            out.parsed = parsed;
        }
        Err(p) => out.problem = Some(p),
    }
    out
}

/// Runs the whole pre-check of one config with its plugin-host file.
pub fn run(paths: &InputPaths) -> Prechecked {
    check_app(&paths.config, &load_host(&paths.host_config))
}

/// The pre-check of one application: its config (with the plugin-host
/// file's cap and problem), then both scripts.
pub fn check_app(config_path: &Path, host: &HostFile) -> Prechecked {
    if super::workload_conf::is_workload_conf(config_path) {
        return super::workload_conf::check(config_path, host);
    }
    let mut out = Prechecked {
        host_timeout: host.timeout,
        ..Prechecked::default()
    };
    if let Some(p) = &host.problem {
        out.problems.push(p.clone());
    }
    match load_config(config_path, host.timeout) {
        Ok((loaded, digest)) => {
            out.typos = typos(config_path, &loaded);
            out.warnings.extend(loaded.warnings);
            out.config_sha256 = Some(digest);
            out.config = Some(loaded.config);
        }
        Err(p) => {
            out.problems.push(p);
            out.warnings.push(format!(
                "{} could not be loaded, so its continueBackupOnFailure is unknown and taken as true (the extension's default); none of its scripts will run",
                config_path.display()
            ));
            return out;
        }
    }
    let config = out.config.as_ref().expect("config loaded above");
    let (pre, post) = if let Some(w) = &config.workload {
        let source = crate::workload::helper::Source::Config(config_path.to_path_buf());
        out.workload = Some((source.clone(), w.engine));
        (
            workload_script(Phase::Pre, &source, &config.pre),
            workload_script(Phase::Post, &source, &config.post),
        )
    } else {
        (
            check_script(Phase::Pre, &config.pre),
            check_script(Phase::Post, &config.post),
        )
    };
    for (slot, result) in [(&mut out.pre, pre), (&mut out.post, post)] {
        match result {
            Ok(s) => *slot = Some(s),
            Err(p) => out.problems.push(p),
        }
    }
    out
}

/// A workload application's phase (SPEC §3.2): quiesce's own binary as
/// the script, `__workload PHASE` and the workload's source as its
/// arguments, checked like an interpreter (root-owned, not group- or
/// world-writable, every directory above it too).
pub fn workload_script(
    phase: Phase,
    source: &crate::workload::helper::Source,
    settings: &ScriptConfig,
) -> Result<CheckedScript, Problem> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let file = CheckedFile::open_program(&exe).map_err(|e| {
        let fix = e.fix(FileRole::Program);
        trust_problem(
            &e,
            ErrorCode::IncorrectPluginhostFile,
            format!("quiesce's own binary, which runs the workload: {e}"),
            fix,
        )
    })?;
    let sha256 = runner_sha256(&file)?;
    // Its ELF header: how it starts (executed by its path, never by sh).
    let head = file.read_head(64).map_err(|e| {
        Problem::new(
            ErrorCode::IncorrectPluginhostFile,
            format!("quiesce's own binary: {e}"),
        )
    })?;
    let mut params = vec![
        crate::workload::HELPER_ARG.to_string(),
        phase.name().to_string(),
    ];
    params.extend(source.args());
    Ok(CheckedScript {
        phase,
        sha256,
        content: head,
        pinned: false,
        interpreters: Vec::new(),
        settings: ScriptConfig {
            location: file.path.clone(),
            params,
            retries: settings.retries,
            sha256: None,
        },
        file: file.into_identity(),
        workload: true,
    })
}

/// The SHA-256 of quiesce's own binary, hashed once per process.
fn runner_sha256(file: &CheckedFile) -> Result<String, Problem> {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(d) = DIGEST.get() {
        return Ok(d.clone());
    }
    let d = file.sha256().map_err(|e| {
        Problem::new(
            ErrorCode::IncorrectPluginhostFile,
            format!("quiesce's own binary: {e}"),
        )
    })?;
    Ok(DIGEST.get_or_init(|| d).clone())
}

/// One problem per unknown key of `loaded` that is a near miss of a known
/// key: what `check` refuses, though a run ignores it as the extension does.
pub fn typos(path: &Path, loaded: &config::Loaded) -> Vec<Problem> {
    loaded
        .near_misses
        .iter()
        .map(|m| {
            let uses = match in_effect(&loaded.config, m.known) {
                Some(v) => format!("a run uses {}={v}", m.known),
                None => format!("\"{}\" is not set by it", m.known),
            };
            Problem::new(
                ErrorCode::IncorrectJSONConfigFile,
                format!(
                    "{}: unknown key \"{}\" is a near miss of \"{}\": runs ignore it, as the extension does, so {uses}",
                    path.display(),
                    m.key,
                    m.known,
                ),
            )
            .with_fix(Fix::Rename {
                path: path.to_path_buf(),
                key: m.key.clone(),
                known: m.known,
            })
        })
        .collect()
}

/// The value a run uses for a known key, for the settings a typo most
/// often loses.
fn in_effect(c: &Config, key: &str) -> Option<String> {
    Some(match key {
        "continueBackupOnFailure" => c.continue_on_failure.to_string(),
        "fsFreezeEnabled" => c.fs_freeze_enabled.to_string(),
        "timeoutInSeconds" => c.timeout_secs.to_string(),
        "preScriptNoOfRetries" => c.pre.retries.to_string(),
        "postScriptNoOfRetries" => c.post.retries.to_string(),
        "ScriptsExecutionPollTimeSeconds" => c.poll_secs.to_string(),
        _ => return None,
    })
}

/// Loads the optional plugin-host file: absent is `None`, anything else
/// wrong is `IncorrectPluginhostFile`.
pub fn load_host_config(path: &Path) -> Result<Option<config::HostConfig>, Problem> {
    let bad = |detail: String| Problem::new(ErrorCode::IncorrectPluginhostFile, detail);
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let trust = |e: TrustError| {
        let fix = e.fix(FileRole::Policy);
        trust_problem(
            &e,
            ErrorCode::IncorrectPluginhostFile,
            format!("plugin-host file: {e}"),
            fix,
        )
    };
    let file = CheckedFile::open(path, FileRole::Policy).map_err(trust)?;
    let bytes = file.read_limited(config::MAX_CONFIG_BYTES).map_err(trust)?;
    config::parse_host_config(path, &bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()).with_fix(Fix::HostFile(path.to_path_buf())))
}

/// Opens, checks and parses the configuration; every failure is
/// `IncorrectJSONConfigFile` naming the file and the rule.
pub fn load_config(
    path: &Path,
    host_timeout: Option<u64>,
) -> Result<(config::Loaded, String), Problem> {
    let bad = |detail: String| Problem::new(ErrorCode::IncorrectJSONConfigFile, detail);
    let trust = |e: TrustError| {
        let fix = match e {
            TrustError::Missing(_) => Fix::CreateConfig(path.to_path_buf()),
            ref e => e.fix(FileRole::Config),
        };
        trust_problem(
            &e,
            ErrorCode::IncorrectJSONConfigFile,
            format!("configuration file: {e}"),
            fix,
        )
    };
    let file = CheckedFile::open(path, FileRole::Config).map_err(trust)?;
    let bytes = file.read_limited(config::MAX_CONFIG_BYTES).map_err(trust)?;
    let digest = {
        use sha2::{Digest, Sha256};
        crate::integrity::hex(&Sha256::digest(&bytes))
    };
    let loaded = config::parse(path, &bytes, host_timeout).map_err(|e| {
        let fix = match &e {
            config::ConfigError::Field { path, key, .. } => Fix::Key {
                path: path.clone(),
                key: key.clone(),
            },
            _ => Fix::Json(path.to_path_buf()),
        };
        bad(e.to_string()).with_fix(fix)
    })?;
    Ok((loaded, digest))
}

/// The problem of a trusted file that failed its check: the row of the
/// file's role (`code`), unless the runner ran out of descriptors, which
/// is said as what it is — never the file's fault (issue 26).
fn trust_problem(e: &TrustError, code: ErrorCode, detail: String, fix: Fix) -> Problem {
    if e.is_out_of_descriptors() {
        crate::error::out_of_descriptors(detail)
    } else {
        Problem::new(code, detail).with_fix(fix)
    }
}

/// Checks one script: found, permissions, its pin, then its interpreter
/// (a pin covers the script's bytes, not what runs them: SPEC §4).
pub fn check_script(phase: Phase, settings: &ScriptConfig) -> Result<CheckedScript, Problem> {
    let key = format!("{}ScriptLocation", phase.name());
    let file = CheckedFile::open(&settings.location, FileRole::Script).map_err(|e| {
        let (code, fix) = if e.is_not_found() {
            // Not absolute or empty: the key is what needs the fix.
            let path = match e {
                TrustError::Missing(_) | TrustError::NotRegular(..) => settings.location.clone(),
                _ => PathBuf::new(),
            };
            let fix = Fix::PlaceScript {
                key: key.clone(),
                path,
            };
            (phase.not_found(), fix)
        } else {
            (phase.permission(), e.fix(FileRole::Script))
        };
        let detail = match e {
            TrustError::EmptyPath => format!("{key} is empty"),
            ref e => format!("{key}: {e}"),
        };
        trust_problem(&e, code, detail, fix)
    })?;
    let content = file.read_limited(MAX_SCRIPT_BYTES).map_err(|e| {
        let fix = e.fix(FileRole::Script);
        trust_problem(&e, phase.permission(), format!("{key}: {e}"), fix)
    })?;
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
            )
            .with_fix(Fix::Pin {
                key: format!("{}ScriptSha256", phase.name()),
                path: settings.location.clone(),
            }));
        }
    }
    let file = file.into_identity();
    let interpreters = interpreter::check(&file, &content).map_err(|e| {
        let detail = format!("{key} {}: {e}", file.path.display());
        if e.is_out_of_descriptors() {
            crate::error::out_of_descriptors(detail)
        } else if e.is_not_found() {
            Problem::new(phase.not_found(), detail)
        } else {
            Problem::new(phase.permission(), detail)
        }
    })?;
    Ok(CheckedScript {
        phase,
        file,
        interpreters,
        sha256,
        content,
        pinned: settings.sha256.is_some(),
        settings: settings.clone(),
        workload: false,
    })
}
