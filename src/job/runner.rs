//! What the runner sets up before a run that executes anything: the signal
//! handlers (thaw first, SPEC §6.4), the subreaper (§7), the cgroups a dead
//! runner left, and what the preflight found it needs — the sandbox policy,
//! compiled (fail closed, §8), the watchdog's filter, `CAP_SYS_ADMIN` for a
//! freeze.

use std::sync::Arc;

use log::Level;

use super::context::Context;
use super::preflight::{self, Readiness};
use super::script::RunContext;
use super::status;
use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::signals::{self, SignalPipe};
use crate::freeze::state::RunDir;
use crate::sandbox::env::ScriptEnv;
use crate::sandbox::inspect::RunnerCaps;
use crate::sandbox::{PreparedFilter, PreparedSandbox, ScriptPolicy};
use crate::supervise;
use crate::trail::{self, Record};

/// `pids.max` of a script's cgroup: far above what a backup script needs,
/// low enough that a fork bomb cannot exhaust the VM's pids.
pub const PIDS_MAX: u64 = 4096;

/// The runner's set-up for one run.
pub struct Runner {
    pub operation_id: String,
    pub run_dir: RunDir,
    pub signals: SignalPipe,
    pub policy: ScriptPolicy,
    /// `None` only with `--no-sandbox`.
    pub sandbox: Option<Arc<PreparedSandbox>>,
    /// The watchdog's seccomp filter, for runs that freeze.
    pub watchdog_filter: Option<PreparedFilter>,
    pub caps: Option<RunnerCaps>,
    /// `HOME` and `LANG` every script of the run gets (SPEC §7).
    pub script_env: ScriptEnv,
}

/// What keeps the run's children in hand: the run sentinel, before the
/// run's first child (one of the guards every script's filter must name,
/// SPEC §8), the cgroups of runners killed mid-script swept, and this
/// runner the subreaper of what its scripts leave.
fn watch_children(warnings: &mut Vec<String>) {
    match supervise::sentinel::start() {
        Ok(pid) => crate::sandbox::guards::protect(pid, "run sentinel"),
        Err(e) => warnings.push(format!(
            "cannot start the run sentinel ({e}); if the runner dies, only each script's main process is killed with it"
        )),
    }
    supervise::sweep_stale_cgroups();
    if let Err(e) = supervise::become_subreaper() {
        let w = format!("cannot become a child subreaper ({e}); escaped descendants may be missed");
        status::say(format!("warning: {w}"));
        warnings.push(w);
    }
}

/// The error-table row of a run refused in its set-up, before anything
/// ran: the freeze for a run that may freeze, else the phase it could not
/// run (a `recover` runs post-scripts).
fn refusal_code(operation: &str, freezes: bool) -> ErrorCode {
    match operation {
        _ if freezes => ErrorCode::FsFreezeFailed,
        "pre" => ErrorCode::PreScriptExecutionFailed,
        _ => ErrorCode::PostScriptExecutionFailed,
    }
}

impl Runner {
    /// Sets up a run of `operation`; `freezes`: it may freeze. The first
    /// problem refuses the run before anything runs; `warnings` gets what
    /// only degrades it.
    pub(super) fn start(
        operation: &'static str,
        operation_id: &str,
        cx: &Context,
        freezes: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Runner, Problem> {
        // The run directory's records decide what is thawed and which
        // processes are ended: checked before anything runs (SPEC §4).
        let run_dir = &cx.run_dir;
        run_dir.check().map_err(|e| {
            Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                format!("run directory: {e}; nothing was run"),
            )
            .with_fix(e.fix("--run-dir"))
        })?;
        let signals = signals::install().map_err(|e| {
            crate::error::problem_or_out_of_descriptors(
                refusal_code(operation, freezes),
                format!("cannot install signal handlers: {e}; nothing was run"),
                Some(&e),
            )
            .with_fix(Fix::Report)
        })?;
        watch_children(warnings);
        let ready = Readiness::of(cx.options.policy.as_deref(), cx.options.no_sandbox, freezes);
        for w in &ready.warnings {
            status::say(format!("warning: {w}"));
        }
        warnings.extend(ready.warnings.iter().cloned());
        let (script_env, env_warnings) = ScriptEnv::of_caller();
        for w in env_warnings {
            status::say(format!("warning: {w}"));
            warnings.push(w);
        }
        trail::event(
            Level::Info,
            Record::RunStart,
            operation,
            &[
                ("pid", std::process::id().to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                (
                    "capEff",
                    ready
                        .caps
                        .as_ref()
                        .map_or("unknown".into(), |c| c.effective.join(",")),
                ),
            ],
            &format!("quiesce {operation} started"),
        );
        if let Some(p) = ready.problems.first() {
            return Err(p.clone());
        }
        if cx.options.no_sandbox {
            let w = preflight::NO_SANDBOX_WARNING.to_string();
            trail::event(Level::Warn, Record::SandboxDisabled, operation, &[], &w);
            status::say(format!("WARNING: {w}"));
            warnings.push(w);
        }
        // A readiness without problems has its policy; say so if not.
        let policy = ready.policy.ok_or_else(|| {
            Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                "no sandbox policy was loaded",
            )
            .with_fix(Fix::Report)
        })?;
        Ok(Runner {
            operation_id: operation_id.to_string(),
            run_dir: run_dir.clone(),
            signals,
            policy,
            sandbox: ready.sandbox.map(Arc::new),
            watchdog_filter: ready.watchdog_filter,
            caps: ready.caps,
            script_env,
        })
    }

    /// The context script phases run in.
    pub fn context(&self) -> RunContext<'_> {
        RunContext {
            operation_id: self.operation_id.clone(),
            interrupt: Some(self.signals.fd()),
            run_dir: self.run_dir.clone(),
            sandbox: self.sandbox.clone(),
            grace: self.policy.kill_grace(),
            output_cap: self.policy.output_cap(),
            pids_max: Some(PIDS_MAX),
            env: self.script_env.clone(),
            recovery: None,
            app: None,
        }
    }
}
