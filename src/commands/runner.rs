//! What every command that runs something sets up first, before anything
//! runs: the operation id, the signal handlers, the subreaper, the audit
//! trail, the sandbox policy (fail closed) and the capability check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::Level;

use crate::error::{ErrorCode, Problem};
use crate::integrity::{CheckedFile, FileRole};
use crate::report;
use crate::sandbox::audit::RunnerCaps;
use crate::sandbox::{PreparedFilter, PreparedSandbox, ScriptPolicy, WatchdogPolicy};
use crate::signals::{self, SignalPipe};
use crate::supervise;
use crate::trail::{self, Facility, Record, TrailConfig, TrailMode};

pub const DEFAULT_POLICY_PATH: &str = "/etc/quiesce/policy.json";

/// Options about the runner itself.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// `--policy`; `None`: `/etc/quiesce/policy.json` if present, else built in.
    pub policy: Option<PathBuf>,
    pub no_sandbox: bool,
    pub syslog_socket: PathBuf,
    pub facility: Facility,
    /// `--trail`, `--journal-socket`.
    pub trail: TrailMode,
    pub journal_socket: PathBuf,
    /// `--state-dir`, `--metrics-dir`: the run's last result and metrics.
    pub outputs: trail::metrics::Outputs,
    /// `-v`: every audit record is also echoed as a human line on stderr.
    pub verbose: bool,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            policy: None,
            no_sandbox: false,
            syslog_socket: trail::DEFAULT_SOCKET.into(),
            facility: Facility::default(),
            trail: TrailMode::default(),
            journal_socket: trail::DEFAULT_JOURNAL_SOCKET.into(),
            outputs: trail::metrics::Outputs::default(),
            verbose: false,
        }
    }
}

/// The trail's set-up for one run of `operation_id` under `opts`.
fn trail_config(operation_id: &str, opts: &RunnerOptions) -> TrailConfig {
    let mut cfg = TrailConfig::new(operation_id);
    cfg.socket = opts.syslog_socket.clone();
    cfg.facility = opts.facility;
    cfg.mode = opts.trail;
    cfg.journal_socket = opts.journal_socket.clone();
    cfg.outputs = opts.outputs.clone();
    cfg.verbose = opts.verbose;
    cfg
}

/// The audit trail alone, for commands that run nothing (`thaw`): returns
/// the operation id and any warning about the trail.
pub fn audit_only(operation: &'static str, opts: &RunnerOptions) -> (String, Vec<String>) {
    let operation_id = report::new_operation_id();
    let mut warnings = Vec::new();
    if let Err(e) = trail::init(trail_config(&operation_id, opts)) {
        warnings.push(format!("audit trail: {e}"));
    }
    trail::event(
        Level::Info,
        Record::RunStart,
        operation,
        &[("pid", std::process::id().to_string())],
        &format!("quiesce {operation} started"),
    );
    (operation_id, warnings)
}

/// The set-up of one run.
pub struct Runner {
    pub operation_id: String,
    pub run_dir: crate::freeze::state::RunDir,
    pub signals: SignalPipe,
    pub policy: ScriptPolicy,
    pub sandbox: Option<Arc<PreparedSandbox>>,
    pub watchdog_filter: Option<PreparedFilter>,
    pub caps: Option<RunnerCaps>,
    pub warnings: Vec<String>,
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
        None => ScriptPolicy::builtin().map_err(|e| bad(format!("built-in policy: {e}"))),
        Some(p) => {
            let file = CheckedFile::open(&p, FileRole::Policy)
                .map_err(|e| bad(format!("policy file: {e}")))?;
            let bytes = file
                .read_limited(1024 * 1024)
                .map_err(|e| bad(format!("policy file: {e}")))?;
            ScriptPolicy::from_bytes(&p, &bytes).map_err(|e| bad(e.to_string()))
        }
    }
}

impl Runner {
    /// Sets up a run of `operation`. `freezes`: the run may freeze, so
    /// `CAP_SYS_ADMIN` is required up front.
    pub fn start(
        operation: &'static str,
        opts: &RunnerOptions,
        run_dir: &crate::freeze::state::RunDir,
        freezes: bool,
    ) -> Result<Runner, (String, Problem)> {
        let operation_id = report::new_operation_id();
        let fail = |p: Problem| (operation_id.clone(), p);
        let mut warnings = Vec::new();
        if let Err(e) = trail::init(trail_config(&operation_id, opts)) {
            warnings.push(format!("audit trail: {e}"));
        }
        // The run directory's records decide what is thawed and which
        // processes are ended: checked before anything runs (SPEC §4).
        run_dir.check().map_err(|e| {
            fail(Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                format!("{e}; nothing was run"),
            ))
        })?;
        let signals = signals::install().map_err(|e| {
            fail(Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("cannot install signal handlers: {e}"),
            ))
        })?;
        // Cgroups of runners that were killed mid-script.
        supervise::sweep_stale_cgroups();
        if let Err(e) = supervise::become_subreaper() {
            warnings.push(format!(
                "cannot become a child subreaper ({e}); escaped descendants may be missed"
            ));
        }
        let caps = match RunnerCaps::current() {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(format!("cannot read the runner's capabilities: {e}"));
                None
            }
        };
        trail::event(
            Level::Info,
            Record::RunStart,
            operation,
            &[
                ("pid", std::process::id().to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                (
                    "capEff",
                    caps.as_ref()
                        .map_or("unknown".into(), |c| c.effective.join(",")),
                ),
            ],
            &format!("quiesce {operation} started"),
        );
        if freezes && !caps.as_ref().is_some_and(|c| c.has_sys_admin()) {
            return Err(fail(Problem::new(
                ErrorCode::FsFreezeFailed,
                "the runner lacks CAP_SYS_ADMIN, which freezing needs; run quiesce as root (nothing was run or frozen)",
            )));
        }
        let policy = load_policy(opts.policy.as_deref()).map_err(fail)?;
        let sandbox = if opts.no_sandbox {
            let w = "--no-sandbox: scripts run WITHOUT capability drops, no_new_privs, rlimits or seccomp".to_string();
            trail::event(Level::Warn, Record::SandboxDisabled, operation, &[], &w);
            report::say(format!("WARNING: {w}"));
            warnings.push(w);
            None
        } else {
            let prepared = PreparedSandbox::prepare(&policy).map_err(|e| {
                fail(Problem::new(
                    ErrorCode::IncorrectPluginhostFile,
                    e.to_string(),
                ))
            })?;
            Some(Arc::new(prepared))
        };
        let watchdog_filter = if freezes {
            let wp = WatchdogPolicy::builtin().map_err(|e| {
                fail(Problem::new(
                    ErrorCode::IncorrectPluginhostFile,
                    e.to_string(),
                ))
            })?;
            Some(PreparedFilter::prepare(&wp).map_err(|e| {
                fail(Problem::new(
                    ErrorCode::IncorrectPluginhostFile,
                    e.to_string(),
                ))
            })?)
        } else {
            None
        };
        Ok(Runner {
            operation_id,
            run_dir: run_dir.clone(),
            signals,
            policy,
            sandbox,
            watchdog_filter,
            caps,
            warnings,
        })
    }
}

impl Runner {
    /// The context script phases run in.
    pub fn context(&self) -> super::script::RunContext<'_> {
        super::script::RunContext {
            operation_id: self.operation_id.clone(),
            interrupt: Some(self.signals.fd()),
            run_dir: self.run_dir.clone(),
            sandbox: self.sandbox.clone(),
            grace: self.policy.kill_grace(),
            output_cap: self.policy.output_cap(),
            pids_max: Some(PIDS_MAX),
        }
    }
}

/// `pids.max` of a script's cgroup: far above what a backup script needs,
/// low enough that a fork bomb cannot exhaust the VM's pids.
pub const PIDS_MAX: u64 = 4096;

/// The last record of a run: its result with every error name and code,
/// then the trail's own delivery report in the status warnings.
pub fn finish(status: &mut report::Status, warnings: &[String]) {
    status.warnings.extend(warnings.iter().cloned());
    let errors: Vec<String> = status
        .errors
        .iter()
        .map(|e| match e.code {
            Some(c) => format!("{}({c})", e.name),
            None => e.name.to_string(),
        })
        .collect();
    let result = serde_json::to_value(status.result).unwrap_or_default();
    let result = result.as_str().unwrap_or("?").to_string();
    let mut params = vec![("result", result.clone()), ("errors", errors.join(","))];
    if let Some(c) = status.consistency {
        let c = serde_json::to_value(c).unwrap_or_default();
        params.push(("consistency", c.as_str().unwrap_or("?").to_string()));
    }
    let level = match status.result {
        report::Outcome::Success => Level::Info,
        report::Outcome::Degraded => Level::Warn,
        report::Outcome::Failure => Level::Error,
    };
    trail::event(
        level,
        Record::RunEnd,
        status.operation,
        &params,
        &format!("quiesce {} finished: {result}", status.operation),
    );
    let delivery = trail::finish();
    if let Some(w) = delivery.warning() {
        report::say(format!("warning: {w}"));
        status.warnings.push(w);
    }
    // After the trail, so after the last thaw: last result and metrics.
    trail::metrics::record_run(status, &delivery);
}

/// One audit record per check of the pre-check (SPEC §9 "each check"), in
/// the extension's order: what passed, and each problem with its name and
/// code.
pub fn audit_precheck(operation: &str, pc: &crate::precheck::Prechecked) {
    if let Some(c) = &pc.config {
        trail::set_application(c.app_name.clone().unwrap_or_else(|| c.plugin_name.clone()));
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

/// Ends a command whose outcome is its errors: success when there are none,
/// else failure; then the run-end record.
pub fn conclude(
    mut status: report::Status,
    warnings: &[String],
) -> (report::Status, crate::error::Exit) {
    let exit = if status.errors.is_empty() {
        crate::error::Exit::Success
    } else {
        status.result = report::Outcome::Failure;
        crate::error::Exit::Failure
    };
    finish(&mut status, warnings);
    (status, exit)
}

/// Ends a run that stopped on `p` before its work: the problem is said and
/// recorded, the run-end record written, and the exit is a failure.
pub fn fail_early(
    mut status: report::Status,
    p: &Problem,
    warnings: &[String],
) -> (report::Status, crate::error::Exit) {
    report::say_problem(p);
    status.push_error(p);
    status.result = report::Outcome::Failure;
    finish(&mut status, warnings);
    (status, crate::error::Exit::Failure)
}

impl Runner {
    /// [`Runner::start`], or the finished status of a run refused before
    /// anything ran.
    pub fn start_or_refuse(
        operation: &'static str,
        opts: &RunnerOptions,
        run_dir: &crate::freeze::state::RunDir,
        freezes: bool,
    ) -> Result<Runner, Box<(report::Status, crate::error::Exit)>> {
        Runner::start(operation, opts, run_dir, freezes).map_err(|(op, p)| {
            let mut status = report::Status::new(operation, &op);
            if freezes {
                status.consistency = Some(report::Consistency::None);
            }
            Box::new(fail_early(status, &p, &[]))
        })
    }
}
