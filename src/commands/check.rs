//! `quiesce check`: every check, nothing executed, nothing frozen.

use std::path::PathBuf;

use super::runner::{self, RunnerOptions};
use super::{mount_plan, Common};
use crate::error::Exit;
use crate::precheck;
use crate::report::{self, Outcome, Status};

pub fn run(common: &Common, ropts: &RunnerOptions, mounts: &[PathBuf]) -> (Status, Exit) {
    let (op, trail_warnings) = runner::audit_only("check", ropts);
    let mut status = Status::new("check", &op);
    let pc = precheck::run(&common.paths);
    runner::audit_precheck("check", &pc);
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
    let mut problems = pc.problems.clone();
    // Bridge mode: the extension's config points at quiesce's hook.
    if let Some(c) = &pc.config {
        let host = crate::precheck::load_host_config(&common.paths.host_config)
            .ok()
            .flatten();
        let grace = runner::load_policy(ropts.policy.as_deref())
            .map(|p| p.kill_grace())
            .unwrap_or(crate::supervise::DEFAULT_GRACE);
        let paths = crate::bridge::BridgePaths::default();
        if let Some(f) = crate::bridge::check(&common.paths.config, c, &paths, host, grace) {
            for n in &f.notes {
                report::say(n);
            }
            for w in &f.warnings {
                report::say(format!("warning: {w}"));
            }
            status.warnings.extend(f.warnings);
            problems.extend(f.problems);
        }
    }
    match mount_plan(common, mounts) {
        Ok(plan) => {
            for e in &plan.entries {
                if e.freeze || common.verbose || !mounts.is_empty() {
                    report::say(format!(
                        "mount {} ({}, {}): {} — {}",
                        e.path.display(),
                        e.fs_type,
                        e.device,
                        if e.freeze { "freeze" } else { "skip" },
                        e.reason
                    ));
                }
            }
            let n = plan.freeze_order().len();
            report::say(format!(
                "{n} filesystem(s) would be frozen, {} mount(s) skipped{}",
                plan.entries.len() - n,
                if common.verbose {
                    ""
                } else {
                    " (-v lists them)"
                }
            ));
            for w in &plan.warnings {
                report::say(format!("warning: {w}"));
            }
            status.warnings.extend(plan.warnings.iter().cloned());
            status.mounts = Some(serde_json::to_value(&plan.entries).expect("plan serialises"));
        }
        Err(p) => problems.push(p),
    }
    for p in &problems {
        report::say_problem(p);
        status.push_error(p);
    }
    let exit = if problems.is_empty() {
        report::say("a snapshot would be application-consistent");
        Exit::Success
    } else {
        status.result = Outcome::Failure;
        report::say("a snapshot would NOT be application-consistent");
        Exit::Failure
    };
    runner::finish(&mut status, &trail_warnings);
    (status, exit)
}
