//! `quiesce pre` and `quiesce post` (SPEC.md §2, §7): every application's
//! script with its retries and timeout, as the extension calls them.

use crate::job::apps::App;
use crate::job::context::Context;
use crate::job::decide;
use crate::job::phase::Phase;
use crate::job::run::{Finished, Job};
use crate::job::status::{self, Decision};
use crate::job::steps::snapshot_window::mount_plan;
use crate::job::steps::{applications, guarantee, phases, workloads};

/// `quiesce pre` / `quiesce post`: every application's script with its
/// retries and timeout, as the extension calls them — pre-scripts in
/// application order, post-scripts in reverse. Pre-script leftovers are
/// recorded; each application's post phase ends its own.
pub fn run(cx: &Context, phase: Phase) -> Finished {
    let (mut job, runner) = match Job::start(phase.name(), cx, false) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if phase == Phase::Pre {
        // Before any script, the post-scripts of dead runs included (SPEC §8).
        guarantee::start_guard(&mut job, cx);
    }
    if let Err(p) = guarantee::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let ctx = runner.context();
    let mut apps = match applications::load(&mut job, cx) {
        Ok(apps) => apps,
        Err(p) => {
            if phase == Phase::Post {
                // Nothing may run, but what earlier pre-scripts left holding
                // must not outlive the backup.
                phases::release_holders(&mut job, &ctx);
            }
            return job.fail(&p);
        }
    };
    if phase == Phase::Pre {
        // The freeze is another tool's: its files are checked against what
        // discovery would freeze (SPEC §3.2, §6.1).
        let plan = mount_plan(cx, &[]).ok();
        workloads::cover(
            &mut job,
            cx,
            &mut apps,
            plan.as_ref(),
            runner.sandbox.as_ref(),
        );
    }
    applications::report_problems(&mut job, &apps);
    match phase {
        Phase::Pre => {
            if decide::scripts_may_run(&apps) {
                phases::pres(&mut job, cx, &ctx, &apps);
            }
        }
        Phase::Post => {
            let post_of = guarantee::started_by_pre(&job.pending, &apps);
            let runs = |a: &App| post_of.runs.as_ref().is_none_or(|s| s.contains(&a.index));
            for app in apps.list.iter().filter(|a| !runs(a)) {
                match post_of.already_ran.iter().find(|(i, _)| *i == app.index) {
                    Some((_, how)) => status::say(format!(
                        "{}: {how}, for the pre run this post completes: not run again",
                        app.name
                    )),
                    None => status::say(format!(
                        "{}: its pre-script did not start in the pre run this post completes, so its post-script does not run",
                        app.name
                    )),
                }
            }
            phases::posts(&mut job, &ctx, &apps, runs);
        }
    }
    job.conclude(Decision::ByErrors)
}
