//! The capability and sandbox audit of `quiesce audit [--json]` (SPEC.md §8).
//! What the runner holds, the rules in force for scripts (with the comment
//! that justifies each), and what a script really holds: a probe process is
//! started under the sandbox and its `/proc/PID/status` is read back.

use std::time::{Duration, Instant};

use crate::error::{ErrorCode, Fix, Problem};
use crate::job::context::Context;
use crate::job::preflight::Readiness;
use crate::job::run::{Finished, Job};
use crate::job::status::{say, AuditStatus, Decision};
use crate::sandbox::guards::{self, GuardFilter};
use crate::sandbox::inspect::{describe_for, ProcessSandboxState, SandboxDescription};
use crate::sandbox::PreparedSandbox;
use crate::supervise::{self, Exec, RunOptions, SpawnSpec};

/// The audit run: it executes only the probe.
pub fn run(cx: &Context) -> Finished {
    let mut job = Job::observe("audit", cx);
    // What a script would get: the sandbox is described and probed even
    // when this run was given --no-sandbox.
    let mut ready = Readiness::of(cx.options.policy.as_deref(), false, true);
    ready.probe_confinement();
    match &ready.caps {
        Some(c) => say(format!(
            "runner effective capabilities: {}",
            c.effective.join(" ")
        )),
        None => say("runner capabilities: unreadable"),
    }
    let Some(policy) = ready.policy else {
        let first = ready.problems.first().cloned();
        return job.fail(&first.unwrap_or_else(|| {
            Problem::new(ErrorCode::IncorrectPluginhostFile, "no sandbox policy")
                .with_fix(Fix::Report)
        }));
    };
    let mut problems = ready.problems;
    let caps = ready.caps;
    let description = describe_for(&policy, caps);
    say_description(&description);
    for g in &description.baseline_gaps {
        job.warn(format!("policy gap against SPEC §8: {g}"));
        say(format!("warning: policy gap against SPEC §8: {g}"));
    }
    let probe = match &ready.sandbox {
        Some(sandbox) => probe(sandbox),
        // Its compile error is already among the problems.
        None => Err("the sandbox policy does not compile".into()),
    };
    let observed = match probe {
        Ok(state) => {
            say(format!(
                "a script holds: CapEff {}; CapBnd {}; NoNewPrivs {:?}; Seccomp {:?}",
                state.cap_eff.join(" "),
                state.cap_bnd.join(" "),
                state.no_new_privs,
                state.seccomp
            ));
            Some(state)
        }
        Err(e) => {
            problems.push(
                Problem::new(
                    ErrorCode::IncorrectPluginhostFile,
                    format!("the sandbox could not be applied to a probe process: {e}"),
                )
                .with_fix(Fix::Policy(policy.origin.clone())),
            );
            None
        }
    };
    let guards = ready
        .sandbox
        .as_ref()
        .map(|s| guards::describe(&s.confinement));
    if let Some(g) = &guards {
        say_guards(g);
    }
    job.status.audit = Some(AuditStatus {
        sandbox: description,
        guards,
        observed_script: observed,
    });
    for p in &problems {
        job.problem(p);
    }
    job.conclude(Decision::ByErrors)
}

/// The rules a script runs under, one line each, with the comment that
/// justifies it.
fn say_description(description: &SandboxDescription) {
    say(format!(
        "policy {} (sha256 {})",
        description.policy, description.policy_sha256
    ));
    for c in &description.capabilities_dropped {
        say(format!("  drop {:<18} {}", c.name, c.comment));
    }
    say(format!(
        "  no_new_privs {}; seccomp filter '{}' for {}: {} rule(s), default {:?}, matched rules {:?}",
        description.no_new_privs.value,
        description.seccomp.filter,
        description.seccomp.arch,
        description.seccomp.rules.len(),
        description.seccomp.default_action,
        description.seccomp.filter_action
    ));
    for r in &description.seccomp.rules {
        let args = if r.args.is_empty() {
            String::new()
        } else {
            format!(
                " [{}]",
                r.args
                    .iter()
                    .map(|a| format!("arg{} {:?} {}", a.index, a.op, a.value_hex))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        say(format!("  deny {}{args}: {}", r.syscall, r.comment));
    }
    for l in &description.rlimits {
        let show = |v: &crate::sandbox::Limit| serde_json::to_string(v).unwrap_or_default();
        say(format!(
            "  rlimit {} {}/{}: {}",
            l.resource,
            show(&l.soft),
            show(&l.hard),
            l.comment
        ));
    }
}

/// The guards of SPEC §8, one line a rule with its reason.
fn say_guards(g: &guards::GuardsDescription) {
    say(format!(
        "guards out of the scripts' reach ({} BPF instructions for what runs now: {})",
        g.instructions,
        g.protected_now.join(", ")
    ));
    for r in &g.rules {
        say(format!(
            "  refuse {} ({}) with {}: {}",
            r.syscall, r.refuses, r.answer, r.comment
        ));
    }
    say(format!(
        "  in every script's own mount namespace: read-only {}; masked {}",
        g.read_only_in_scripts.join(", "),
        g.masked_in_scripts.join(", ")
    ));
}

/// Starts `/bin/sleep` under the sandbox, exactly as a script would be, and
/// reads what it holds right after its exec.
fn probe(sandbox: &PreparedSandbox) -> Result<ProcessSandboxState, String> {
    let sleep = c"/bin/sleep".to_owned();
    let mut spec = SpawnSpec::new(Exec::Path(sleep.clone()), vec![sleep, c"5".to_owned()]);
    spec.env = vec![c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    let shared = std::sync::Arc::new(sandbox.clone());
    let guards = GuardFilter::now().map_err(|e| e.to_string())?;
    spec.pre_exec = Some(Box::new(move || {
        shared.apply_in_child(Some(&guards)).map_err(Into::into)
    }));
    let mut state = None;
    let mut on_spawn = |pid: i32| {
        state = Some(ProcessSandboxState::read(pid).map_err(|e| e.to_string()));
    };
    // The deadline ends the probe at once after the read: it only needs to
    // have exec'd.
    let opts = RunOptions {
        on_spawn: Some(&mut on_spawn),
        grace: Duration::from_millis(100),
        ..RunOptions::new(Instant::now())
    };
    supervise::run(&spec, opts).map_err(|e| e.to_string())?;
    state.unwrap_or_else(|| Err("the probe did not start".into()))
}
