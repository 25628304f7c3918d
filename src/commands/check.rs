//! `quiesce check`: every check, nothing executed, nothing frozen.

use std::path::PathBuf;

use crate::error::{ErrorCode, Exit, Problem};
use crate::job::preflight as precheck;
use crate::job::status::{self as report, Status};
use crate::job::{self as runner, RunnerOptions};
use crate::job::{mount_plan, Common};
use crate::sandbox::inspect::RunnerCaps;

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
    // What snapshot would refuse on before running anything: the policy and
    // its compiled sandbox (304), and CAP_SYS_ADMIN for the freeze.
    match runner::load_policy(ropts.policy.as_deref()).and_then(|p| {
        crate::sandbox::PreparedSandbox::prepare(&p)
            .map(|_| p)
            .map_err(|e| Problem::new(ErrorCode::IncorrectPluginhostFile, e.to_string()))
    }) {
        Ok(p) => report::say(format!(
            "sandbox policy ok: {} (sha256 {})",
            p.origin.display(),
            p.sha256
        )),
        Err(p) => problems.push(p),
    }
    let freezes = pc.config.as_ref().is_none_or(|c| c.fs_freeze_enabled);
    if freezes && !RunnerCaps::current().is_ok_and(|c| c.has_sys_admin()) {
        problems.push(Problem::new(
            ErrorCode::FsFreezeFailed,
            "the runner lacks CAP_SYS_ADMIN, which freezing needs; snapshot would refuse to start (run as root)",
        ));
    }
    // Bridge mode: the extension's config points at quiesce's hook.
    if let Some(c) = &pc.config {
        let host = crate::job::preflight::load_host_config(&common.paths.host_config)
            .ok()
            .flatten();
        let grace = runner::load_policy(ropts.policy.as_deref())
            .map(|p| p.kill_grace())
            .unwrap_or(crate::supervise::DEFAULT_GRACE);
        let paths = crate::job::bridge::BridgePaths::default();
        if let Some(f) = crate::job::bridge::check(&common.paths.config, c, &paths, host, grace) {
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
    report::say(if problems.is_empty() {
        "a snapshot would be application-consistent"
    } else {
        "a snapshot would NOT be application-consistent"
    });
    runner::conclude(status, &trail_warnings)
}
