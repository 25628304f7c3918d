//! The run of `quiesce check`: every check, nothing executed, nothing frozen.
//! only if a snapshot would be application-consistent.

use std::path::PathBuf;

use crate::job::apps::Apps;
use crate::job::bridge::{self, BridgePaths};
use crate::job::preflight::{CheckedScript, Prechecked, Readiness};
use crate::job::status::{say, CheckedScriptStatus};
use crate::job::{mount_plan, Common, Finished, Job, RunnerOptions};
use crate::job::{pipeline, recover};
use crate::supervise::DEFAULT_GRACE;

/// The check run.
pub fn check(common: &Common, ropts: &RunnerOptions, mounts: &[PathBuf]) -> Finished {
    let mut job = Job::observe("check", ropts);
    say(format!("check {}", job.operation_id()));
    let mut problems = Vec::new();
    let apps = match pipeline::precheck(&mut job, common) {
        Ok(apps) => {
            say_apps(&mut job, &apps);
            for app in &apps.list {
                problems.extend(app.pc.problems.iter().cloned());
            }
            Some(apps)
        }
        Err(p) => {
            problems.push(p);
            None
        }
    };
    // What a snapshot would refuse on before running anything.
    let freezes = apps
        .as_ref()
        .is_none_or(|a| a.list.iter().all(|a| a.fs_freeze_enabled()));
    let mut ready = Readiness::of(ropts, freezes);
    ready.probe_confinement();
    if let Some(p) = &ready.policy {
        say(format!(
            "sandbox policy ok: {} (sha256 {})",
            p.origin.display(),
            p.sha256
        ));
    }
    problems.extend(ready.problems);
    // Bridge mode: the extension's config points at quiesce's hook.
    let grace = ready
        .policy
        .as_ref()
        .map_or(DEFAULT_GRACE, |p| p.kill_grace());
    let paths = BridgePaths::default();
    for app in apps.iter().flat_map(|a| &a.list) {
        let Some(c) = &app.pc.config else { continue };
        let host_timeout = app.pc.host_timeout;
        if let Some(f) = bridge::check(&app.config_path, c, &paths, host_timeout, grace) {
            f.notes.iter().for_each(say);
            for w in &f.warnings {
                say(format!("warning: {w}"));
            }
            job.warn_all(f.warnings);
            problems.extend(f.problems);
        }
    }
    match mount_plan(common, mounts) {
        Ok(plan) => {
            for e in &plan.entries {
                if e.freeze || common.verbose || !mounts.is_empty() {
                    say(format!(
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
            say_stages(&plan);
            let hint = if common.verbose {
                ""
            } else {
                " (-v lists them)"
            };
            say(format!(
                "{n} filesystem(s) would be frozen, {} mount(s) skipped{hint}",
                plan.entries.len() - n,
            ));
            for w in &plan.warnings {
                say(format!("warning: {w}"));
            }
            job.warn_all(plan.warnings.iter().cloned());
            job.status.mounts = Some(serde_json::to_value(&plan.entries).expect("plan serialises"));
        }
        Err(p) => problems.push(p),
    }
    // Pending post-scripts (SPEC §6.6): a run would refuse an untrusted
    // state directory, and would first run what is due.
    match recover::describe(&common.pending) {
        Ok(pending) => {
            for p in &pending {
                say(format!(
                    "pending post-script {} (operation {}, {} s old): {}",
                    p["record"].as_str().unwrap_or("?"),
                    p["operationId"].as_str().unwrap_or("?"),
                    p["ageSeconds"]
                        .as_u64()
                        .map_or("?".into(), |a| a.to_string()),
                    p["state"].as_str().unwrap_or("?"),
                ));
            }
            job.status.pending = Some(serde_json::Value::Array(pending));
        }
        Err(p) => problems.push(p),
    }
    for p in &problems {
        if !job.status.has_error(p) {
            job.problem(p);
        }
    }
    say(if problems.is_empty() {
        "a snapshot would be application-consistent"
    } else {
        "a snapshot would NOT be application-consistent"
    });
    job.conclude()
}

/// The plan as numbered stages (SPEC.md §6.1): the filesystems of a stage
/// are frozen together, a stage only once the previous one froze.
fn say_stages(plan: &crate::freeze::mounts::MountPlan) {
    let stages = plan.stages();
    for (k, stage) in stages.iter().enumerate() {
        let names: Vec<String> = stage.iter().map(|e| e.path.display().to_string()).collect();
        say(format!(
            "freeze stage {} of {}: {}{}",
            k + 1,
            stages.len(),
            names.join(", "),
            if stage.len() > 1 {
                " (concurrently)"
            } else {
                ""
            }
        ));
    }
}

/// Where the applications come from, then one block per application: what
/// passed (and, in the status, the scripts that passed their checks).
fn say_apps(job: &mut Job, apps: &Apps) {
    apps.source.notes.iter().for_each(say);
    let indent = if apps.several() { "  " } else { "" };
    for app in &apps.list {
        if apps.several() {
            say(format!(
                "application {} of {}: {} ({})",
                app.index + 1,
                apps.list.len(),
                app.name,
                app.config_path.display()
            ));
        } else {
            say(format!("configuration {}", app.config_path.display()));
        }
        say_inputs(&app.pc, indent);
        let entry = &mut job.status.applications[app.index];
        let checked = |s: &CheckedScript| CheckedScriptStatus {
            script: s.file.path.display().to_string(),
            sha256: s.sha256.clone(),
            pinned: s.pinned,
            interpreters: s.interpreters.iter().map(Into::into).collect(),
        };
        entry.pre_script = app.pc.pre.as_ref().map(checked);
        entry.post_script = app.pc.post.as_ref().map(checked);
        if apps.several() {
            // Said again, with its action, among the run's errors below.
            for p in &app.pc.problems {
                say(format!("{indent}error: {p}"));
            }
        }
    }
}

/// One line per input that passed.
fn say_inputs(pc: &Prechecked, indent: &str) {
    if let Some(c) = &pc.config {
        say(format!(
            "{indent}configuration ok: timeout {} s per phase, continueBackupOnFailure={}, fsFreezeEnabled={}",
            c.timeout_secs, c.continue_on_failure, c.fs_freeze_enabled
        ));
    }
    for s in [&pc.pre, &pc.post].into_iter().flatten() {
        say(format!(
            "{indent}{}-script ok: {} (sha256 {}{}{})",
            s.phase.name(),
            s.file.path.display(),
            s.sha256,
            if s.pinned { ", pinned" } else { "" },
            if s.interpreters.is_empty() {
                "; an ELF binary, no interpreter"
            } else {
                ""
            }
        ));
        say_interpreters(s, indent);
    }
}

/// What runs a script, and what was checked of it (SPEC §4).
fn say_interpreters(s: &CheckedScript, indent: &str) {
    for i in &s.interpreters {
        let resolved = if i.resolved == i.path {
            String::new()
        } else {
            format!(" -> {}", i.resolved.display())
        };
        say(format!(
            "{indent}  {}-script interpreter ok: {}{resolved} ({}): root-owned, not group- or world-writable, nor any directory above it",
            s.phase.name(),
            i.path.display(),
            i.named_by
        ));
        if !i.shadowing.is_empty() {
            let dirs: Vec<String> = i
                .shadowing
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            say(format!(
                "{indent}  PATH directories searched before it, where a program of that name would run instead, ok: {}: only root can add to them",
                dirs.join(", ")
            ));
        }
    }
}
