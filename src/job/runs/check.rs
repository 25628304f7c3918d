//! The run of `quiesce check`: every check, nothing executed, nothing frozen.
//! Exit 0 only if a snapshot would be application-consistent.

use std::path::PathBuf;

use crate::error::Problem;
use crate::freeze::mounts::MountPlan;
use crate::job::agents;
use crate::job::apps::Apps;
use crate::job::bridge::{self, BridgePaths};
use crate::job::context::Context;
use crate::job::hook::Agent;
use crate::job::pending::{self, Due, Entry, PendingOptions};
use crate::job::phase::Phase;
use crate::job::preflight::{self, CheckedScript, Prechecked, Readiness};
use crate::job::run::{Finished, Job};
use crate::job::status::{say, CheckedScriptStatus, Decision, PendingRecordStatus, PendingStatus};
use crate::job::steps::snapshot_window::mount_plan;
use crate::job::steps::{applications, group, workloads};
use crate::supervise::DEFAULT_GRACE;

/// The check run.
pub fn run(cx: &Context, mounts: &[PathBuf], hook: Option<Agent>) -> Finished {
    let mut job = Job::observe("check", cx);
    say(format!("check {}", job.operation_id()));
    let mut problems = Vec::new();
    let mut apps = match applications::load(&mut job, cx) {
        Ok(apps) => {
            say_apps(&mut job, &apps);
            for app in &apps.list {
                problems.extend(app.pc.problems.iter().cloned());
                // A misspelt key loses a setting a run would silently
                // ignore: the operator's gate refuses it (SPEC §3).
                problems.extend(app.pc.typos.iter().cloned());
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
    let mut ready = Readiness::of(cx.options.policy.as_deref(), cx.options.no_sandbox, freezes);
    ready.probe_confinement();
    if let Some(p) = &ready.policy {
        say(format!(
            "sandbox policy ok: {} (sha256 {})",
            p.origin.display(),
            p.sha256
        ));
    }
    // The workload probes run under the scripts' sandbox.
    let sandbox = ready.sandbox.take().map(std::sync::Arc::new);
    problems.extend(ready.problems);
    job.say_warnings(ready.warnings);
    let grace = ready
        .policy
        .as_ref()
        .map_or(DEFAULT_GRACE, |p| p.kill_grace());
    problems.extend(check_bridge(&mut job, cx, apps.as_ref(), grace));
    problems.extend(group::check(&mut job, cx));
    let plan = match mount_plan(cx, mounts) {
        Ok(plan) => {
            say_plan(&mut job, cx, &plan, !mounts.is_empty());
            Some(plan)
        }
        Err(p) => {
            problems.push(p);
            None
        }
    };
    if let Some(apps) = apps.as_mut() {
        let plan = plan.as_ref().filter(|_| freezes);
        problems.extend(workloads::cover(&mut job, cx, apps, plan, sandbox.as_ref()));
    }
    problems.extend(say_pending(&mut job, cx));
    if let Some(agent) = hook {
        let found = agents::check(agent);
        for n in found.notes {
            say(n);
        }
        problems.extend(found.problems);
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
    job.conclude(Decision::ByErrors)
}

/// Bridge mode (the extension's config runs quiesce's hook), recognised
/// from the run's own applications (`check --config
/// /etc/azure/VMSnapshotScriptPluginConfig.json`) or else from the
/// extension's config itself (`--extension-config`): plain `check` and
/// `--bridge check`, whose applications are quiesce's own set, verify the
/// set-up the hook will run. Returns its problems; says its notes.
fn check_bridge(
    job: &mut Job,
    cx: &Context,
    apps: Option<&Apps>,
    grace: std::time::Duration,
) -> Vec<Problem> {
    let paths = BridgePaths::of(&cx.apps);
    let ext_path = &cx.apps.extension_config;
    let mut found = Vec::new();
    let mut host_timeout = None;
    for app in apps.iter().flat_map(|a| &a.list) {
        host_timeout = host_timeout.or(app.pc.host_timeout);
        let Some(c) = &app.pc.config else { continue };
        if let Some(f) = bridge::check(&app.config_path, c, &paths, app.pc.host_timeout, grace) {
            found.push(f);
        }
    }
    let among_apps = apps.is_some_and(|a| a.list.iter().any(|a| &a.config_path == ext_path));
    if found.is_empty() && !among_apps && ext_path.exists() {
        match preflight::load_config(ext_path, host_timeout) {
            Ok((loaded, _)) => {
                if let Some(mut f) =
                    bridge::check(ext_path, &loaded.config, &paths, host_timeout, grace)
                {
                    // What the extension runs as root: the hook, checked
                    // like any script.
                    for phase in [Phase::Pre, Phase::Post] {
                        let script = match phase {
                            Phase::Pre => &loaded.config.pre,
                            Phase::Post => &loaded.config.post,
                        };
                        if let Err(p) = preflight::check_script(phase, script) {
                            f.problems.push(Problem {
                                detail: format!("{}: {}", ext_path.display(), p.detail),
                                ..p
                            });
                        }
                    }
                    f.problems.extend(preflight::typos(ext_path, &loaded));
                    found.push(f);
                }
            }
            Err(p) => {
                let w = format!(
                    "cannot tell whether the extension's config runs quiesce's hook (bridge mode): {}",
                    p.detail
                );
                say(format!("warning: {w}"));
                job.warn(w);
            }
        }
    }
    let mut problems = Vec::new();
    for f in found {
        f.notes.iter().for_each(say);
        for w in &f.warnings {
            say(format!("warning: {w}"));
        }
        job.warn_all(f.warnings);
        problems.extend(f.problems);
    }
    problems
}

/// Every mount with the verdict on it: those that would be frozen, and
/// the skipped ones too with `-v` or when `--mount` named them.
fn say_plan(job: &mut Job, cx: &Context, plan: &MountPlan, named: bool) {
    let listed = cx.options.verbose || named;
    for e in &plan.entries {
        if e.freeze || listed {
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
    say_stages(plan);
    let skipped = plan.entries.len() - n;
    let hint = if listed || skipped == 0 {
        ""
    } else {
        " (-v lists them)"
    };
    say(format!(
        "{n} filesystem(s) would be frozen, {skipped} mount(s) skipped{hint}"
    ));
    for w in &plan.warnings {
        say(format!("warning: {w}"));
    }
    job.warn_all(plan.warnings.iter().cloned());
    job.status.mounts = Some(plan.entries.clone());
}

/// Pending post-scripts (SPEC §6.6): a run would refuse an untrusted state
/// directory, and would first run what is due.
fn say_pending(job: &mut Job, cx: &Context) -> Option<Problem> {
    match describe(&cx.pending) {
        Ok(pending) => {
            for p in &pending {
                let (record, operation, age, state) = match p {
                    PendingStatus::Record(r) => (
                        &r.record,
                        r.operation_id.as_str(),
                        r.age_seconds.to_string(),
                        &r.state,
                    ),
                    PendingStatus::Unusable { record, state } => (record, "?", "?".into(), state),
                };
                say(format!(
                    "pending post-script {} (operation {operation}, {age} s old): {state}",
                    record.display(),
                ));
            }
            job.status.pending = Some(pending);
            None
        }
        Err(p) => Some(p),
    }
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
        entry.errors.extend(app.pc.typos.iter().map(Into::into));
        if apps.several() {
            // Said again, with its action, among the run's errors below.
            for p in app.pc.problems.iter().chain(&app.pc.typos) {
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
        if let (true, Some((_, engine))) = (s.workload, &pc.workload) {
            say(format!(
                "{indent}{}: quiesce's built-in {} method, run as {} (sha256 {})",
                s.phase.name(),
                engine.name(),
                s.file.path.display(),
                s.sha256
            ));
            continue;
        }
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

/// `check`: every pending post-script, its age and whether it is due.
pub fn describe(opts: &PendingOptions) -> Result<Vec<PendingStatus>, Problem> {
    let boot = pending::boot_id();
    let now = pending::now_unix();
    Ok(opts
        .list()?
        .into_iter()
        .map(|e| match e {
            Entry::Record(r) => {
                let state = match r.due(&boot, now) {
                    Due::Now(why) if r.failures > 0 => format!(
                        "due again ({}): its post-script failed {} time(s) (last: {}); `quiesce recover` retries it",
                        why.name(),
                        r.failures,
                        r.last_error.as_deref().unwrap_or("?")
                    ),
                    Due::Now(why) => format!("due ({}): `quiesce recover` runs it", why.name()),
                    Due::NotYet(why) => format!("pending: {why}"),
                };
                PendingStatus::Record(PendingRecordStatus {
                    record: opts.state_dir.file(&r.name()),
                    age_seconds: r.age(now),
                    state,
                    failures: r.failures,
                    operation_id: r.operation_id,
                    operation: r.operation,
                    app_name: r.application,
                    post_script: r.post_script,
                    last_error: r.last_error,
                })
            }
            Entry::Damaged(d) => PendingStatus::Unusable {
                record: opts.state_dir.file(&d.name),
                state: format!("damaged: {}", d.why),
            },
            Entry::Settled(d) => PendingStatus::Unusable {
                record: opts.state_dir.file(&d.name),
                state: format!("settled: {}", d.why),
            },
        })
        .collect())
}
