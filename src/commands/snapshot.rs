//! `quiesce snapshot [--mount M]... -- CMD...`: the whole job of SPEC.md §1,
//! deciding every step with the table of §5 (`crate::flow`).
//!
//! The post-script runs whenever the pre-check passed, whatever failed in
//! between, and even after a signal to the runner (a database left paused
//! because a post-script was skipped is the outcome this tool exists to
//! prevent); a second signal stops the post-script too.

use std::path::PathBuf;
use std::time::Duration;

use super::runner::{self, Runner, RunnerOptions};
use super::script;
use super::window::{self, freeze_phase_json};
use super::{mount_plan, Common};
use crate::error::{Exit, Problem};
use crate::flow::{self, Facts, Policy};
use crate::precheck;
use crate::report::{self, Status};

pub fn run(
    common: &Common,
    ropts: &RunnerOptions,
    mounts: &[PathBuf],
    max_freeze: Duration,
    cmd: &[String],
) -> (Status, Exit) {
    let runner = match Runner::start_or_refuse("snapshot", ropts, &common.run_dir, true) {
        Ok(r) => r,
        Err(done) => return *done,
    };
    let mut status = Status::new("snapshot", &runner.operation_id);
    let mut warnings = runner.warnings.clone();
    let pc = precheck::run(&common.paths);
    runner::audit_precheck("snapshot", &pc);
    for w in &pc.warnings {
        report::say(format!("warning: {w}"));
    }
    warnings.extend(pc.warnings.iter().cloned());
    let policy = Policy {
        continue_on_failure: pc.continue_on_failure(),
        fs_freeze_enabled: pc.config.as_ref().is_none_or(|c| c.fs_freeze_enabled),
    };

    // What can fail fast does so before any script runs: the mount plan and
    // the lock. Nothing is left half done.
    let prepared = (|| -> Result<_, Problem> {
        let plan = if policy.fs_freeze_enabled {
            let plan = mount_plan(common, mounts)?;
            warnings.extend(plan.warnings.iter().cloned());
            Some(plan)
        } else {
            None
        };
        let lock = window::lock_and_recover(common, &mut warnings)?;
        Ok((plan, lock))
    })();
    let (plan, _lock) = match prepared {
        Ok(x) => x,
        Err(p) => {
            status.consistency = Some(report::Consistency::None);
            return runner::fail_early(status, &p, &warnings);
        }
    };

    for p in &pc.problems {
        report::say_problem(p);
        status.push_error(p);
    }
    if !pc.passed() {
        report::say(if policy.continue_on_failure {
            "pre-check failed: no script runs; continuing without application consistency (continueBackupOnFailure)"
        } else {
            "pre-check failed: no script runs and no snapshot is taken (continueBackupOnFailure=false)"
        });
    }
    let ctx = runner.context();
    let mut interrupted = None;

    // Pre-script.
    let mut pre_ok = false;
    if let (true, Some(pre), Some(config)) = (pc.passed(), &pc.pre, &pc.config) {
        warnings.extend(script::end_stale_holders(&ctx));
        let res = script::run_phase(&ctx, pre, config);
        warnings.extend(script::record_holders(&ctx, &res.leftovers));
        pre_ok = res.ok();
        if let Some(p) = &res.problem {
            report::say_problem(p);
            status.push_error(p);
        }
        interrupted = interrupted.or(res.interrupted);
        status.phases.pre = Some(res.status);
    }

    // Freeze + snapshot, as the table says.
    let mut next = flow::after_pre(policy, pc.passed(), pre_ok);
    if interrupted.is_some() {
        next.snapshot = false;
    }
    let mut froze = false;
    let mut snapshot_ok = false;
    let mut internal_error = false;
    if next.snapshot {
        let mut targets = None;
        let mut go = true;
        if next.freeze {
            match window::open_targets(plan.as_ref().expect("plan exists when freezing")) {
                Ok(t) => targets = Some(t),
                Err(p) => {
                    // Cannot even open the mounts: the freeze failed (§5 row 4).
                    report::say_problem(&p);
                    status.push_error(&p);
                    go = flow::snapshot_after_freeze_failure(policy);
                }
            }
        }
        if go {
            // A panic in the window or the snapshot is contained here, so the
            // post-script still runs: by then the panic hook thawed through
            // the guard and the window's Drop closed it while unwinding.
            let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                window::take_snapshot(
                    &runner,
                    targets,
                    cmd,
                    max_freeze,
                    flow::snapshot_after_freeze_failure(policy),
                )
            }));
            let run = taken.unwrap_or_else(|_| {
                crate::audit::release();
                crate::signals::track_child_group(0);
                internal_error = true;
                report::say("quiesce: internal error (a bug) in the freeze window; filesystems were thawed; running the post-script");
                window::SnapshotRun::default()
            });
            warnings.extend(run.warnings.iter().cloned());
            for p in &run.problems {
                report::say_problem(p);
                status.push_error(p);
            }
            if let Some(w) = &run.window {
                status.phases.freeze = Some(freeze_phase_json(w));
            }
            if let Some(s) = &run.snapshot {
                status.phases.snapshot = Some(serde_json::to_value(s).expect("serialises"));
            }
            froze = run.froze;
            snapshot_ok = run.snapshot_ok;
            interrupted = interrupted.or(run.interrupted);
        }
    } else if pc.passed() && interrupted.is_none() {
        report::say("no snapshot is taken (see the errors above)");
    }

    // Post-script: always, once the pre-check passed.
    let mut post_failed = false;
    if let (true, Some(post), Some(config)) = (pc.passed(), &pc.post, &pc.config) {
        if let Some(sig) = interrupted {
            report::say(format!(
                "signal {sig} received: running the post-script to resume the application, then stopping (a second signal stops it)"
            ));
            runner.signals.drain();
        }
        let res = script::run_phase(&ctx, post, config);
        post_failed = res.problem.is_some() || res.interrupted.is_some();
        if let Some(p) = &res.problem {
            report::say_problem(p);
            status.push_error(p);
        }
        interrupted = interrupted.or(res.interrupted);
        let mut s = res.status;
        let (killed, w) = script::terminate_holders(&ctx);
        warnings.extend(w);
        s.holders_terminated = killed;
        status.phases.post = Some(s);
    } else {
        let (_, w) = script::terminate_holders(&ctx);
        warnings.extend(w);
    }

    let facts = Facts {
        pre_ok: pc.passed() && pre_ok,
        froze,
        snapshot_ok,
        post_failed,
        any_error: !status.errors.is_empty(),
    };
    let consistency = flow::consistency(policy, facts);
    status.consistency = Some(consistency);
    status.result = flow::outcome(policy, facts);
    report::say(format!(
        "snapshot {}: consistency {}",
        serde_json::to_value(status.result)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        serde_json::to_value(consistency)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
    ));
    let exit = match interrupted {
        Some(sig) => {
            status.result = report::Outcome::Failure;
            Exit::Signal(sig)
        }
        None if internal_error => {
            status.result = report::Outcome::Failure;
            Exit::Internal
        }
        None => status.result.exit(),
    };
    runner::finish(&mut status, &warnings);
    (status, exit)
}
