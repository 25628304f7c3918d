//! The runs, each a short sequence of steps (SPEC.md §1, §2): one script
//! phase (`pre`, `post`), and the checks every run starts with.

use super::preflight::{self, CheckedScript, Prechecked};
use super::script::{self, PhaseResult, RunContext};
use super::status::{self, Outcome, ScriptPhaseStatus};
use super::{holders, Common, Finished, Job, Phase, RunnerOptions};
use crate::config::Config;

/// The pre-check of the inputs: each check recorded in the trail, each
/// warning said and kept.
pub fn precheck(job: &mut Job, common: &Common) -> Prechecked {
    let pc = preflight::run(&common.paths);
    preflight::record(job.status.operation, &pc);
    for w in &pc.warnings {
        status::say(format!("warning: {w}"));
    }
    job.warn_all(pc.warnings.iter().cloned());
    pc
}

/// `quiesce pre` / `quiesce post`: one script with its retries and timeout,
/// as the extension calls them. Pre-script leftovers are recorded; the post
/// phase ends them once it is over.
pub fn script_phase(common: &Common, opts: &RunnerOptions, phase: Phase) -> Finished {
    let (mut job, runner) = match Job::start(phase.name(), opts, &common.run_dir, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if let Err(p) = super::recover::at_start(&mut job, &runner, common) {
        return job.fail(&p);
    }
    let ctx = runner.context();
    let pc = precheck(&mut job, common);
    match pc.ready(phase) {
        Some((script, config)) => {
            super::recover::arm(&mut job, common, opts, &pc, phase);
            let res = run_script(&mut job, &ctx, phase, script, config);
            if let Some(sig) = res.interrupted {
                status::say(format!(
                    "stopped by signal {sig}; the script's process tree was killed"
                ));
                job.interrupted(sig);
            }
        }
        None => {
            // The pre-check failed: nothing runs. A post phase still releases
            // what an earlier pre-script left holding (a database lock must
            // not outlive the backup because the post-script is broken).
            for p in &pc.problems {
                job.problem(p);
            }
            if phase == Phase::Post {
                let killed = release_holders(&mut job, &ctx);
                if !killed.is_empty() {
                    job.status.phases.post = Some(ScriptPhaseStatus {
                        holders_terminated: killed,
                        ..Default::default()
                    });
                }
            }
            job.status.result = Outcome::Failure;
        }
    }
    job.finish()
}

/// Runs one script phase of the job and files its outcome in the status:
/// before a pre-script, the holders of runs that are over are ended; after
/// it, what it left running is recorded; after a post-script, the holders
/// are ended. A failure is the phase's error, and the run's result.
pub fn run_script(
    job: &mut Job,
    ctx: &RunContext<'_>,
    phase: Phase,
    script: &CheckedScript,
    config: &Config,
) -> PhaseResult {
    if phase == Phase::Pre {
        job.warn_all(holders::end_stale(ctx));
    }
    let settling = super::recover::before_phase(&job.pending, phase);
    let res = script::run_phase(ctx, script, config);
    super::recover::after_phase(job, phase, settling, res.interrupted.is_some());
    let mut s = res.status.clone();
    match phase {
        Phase::Pre => {
            job.warn_all(holders::record(ctx, &res.leftovers));
            job.status.phases.pre = Some(s);
        }
        Phase::Post => {
            s.holders_terminated = release_holders(job, ctx);
            job.status.phases.post = Some(s);
        }
    }
    if let Some(p) = &res.problem {
        job.problem(p);
        job.status.result = Outcome::Failure;
    }
    res
}

/// Ends the holders this run may end (its own, and those of runs that are
/// over); returns their pids.
pub fn release_holders(job: &mut Job, ctx: &RunContext<'_>) -> Vec<i32> {
    let (killed, warnings) = holders::terminate(ctx);
    job.warn_all(warnings);
    killed
}
