//! `quiesce thaw`: the emergency thaw (SPEC.md §6.4 point 5). Safe at any
//! time: with `--mount` it thaws exactly those mounts; without, it thaws what
//! a dead runner recorded in `state.json`, and leaves a live runner's window
//! alone (that runner thaws by its own deadline).

use std::path::PathBuf;

use super::Common;
use crate::error::{ErrorCode, Exit, Problem};
use crate::freeze::state::{self, RecoverError, ThawResult};
use crate::report::{self, Outcome, Status};

pub fn run(common: &Common, mounts: &[PathBuf]) -> (Status, Exit) {
    let op = report::new_operation_id();
    let mut status = Status::new("thaw", &op);
    let results: Vec<ThawResult> = if mounts.is_empty() {
        match state::recover(&common.run_dir) {
            Ok(None) => {
                report::say(format!(
                    "nothing recorded as frozen in {}",
                    common.run_dir.state_path().display()
                ));
                Vec::new()
            }
            Ok(Some(r)) => {
                report::say(format!(
                    "runner pid {} (operation {}) died during its freeze window; thawing what it recorded",
                    r.record.runner_pid, r.record.operation_id
                ));
                r.mounts
            }
            Err(RecoverError::RunnerAlive(pid)) => {
                let p = Problem::new(
                    ErrorCode::FsFreezeFailed,
                    format!("runner pid {pid} is alive and inside its freeze window; it thaws by its own deadline (name mounts with --mount to thaw them now)"),
                );
                report::say_problem(&p);
                status.push_error(&p);
                status.result = Outcome::Failure;
                return (status, Exit::Failure);
            }
            Err(RecoverError::State(e)) => {
                let p = Problem::new(ErrorCode::FsFreezeFailed, e.to_string());
                report::say_problem(&p);
                status.push_error(&p);
                status.result = Outcome::Failure;
                return (status, Exit::Failure);
            }
        }
    } else {
        mounts.iter().map(|m| state::thaw_path(m, None)).collect()
    };
    for r in &results {
        report::say(format!(
            "{} ({}): {}",
            r.path.display(),
            r.device,
            r.outcome
        ));
        if r.outcome.starts_with("error") {
            let p = Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("cannot thaw {}: {}", r.path.display(), r.outcome),
            );
            status.push_error(&p);
        }
    }
    status.phases.freeze = Some(serde_json::json!({ "thawed": results }));
    if status.errors.is_empty() {
        (status, Exit::Success)
    } else {
        status.result = Outcome::Failure;
        (status, Exit::Failure)
    }
}
