//! `quiesce freeze [--mount M]... [--max-freeze SECS] -- CMD...`: freeze,
//! run CMD, thaw. No scripts.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Exit;
use crate::job::status::{self as report, Consistency, Outcome, Status};
use crate::job::window::{self, freeze_phase_json};
use crate::job::{self as runner, Runner, RunnerOptions};
use crate::job::{mount_plan, Common};

pub fn run(
    common: &Common,
    ropts: &RunnerOptions,
    mounts: &[PathBuf],
    max_freeze: Duration,
    cmd: &[String],
) -> (Status, Exit) {
    let runner = match Runner::start_or_refuse("freeze", ropts, &common.run_dir, true) {
        Ok(r) => r,
        Err(done) => return *done,
    };
    let mut status = Status::new("freeze", &runner.operation_id);
    status.consistency = Some(Consistency::None);
    let mut warnings = runner.warnings.clone();
    let prepared = mount_plan(common, mounts).and_then(|plan| {
        warnings.extend(plan.warnings.iter().cloned());
        let lock = window::lock_and_recover(common, &mut warnings)?;
        let targets = window::open_targets(&plan)?;
        Ok((lock, targets))
    });
    let (_lock, targets) = match prepared {
        Ok(x) => x,
        Err(p) => return runner::fail_early(status, &p, &warnings),
    };
    let run = window::take_snapshot(&runner, Some(targets), cmd, max_freeze, false);
    warnings.extend(run.warnings.iter().cloned());
    if let Some(w) = &run.window {
        status.phases.freeze = Some(freeze_phase_json(w));
    }
    if let Some(s) = &run.snapshot {
        status.phases.snapshot = Some(serde_json::to_value(s).expect("serialises"));
    }
    for p in &run.problems {
        report::say_problem(p);
        status.push_error(p);
    }
    let exit = if let Some(sig) = run.interrupted {
        report::say(format!("stopped by signal {sig} after thawing"));
        status.result = Outcome::Failure;
        Exit::Signal(sig)
    } else if run.froze && run.snapshot_ok && run.problems.is_empty() {
        status.consistency = Some(Consistency::Filesystem);
        Exit::Success
    } else {
        status.result = Outcome::Failure;
        Exit::Failure
    };
    runner::finish(&mut status, &warnings);
    (status, exit)
}
