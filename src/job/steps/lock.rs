//! The run lock and the extension's freeze lock, taken before anything runs
//! (failing fast, naming the holder), and what a dead runner left frozen
//! recovered under them.

use log::Level;

use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::lock::{LockPaths, RunLock};
use crate::freeze::state::{self, RecoverError};
use crate::job::context::Context;
use crate::job::status::say;
use crate::trail::{self, Record};

/// Takes the run lock (and the extension's freeze lock) and recovers what a
/// dead runner left frozen. Fails fast when another run holds the lock.
pub fn lock_and_recover(cx: &Context, warnings: &mut Vec<String>) -> Result<RunLock, Problem> {
    let paths = LockPaths {
        run_dir: cx.run_dir.path.clone(),
        ..LockPaths::default()
    };
    let lock = RunLock::acquire(&paths)?;
    match state::recover(&cx.run_dir) {
        Ok(None) => {}
        Ok(Some(r)) => {
            let msg = format!(
                "recovered the freeze window of dead runner pid {} (operation {}): {}",
                r.record.runner_pid,
                r.record.operation_id,
                r.mounts
                    .iter()
                    .map(|m| format!("{} {}", m.path.display(), m.outcome))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            trail::event(
                Level::Warn,
                Record::Recovery,
                "freeze",
                &[("deadRunner", r.record.runner_pid.to_string())],
                &msg,
            );
            say(format!("warning: {msg}"));
            warnings.push(msg);
        }
        // We hold the lock, so a live recorder is a runner that lost its
        // lock file (deleted /run?): do not touch its window.
        Err(RecoverError::RunnerAlive(pid)) => {
            return Err(Problem::new(
                ErrorCode::FsFreezeFailed,
                format!("runner pid {pid} is inside a freeze window; not freezing twice"),
            )
            .with_fix(Fix::Wait(Some(pid))))
        }
        Err(RecoverError::State(e)) => {
            let w = format!("recovery state unreadable: {e}");
            say(format!("warning: {w}"));
            warnings.push(w);
        }
    }
    Ok(lock)
}
