//! One run of quiesce, end to end (SPEC.md §1). A [`Job`] owns what a run
//! shares: its operation id and audit trail, the status document and its
//! warnings, and — for runs that execute anything — the [`Runner`]: signal
//! handlers, the prepared sandbox, the policy. A run reads as its steps:
//!
//! ```text
//! preflight → pre-script → freeze window (freeze, snapshot command, thaw) → post-script → conclude
//! ```
//!
//! each a short function that returns through `?`. What a step decides is
//! in [`decide`] (SPEC §5); the exit code follows from the status once
//! ([`status::Status::exit`]). The subcommands in `src/commands/` only map
//! their options onto a job and its status back.
//!
//! - [`preflight`]: every check before anything runs (config, scripts,
//!   policy, capabilities), every finding returned;
//! - [`script`], [`launch`], [`holders`]: one script phase, how a checked
//!   script is executed, and what a pre-script leaves running;
//! - [`window`]: the snapshot command inside a freeze window;
//! - [`pipeline`]: the `pre` and `post` runs, and the steps every run
//!   shares (the pre-check, one script phase, holders);
//! - [`snapshot`]: the `snapshot` and `freeze` runs, around a freeze window;
//! - [`status`]: the status document; [`bridge`]: the extension's hook.

pub mod apps;
pub mod bridge;
pub mod check;
pub mod decide;
pub mod holders;
pub mod inspection;
pub mod interpreter;
pub mod launch;
pub mod metrics;
pub mod pending;
pub mod pipeline;
mod postguard;
pub mod preflight;
pub mod recover;
mod runner;
pub mod script;
pub mod snapshot;
pub mod status;
pub mod thaw;
pub mod window;

use std::path::PathBuf;

use log::Level;

pub use runner::{Runner, RunnerOptions, PIDS_MAX};

use crate::error::{ErrorCode, Exit, Fix, Problem};
use crate::freeze::mounts::{self, MountPlan, SysBlockInfo};
use crate::freeze::state::RunDir;
use crate::trail::{self, Record, TrailConfig};
use status::{Consistency, Outcome, Status};

/// Options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// Where the applications come from (SPEC §3.1).
    pub apps: apps::AppSources,
    pub verbose: bool,
    /// `/run/quiesce`: lock, recovery state, pre-script holders.
    pub run_dir: RunDir,
    /// `/etc/azure/vmbackup.conf` (its `MountsToSkip`).
    pub vmbackup_conf: PathBuf,
    /// `--state-dir`, `--post-due`: pending post-scripts (SPEC §6.6).
    pub pending: pending::PendingOptions,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            apps: apps::AppSources::default(),
            verbose: false,
            run_dir: RunDir::default(),
            vmbackup_conf: mounts::VMBACKUP_CONF_PATH.into(),
            pending: pending::PendingOptions::default(),
        }
    }
}

/// The mount plan: the `--mount` list when given (it replaces discovery),
/// else discovery from `/proc/self/mountinfo` minus `MountsToSkip`.
pub fn mount_plan(common: &Common, requested: &[PathBuf]) -> Result<MountPlan, Problem> {
    let cannot = |e: String, path: &str| {
        Problem::new(ErrorCode::UnableToOpenMount, e).with_fix(Fix::Unreadable(path.into()))
    };
    if requested.is_empty() {
        return mounts::discover_system(&common.vmbackup_conf).map_err(|e| {
            let path = match &e {
                mounts::DiscoverError::ReadVmbackupConf(p, _) => p.display().to_string(),
                _ => "/proc/self/mountinfo".into(),
            };
            cannot(e.to_string(), &path)
        });
    }
    let infos = mounts::load_mounts().map_err(|e| cannot(e.to_string(), "/proc/self/mountinfo"))?;
    mounts::plan_explicit(&infos, requested, &SysBlockInfo::default())
        .map_err(|e| Problem::new(e.code(), e.to_string()).with_fix(e.fix()))
}

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

/// A run that is over: its status document and exit code.
pub type Finished = (Status, Exit);

/// One run: its trail, its status document and its warnings.
pub struct Job {
    pub status: Status,
    warnings: Vec<String>,
    /// Where the last result and the metrics go once the run is over.
    outputs: metrics::Outputs,
    /// This run's pending post-script record and its guard (SPEC §6.6).
    pending: recover::PendingState,
}

impl Job {
    /// A run that executes nothing (`check`, `audit`, `thaw`): the trail and
    /// the status.
    pub fn observe(operation: &'static str, opts: &RunnerOptions) -> Job {
        let job = Job::begin(operation, opts);
        trail::event(
            Level::Info,
            Record::RunStart,
            operation,
            &[("pid", std::process::id().to_string())],
            &format!("quiesce {operation} started"),
        );
        job
    }

    /// A run that executes scripts or freezes (`freezes`): the trail, then
    /// the runner's set-up. A problem there refuses the run before anything
    /// ran: the finished run comes back instead.
    pub fn start(
        operation: &'static str,
        opts: &RunnerOptions,
        run_dir: &RunDir,
        freezes: bool,
    ) -> Result<(Job, Runner), Box<Finished>> {
        let mut job = Job::begin(operation, opts);
        if freezes {
            job.status.consistency = Some(Consistency::None);
        }
        let op = job.status.operation_id.clone();
        match Runner::start(operation, &op, opts, run_dir, freezes, &mut job.warnings) {
            Ok(runner) => Ok((job, runner)),
            Err(p) => Err(Box::new(job.fail(&p))),
        }
    }

    fn begin(operation: &'static str, opts: &RunnerOptions) -> Job {
        let operation_id = status::new_operation_id();
        let mut cfg = TrailConfig::new(operation_id.clone());
        cfg.socket = opts.syslog_socket.clone();
        cfg.facility = opts.facility;
        cfg.mode = opts.trail;
        cfg.journal_socket = opts.journal_socket.clone();
        cfg.verbose = opts.verbose;
        let mut warnings = Vec::new();
        if let Err(e) = trail::init(cfg) {
            let w = format!("audit trail: {e}");
            status::say(format!("warning: {w}"));
            warnings.push(w);
        }
        Job {
            status: Status::new(operation, &operation_id),
            warnings,
            outputs: opts.outputs.clone(),
            pending: recover::PendingState::default(),
        }
    }

    pub fn operation_id(&self) -> &str {
        &self.status.operation_id
    }

    /// A problem of the run: said on stderr with its action, and listed in
    /// the status (in the order found).
    pub fn problem(&mut self, p: &Problem) {
        status::say_problem(p);
        self.status.push_error(p);
    }

    /// `p`, its fix naming the file that will keep this run's status (a
    /// failed script's whole stderr tail is there).
    pub fn naming_last_result(&self, mut p: Problem) -> Problem {
        if let Fix::ScriptLog { last_result, .. } = &mut p.fix {
            *last_result = self
                .outputs
                .state_dir
                .as_ref()
                .map(|d| d.join(format!("last-{}.json", self.status.operation)));
        }
        p
    }

    /// A warning of the run (already said where it arose).
    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    pub fn warn_all(&mut self, ws: impl IntoIterator<Item = String>) {
        self.warnings.extend(ws);
    }

    /// Warnings not yet said: each on stderr as `warning: …`, then in the
    /// status (the README's promise: warnings go to both).
    pub fn say_warnings(&mut self, ws: impl IntoIterator<Item = String>) {
        for w in ws {
            status::say(format!("warning: {w}"));
            self.warnings.push(w);
        }
    }

    /// The runner was stopped by `sig`: the run fails and exits 128+N.
    pub fn interrupted(&mut self, sig: i32) {
        self.status.signal.get_or_insert(sig);
        self.status.result = Outcome::Failure;
    }

    /// Ends the run: the warnings into the status, the run-end record with
    /// every error name and code, the trail's own delivery report; the exit
    /// code follows from the status.
    pub fn finish(mut self) -> Finished {
        recover::at_finish(&mut self.pending);
        self.status.warnings.append(&mut self.warnings);
        run_end_record(&self.status);
        let delivery = trail::finish();
        if let Some(w) = delivery.warning() {
            status::say(format!("warning: {w}"));
            self.status.warnings.push(w);
        }
        // After the trail, so after the last thaw: last result and metrics.
        metrics::record_run(&self.outputs, &mut self.status, &delivery);
        let exit = self.status.exit();
        (self.status, exit)
    }

    /// Ends a run whose outcome is its errors: success when there are none.
    pub fn conclude(mut self) -> Finished {
        if !self.status.errors.is_empty() {
            self.status.result = Outcome::Failure;
        }
        self.finish()
    }

    /// Ends a run that stopped on `p` before its work.
    pub fn fail(mut self, p: &Problem) -> Finished {
        self.problem(p);
        self.status.result = Outcome::Failure;
        self.finish()
    }
}

/// The last record of a run: its result with every error name and code.
fn run_end_record(status: &Status) {
    let errors: Vec<String> = status
        .errors
        .iter()
        .map(|e| match e.code {
            Some(c) => format!("{}({c})", e.name),
            None => e.name.to_string(),
        })
        .collect();
    let result = status.result.name();
    let mut params = vec![("result", result.to_string()), ("errors", errors.join(","))];
    if let Some(c) = status.consistency {
        params.push(("consistency", c.name().to_string()));
    }
    let level = match status.result {
        Outcome::Success => Level::Info,
        Outcome::Degraded => Level::Warn,
        Outcome::Failure => Level::Error,
    };
    trail::event(
        level,
        Record::RunEnd,
        status.operation,
        &params,
        &format!("quiesce {} finished: {result}", status.operation),
    );
}
