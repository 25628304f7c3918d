//! One function per subcommand: each returns the status document and the exit
//! code; `main` only parses the command line and prints.

use crate::error::Exit;
use crate::precheck::{self, InputPaths};
use crate::report::{self, Outcome, Status};

/// Options every subcommand shares.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub paths: InputPaths,
    pub verbose: bool,
}

/// `quiesce check`: every check, nothing executed.
pub fn check(common: &Common) -> (Status, Exit) {
    let op = report::new_operation_id();
    let mut status = Status::new("check", &op);
    let pc = precheck::run(&common.paths);
    report::say(format!(
        "check {op}: configuration {}",
        common.paths.config.display()
    ));
    for w in &pc.warnings {
        report::say(format!("warning: {w}"));
    }
    status.warnings = pc.warnings.clone();
    if let Some(c) = &pc.config {
        report::say(format!(
            "configuration ok: timeout {} s per phase, continueBackupOnFailure={}, fsFreezeEnabled={}",
            c.timeout_secs, c.continue_on_failure, c.fs_freeze_enabled
        ));
    }
    for s in [&pc.pre, &pc.post].into_iter().flatten() {
        report::say(format!(
            "{}-script ok: {} (sha256 {}{})",
            s.phase.name(),
            s.file.path.display(),
            s.sha256,
            if s.pinned { ", pinned" } else { "" }
        ));
    }
    for p in &pc.problems {
        report::say_problem(p);
        status.push_error(p);
    }
    if pc.passed() {
        report::say("a snapshot would be application-consistent");
        (status, Exit::Success)
    } else {
        status.result = Outcome::Failure;
        report::say("a snapshot would NOT be application-consistent");
        (status, Exit::Failure)
    }
}
