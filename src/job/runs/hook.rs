//! `quiesce hook AGENT ARG...` (SPEC.md §10): quiesce as the hook of
//! another agent. The agent's calls are the `pre` and `post` runs of
//! [`super::prepost`], one operation carried from the first call to the
//! second by the pending-post records (§6.6); around them, what the agent
//! lacks: where it freezes itself, the deadline of its freeze
//! ([`agent_deadline`]); where it expects the hook to freeze, a freeze held
//! past the `pre` call ([`held`]).

use std::path::PathBuf;

use log::Level;

use super::prepost;
use crate::error::{ErrorCode, Problem};
use crate::job::apps::Apps;
use crate::job::context::Context;
use crate::job::decide::Settings;
use crate::job::hook::{Agent, HookCall};
use crate::job::metrics::{MetricsDir, Outputs};
use crate::job::phase::Phase;
use crate::job::run::{Finished, Job};
use crate::job::runner::Runner;
use crate::job::status::{say, Decision, HoldStatus, HookStatus};
use crate::job::steps::{agent_deadline, held};
use crate::trail::{self, Record};

/// What the agent called with, and the window options the wrapper passed.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub agent: Agent,
    pub call: HookCall,
    pub args: Vec<String>,
    /// `--mount`: the filesystems of the held freeze, or the candidates of
    /// the agent-freeze deadline; discovery when empty (SPEC §6.1).
    pub mounts: Vec<PathBuf>,
    /// `--max-freeze`: the held freeze's deadline, or the agent's.
    pub max_freeze: u64,
}

/// `quiesce hook AGENT ARG...`.
pub fn run(cx: &Context, req: &HookRequest) -> Finished {
    match req.call {
        HookCall::DryRun => {
            let (mut status, exit) = super::check::run(cx, &req.mounts, None);
            status.hook = Some(hook_status(req));
            (status, exit)
        }
        HookCall::BeforeAgentFreeze => before_agent_freeze(cx, req),
        HookCall::AfterAgentThaw | HookCall::AgentFreezeFailed => after_agent_thaw(cx, req),
        HookCall::HoldFreeze => hold_freeze(cx, req),
        HookCall::ReleaseFreeze => release_freeze(cx, req),
    }
}

fn hook_status(req: &HookRequest) -> HookStatus {
    HookStatus {
        agent: req.agent.name(),
        args: req.args.clone(),
        ..HookStatus::default()
    }
}

/// The agent and its arguments, in the status and the trail.
fn record_call(job: &mut Job, req: &HookRequest) {
    job.status.hook = Some(hook_status(req));
    trail::event(
        Level::Info,
        Record::Log,
        job.status.operation,
        &[
            ("agent", req.agent.name().into()),
            ("args", req.args.join(" ")),
        ],
        &format!("quiesce hook {} {}", req.agent.name(), req.args.join(" ")),
    );
}

/// A pre phase that went wrong: an error or a signal.
fn went_wrong(job: &Job) -> bool {
    !job.status.errors.is_empty() || job.status.signal.is_some()
}

/// The pre-scripts of a hook's first call: the applications and those
/// whose pre-script started; when one went wrong, the rollback at once
/// (the agent gives up and calls no `thaw`), and `None`.
fn pre_scripts(job: &mut Job, runner: &Runner, cx: &Context) -> Option<(Apps, Vec<usize>)> {
    let (apps, started) = match prepost::scripts(job, runner, cx, Phase::Pre) {
        Ok(done) => done,
        Err(p) => {
            job.problem(&p);
            return None;
        }
    };
    if !went_wrong(job) {
        return Some((apps, started));
    }
    if !started.is_empty() {
        say("rolling back: the post-scripts of the applications whose pre-script started");
    }
    prepost::rollback(job, runner, &apps, &started);
    None
}

/// qemu-ga and VMware `freeze`: the pre-scripts, before the agent's own
/// freeze; a non-zero exit makes the agent give up its freeze. On success,
/// the watcher that is the agent's deadline.
fn before_agent_freeze(cx: &Context, req: &HookRequest) -> Finished {
    let (mut job, runner) = match prepost::begin(cx, Phase::Pre) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    record_call(&mut job, req);
    if pre_scripts(&mut job, &runner, cx).is_none() {
        say(format!(
            "the {} agent's freeze is refused: nothing was frozen",
            req.agent.name()
        ));
        return job.conclude(Decision::ByErrors);
    }
    let op = job.operation_id().to_string();
    match agent_deadline::start(cx, req.agent.name(), &op, &req.mounts, req.max_freeze) {
        Ok(rec) => {
            if let Some(h) = job.status.hook.as_mut() {
                h.deadline_watcher = Some(rec.pid);
            }
        }
        Err(e) => {
            let w = format!(
                "no deadline for the agent's freeze ({e}): if its thaw never comes, nothing thaws"
            );
            say(format!("warning: {w}"));
            job.warn(w);
        }
    }
    job.conclude(Decision::ByErrors)
}

/// qemu-ga and VMware `thaw` (after the agent's thaw), VMware `freezeFail`
/// (its freeze failed after this hook's `freeze`): the deadline watcher
/// ended, the post-scripts of what the `freeze` started; `freezeFail` is
/// reported as the failure it is.
fn after_agent_thaw(cx: &Context, req: &HookRequest) -> Finished {
    let report = agent_deadline::end(cx);
    let (mut job, runner) = match prepost::begin(cx, Phase::Post) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    record_call(&mut job, req);
    if let Some(r) = report.filter(|r| !r.thawed.is_empty() || !r.failed.is_empty()) {
        job.problem(&Problem::new(
            ErrorCode::FsFreezeTimeout,
            format!(
                "the {} agent's thaw came after --max-freeze: quiesce had thawed {} at the deadline{}",
                req.agent.name(),
                list(&r.thawed),
                if r.failed.is_empty() {
                    String::new()
                } else {
                    format!(" (failed: {})", r.failed.join("; "))
                }
            ),
        ));
        if let Some(h) = job.status.hook.as_mut() {
            h.thawed_at_deadline = r.thawed;
        }
    }
    if let Err(p) = prepost::scripts(&mut job, &runner, cx, Phase::Post) {
        return job.fail(&p);
    }
    if req.call == HookCall::AgentFreezeFailed {
        job.problem(&Problem::new(
            ErrorCode::FsFreezeFailed,
            format!(
                "the {} agent reported that its freeze failed (freezeFail): the post-scripts rolled the pre-scripts back",
                req.agent.name()
            ),
        ));
    }
    job.conclude(Decision::ByErrors)
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Google `pre`, AWS `pre-script`: the pre-scripts, then the freeze held
/// past this call. Refused while another is held; on any failure, the
/// rollback and nothing frozen.
fn hold_freeze(cx: &Context, req: &HookRequest) -> Finished {
    let (mut job, runner) = match prepost::begin(cx, Phase::Pre) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    record_call(&mut job, req);
    let _claim = match held::claim(cx) {
        Ok(c) => c,
        Err(p) => return job.fail(&p),
    };
    let Some((apps, started)) = pre_scripts(&mut job, &runner, cx) else {
        say("no freeze: the pre-scripts did not all succeed");
        return job.conclude(Decision::ByErrors);
    };
    if !Settings::of_apps(&apps, |_| true).fs_freeze_enabled {
        // An application depends on no freeze (fsFreezeEnabled=false, SPEC
        // §3.1): the pre-scripts ran, nothing is frozen, `post` expects no
        // hold.
        say("fsFreezeEnabled=false: the pre-scripts ran; nothing is frozen");
        return job.conclude(Decision::ByErrors);
    }
    if let (Some(g), Some(due)) = (job.pending.guard.as_ref(), job.pending.awaited_due) {
        g.announce_due(due);
    }
    let op = job.operation_id().to_string();
    match held::hold(cx, req.agent.name(), &op, &req.mounts, req.max_freeze) {
        Ok(rec) => {
            say(format!(
                "filesystems frozen, held by process {} until `hook {} post` (at most {} s)",
                rec.pid,
                req.agent.name(),
                rec.max_freeze_secs
            ));
            if let Some(h) = job.status.hook.as_mut() {
                h.hold = Some(HoldStatus {
                    pid: rec.pid,
                    ..HoldStatus::default()
                });
            }
            // INVARIANT: nothing touches a frozen disk: the last result and
            // the metrics are written by the `post` that thaws.
            job.outputs = Outputs {
                state_dir: None,
                metrics_dir: MetricsDir::Off,
            };
        }
        Err(p) => {
            job.problem(&p);
            say("nothing is frozen; rolling back: the post-scripts of the applications whose pre-script started");
            prepost::rollback(&mut job, &runner, &apps, &started);
        }
    }
    job.conclude(Decision::ByErrors)
}

/// Google `post`, AWS `post-script`: the held freeze thawed and its report
/// collected — before anything else, since the run's own set-up writes to
/// the state directory, which may be on a frozen filesystem — then the
/// post-scripts of what the `pre` started.
fn release_freeze(cx: &Context, req: &HookRequest) -> Finished {
    let (hold, problem) = held::release(cx);
    let (mut job, runner) = match prepost::begin(cx, Phase::Post) {
        Ok(started) => started,
        Err(refused) => return *refused,
    };
    record_call(&mut job, req);
    if let Some(h) = job.status.hook.as_mut() {
        h.hold = hold;
    }
    let apps = match prepost::scripts(&mut job, &runner, cx, Phase::Post) {
        Ok((apps, _)) => apps,
        Err(p) => return job.fail(&p),
    };
    // No hold is expected where an application depends on no freeze.
    let expected = Settings::of_apps(&apps, |_| true).fs_freeze_enabled;
    if let Some(p) = problem.filter(|p| expected || p.code != ErrorCode::NoHeldFreeze) {
        job.problem(&p);
    }
    job.conclude(Decision::ByErrors)
}
