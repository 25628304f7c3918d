//! `quiesce freeze -- CMD`: the freeze window alone — freeze, run CMD,
//! thaw. No scripts.

use crate::job::context::Context;
use crate::job::decide::{self, Facts, Settings};
use crate::job::run::{Finished, Job};
use crate::job::status::{say, Decision};
use crate::job::steps::group::{self, GroupGate};
use crate::job::steps::guarantee;
use crate::job::steps::snapshot_command as command;
use crate::job::steps::snapshot_window::{self as window, WindowRequest};

/// `quiesce freeze -- CMD`: freeze, run CMD, thaw. No scripts.
pub fn run(cx: &Context, req: &WindowRequest) -> Finished {
    let (mut job, runner) = match Job::start("freeze", cx, true) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    if let Err(p) = guarantee::at_start(&mut job, &runner, cx) {
        return job.fail(&p);
    }
    let settings = Settings::FREEZE_ONLY;
    let (plan, _lock) =
        match window::prepare(&mut job, cx, settings, window::mount_plan(cx, &req.mounts)) {
            Ok(ready) => ready,
            Err(p) => return job.fail(&p),
        };
    let targets = plan.as_ref().map(window::open_targets).transpose();
    let targets = match targets {
        Ok(t) => t,
        Err(p) => return job.fail(&p),
    };
    let mut warnings = Vec::new();
    let standby = plan
        .as_ref()
        .map(|p| window::standby(&runner, p, &mut warnings));
    job.warn_all(warnings);
    let ready = match (targets, standby) {
        (Some(t), Some(Ok(standby))) => Some((t, standby)),
        (_, Some(Err(p))) => return job.fail(&p),
        _ => None,
    };
    // A consistency group (SPEC §11): the round joined, and the pre-scripts'
    // barrier passed at once (a freeze runs none); nobody freezes unless
    // every member got there.
    let mut round = match group::join(&mut job, cx) {
        Ok(round) => round,
        Err(p) => {
            ready.into_iter().for_each(|(_, s)| command::dismiss(s));
            return job.fail(&p);
        }
    };
    if !group::pres_done(&mut job, round.as_mut(), true) {
        ready.into_iter().for_each(|(_, s)| command::dismiss(s));
        group::finish(&mut job, round, false);
        return job.conclude(Decision::Refused);
    }
    let gate = round.as_mut().map(GroupGate::new);
    let run = command::take_snapshot(&runner, ready, &req.cmd, req.max_freeze, settings, gate);
    let shot = window::file_window(&mut job, run);
    group::finish(&mut job, round, shot.froze);
    if let Some(sig) = job.status.signal {
        say(format!("stopped by signal {sig} after thawing"));
    }
    let facts = Facts {
        pre_ok: false,
        froze: shot.froze,
        snapshot_ok: shot.snapshot_ok,
        post_failed: false,
        any_error: !job.status.errors.is_empty(),
    };
    let (outcome, consistency) = decide::freeze_only(facts);
    job.conclude(Decision::Table(outcome, consistency))
}
