//! The run of `quiesce thaw`: the emergency thaw (SPEC.md §6.4 point 5). Safe at any
//! time: with `--mount` it thaws exactly those mounts (the operator's
//! explicit word, no lock: it must work while a runner hangs); without, it
//! takes both freeze locks first (failing fast, naming the holder's pid, like
//! a freeze: a live quiesce run or the extension may be inside its window),
//! then thaws what a dead runner recorded in `state.json` and, per its page,
//! really froze or was freezing — never a mount that run did not freeze or
//! that was thawed since (another tool may have frozen it in the meantime).

use std::path::PathBuf;

use log::Level;

use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::lock::{LockError, LockPaths, RunLock};
use crate::freeze::state::{self, RecoverError, ThawResult};
use crate::job::context::Context;
use crate::job::run::{Finished, Job};
use crate::job::status::{self as report, Decision, FreezePhase};
use crate::trail::{self, Record};

/// The thaw run.
pub fn run(cx: &Context, mounts: &[PathBuf]) -> Finished {
    let mut job = Job::observe("thaw", cx);
    match thaw(cx, mounts) {
        Ok(results) => {
            for r in &results {
                report::say(format!(
                    "{} ({}): {}",
                    r.path.display(),
                    r.device,
                    r.outcome
                ));
                let failed = !r.ok();
                trail::event(
                    if failed { Level::Error } else { Level::Info },
                    Record::EmergencyThaw,
                    "thaw",
                    &[
                        ("mount", r.path.display().to_string()),
                        ("device", r.device.clone()),
                        ("outcome", r.outcome.to_string()),
                    ],
                    "emergency thaw",
                );
                if failed {
                    job.status.push_error(
                        &Problem::new(
                            ErrorCode::FsFreezeFailed,
                            format!("cannot thaw {}: {}", r.path.display(), r.outcome),
                        )
                        .with_fix(Fix::ThawByHand(r.path.clone())),
                    );
                }
            }
            job.status.phases.freeze = Some(FreezePhase::Thawed { thawed: results });
        }
        Err(p) => job.problem(&p),
    }
    job.conclude(Decision::ByErrors)
}

fn thaw(cx: &Context, mounts: &[PathBuf]) -> Result<Vec<ThawResult>, Problem> {
    if !mounts.is_empty() {
        return Ok(mounts.iter().map(|m| state::thaw_path(m, None)).collect());
    }
    let paths = LockPaths {
        run_dir: cx.run_dir.path.clone(),
        ..LockPaths::default()
    };
    let _lock = RunLock::acquire(&paths).map_err(|e| {
        let fix = match e {
            LockError::Held { .. } => Fix::ThawNamed,
            ref e => e.fix(),
        };
        Problem::new(
            ErrorCode::FsFreezeFailed,
            format!("not thawing from the record: {e}"),
        )
        .with_fix(fix)
    })?;
    match state::recover(&cx.run_dir) {
        Ok(None) => {
            report::say(format!(
                "nothing recorded as frozen in {}",
                cx.run_dir.state_path().display()
            ));
            Ok(Vec::new())
        }
        Ok(Some(r)) => {
            report::say(format!(
                "runner pid {} (operation {}) died during its freeze window; thawing what it recorded",
                r.record.runner_pid, r.record.operation_id
            ));
            Ok(r.mounts)
        }
        Err(RecoverError::RunnerAlive(pid)) => Err(Problem::new(
            ErrorCode::FsFreezeFailed,
            format!("runner pid {pid} is alive and inside its freeze window; it thaws by its own deadline"),
        )
        .with_fix(Fix::ThawNamed)),
        Err(e @ RecoverError::State(_)) => Err(e.into()),
    }
}
