//! A run: its trail, its status document and its warnings, from its first
//! record to its last; [`Job::conclude`] sets the result once, from what
//! the run decided, and derives the exit code from the status.

use log::Level;

use super::armed::{self, PendingState};
use super::context::Context;
use super::metrics;
use super::runner::Runner;
use super::status::{self, Decision, Outcome, Status};
use crate::error::{Exit, Fix, Problem};
use crate::trail::{self, Record};

/// A run that is over: its status document and exit code.
pub type Finished = (Status, Exit);

/// One run: its trail, its status document and its warnings.
pub struct Job {
    pub status: Status,
    pub(crate) warnings: Vec<String>,
    /// Where the last result and the metrics go once the run is over.
    pub(crate) outputs: metrics::Outputs,
    /// This run's pending post-script record and its guard (SPEC §6.6).
    pub(crate) pending: PendingState,
}

impl Job {
    /// A run that executes nothing (`check`, `audit`, `thaw`): the trail and
    /// the status.
    pub fn observe(operation: &'static str, cx: &Context) -> Job {
        let job = Job::begin(operation, cx, false);
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
        cx: &Context,
        freezes: bool,
    ) -> Result<(Job, Runner), Box<Finished>> {
        let mut job = Job::begin(operation, cx, freezes);
        let op = job.status.operation_id.clone();
        match Runner::start(operation, &op, cx, freezes, &mut job.warnings) {
            Ok(runner) => Ok((job, runner)),
            Err(p) => Err(Box::new(job.fail(&p))),
        }
    }

    fn begin(operation: &'static str, cx: &Context, freezes: bool) -> Job {
        let operation_id = status::new_operation_id();
        let mut warnings = Vec::new();
        let trail_config = cx.trail_config(&operation_id);
        if let Err(e) = trail::init(trail_config) {
            let w = format!("audit trail: {e}");
            status::say(format!("warning: {w}"));
            warnings.push(w);
        }
        Job {
            status: Status::new(operation, &operation_id, freezes),
            warnings,
            outputs: cx.outputs.clone(),
            pending: PendingState::default(),
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

    /// The runner was stopped by `sig`: the run fails (whatever it decides,
    /// [`Status::conclude`]) and exits 128+N.
    pub fn interrupted(&mut self, sig: i32) {
        self.status.signal.get_or_insert(sig);
    }

    /// Ends the run with what it decided: the result into the status (the
    /// one place it is set), then the warnings, the run-end record with
    /// every error name and code, the trail's own delivery report; the exit
    /// code follows from the status.
    pub fn conclude(mut self, decided: Decision) -> Finished {
        self.status.conclude(decided);
        self.finish()
    }

    /// Ends a run that stopped on `p` before its work.
    pub fn fail(mut self, p: &Problem) -> Finished {
        self.problem(p);
        self.conclude(Decision::Refused)
    }

    fn finish(mut self) -> Finished {
        armed::at_finish(&mut self.pending);
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
    let result = status.result().name();
    let mut params = vec![("result", result.to_string()), ("errors", errors.join(","))];
    if let Some(c) = status.consistency() {
        params.push(("consistency", c.name().to_string()));
    }
    let level = match status.result() {
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
