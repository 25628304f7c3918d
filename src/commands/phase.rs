//! `quiesce pre` and `quiesce post`: one script with its retries and timeout,
//! as the existing extension calls them (SPEC.md §2, §7). Pre-script
//! leftovers are recorded; the post phase terminates them once it is over.

use crate::error::Exit;
use crate::job::preflight::{self as precheck, Phase};
use crate::job::script;
use crate::job::status::{self as report, Outcome, Status};
use crate::job::Common;
use crate::job::{self as runner, Runner, RunnerOptions};

pub fn run(common: &Common, ropts: &RunnerOptions, phase: Phase) -> (Status, Exit) {
    let op_name = phase.name();
    let runner = match Runner::start_or_refuse(op_name, ropts, &common.run_dir, false) {
        Ok(r) => r,
        Err(done) => return *done,
    };
    let mut status = Status::new(op_name, &runner.operation_id);
    let mut warnings = runner.warnings.clone();
    let ctx = runner.context();
    let pc = precheck::run(&common.paths);
    runner::audit_precheck(op_name, &pc);
    for w in &pc.warnings {
        report::say(format!("warning: {w}"));
    }
    warnings.extend(pc.warnings.iter().cloned());
    let mut exit = Exit::Success;
    let checked = match phase {
        Phase::Pre => pc.pre.as_ref(),
        Phase::Post => pc.post.as_ref(),
    };
    match (pc.passed(), checked, pc.config.as_ref()) {
        (true, Some(script), Some(config)) => {
            if phase == Phase::Pre {
                warnings.extend(script::end_stale_holders(&ctx));
            }
            let res = script::run_phase(&ctx, script, config);
            match phase {
                Phase::Pre => warnings.extend(script::record_holders(&ctx, &res.leftovers)),
                Phase::Post => {
                    let (killed, w) = script::terminate_holders(&ctx);
                    warnings.extend(w);
                    let mut s = res.status.clone();
                    s.holders_terminated = killed;
                    status.phases.post = Some(s);
                }
            }
            if phase == Phase::Pre {
                status.phases.pre = Some(res.status.clone());
            }
            if let Some(p) = &res.problem {
                report::say_problem(p);
                status.push_error(p);
                status.result = Outcome::Failure;
                exit = Exit::Failure;
            }
            if let Some(sig) = res.interrupted {
                report::say(format!(
                    "stopped by signal {sig}; the script's process tree was killed"
                ));
                status.result = Outcome::Failure;
                exit = Exit::Signal(sig);
            }
        }
        _ => {
            // The pre-check failed: nothing runs. A post phase still releases
            // what an earlier pre-script left holding (a database lock must
            // not outlive the backup because the post-script is broken).
            for p in &pc.problems {
                report::say_problem(p);
                status.push_error(p);
            }
            if phase == Phase::Post {
                let (killed, w) = script::terminate_holders(&ctx);
                warnings.extend(w);
                if !killed.is_empty() {
                    status.phases.post = Some(report::ScriptPhaseStatus {
                        holders_terminated: killed,
                        ..Default::default()
                    });
                }
            }
            status.result = Outcome::Failure;
            exit = Exit::Failure;
        }
    }
    runner::finish(&mut status, &warnings);
    (status, exit)
}
