//! The coverage check of workload applications (SPEC.md §3.2), in `check`
//! and in every run before its pre phase: the server is asked where its
//! files are, and each must be on a filesystem of the freeze plan. A
//! server that cannot be reached, or a database not wholly frozen, is
//! that application's pre-check failure: none of its phases runs, and the
//! run is never reported `application`-consistent.

use crate::error::{ErrorCode, Problem};
use crate::freeze::mounts::MountPlan;
use crate::job::apps::{App, Apps};
use crate::job::context::Context;
use crate::job::run::Job;
use crate::job::status::{say, WorkloadStatus};
use std::ffi::CString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sandbox::guards::GuardFilter;
use crate::sandbox::PreparedSandbox;
use crate::supervise::{self, CgroupRequest, Exec, RunOptions, SpawnSpec};
use crate::workload::helper::Source;
use crate::workload::method::Server;
use crate::workload::{coverage, HELPER_ARG};

/// Checks every workload application that passed its pre-check against
/// `plan` (`None`: the run freezes nothing, so only the server is
/// reached). What fails is added to the application's pre-check problems
/// and its status entry; returns those problems.
pub fn cover(
    job: &mut Job,
    cx: &Context,
    apps: &mut Apps,
    plan: Option<&MountPlan>,
    sandbox: Option<&Arc<PreparedSandbox>>,
) -> Vec<Problem> {
    let several = apps.several();
    let mut found = Vec::new();
    for app in apps.list.iter_mut() {
        if app.pc.workload.is_none() || !app.pc.passed() {
            continue;
        }
        let (st, problem) = check_one(cx, app, plan, sandbox);
        say_workload(app, &st, several);
        let entry = &mut job.status.applications[app.index];
        entry.workload = Some(st);
        if let Some(p) = problem {
            entry.errors.push((&p).into());
            app.pc.problems.push(p.clone());
            found.push(p);
        }
    }
    found
}

/// One application: its server reached, its method, its coverage.
fn check_one(
    cx: &Context,
    app: &App,
    plan: Option<&MountPlan>,
    sandbox: Option<&Arc<PreparedSandbox>>,
) -> (WorkloadStatus, Option<Problem>) {
    let (source, engine) = app.pc.workload.clone().expect("a workload application");
    let mut st = WorkloadStatus {
        engine: engine.name().to_string(),
        ..WorkloadStatus::default()
    };
    let server = match probe(cx, app, &source, sandbox) {
        Ok(s) => s,
        Err((code, msg)) => {
            let p = Problem::new(code, format!("{}: {msg}; nothing was run", app.name));
            return (st, Some(p));
        }
    };
    st.reached = true;
    st.version = Some(server.version.clone());
    st.method = Some(server.method.name().to_string());
    st.reason = Some(server.why.clone());
    let Some(plan) = plan else {
        return (st, None);
    };
    st.coverage = coverage::check(&server.paths, plan);
    let missing = coverage::uncovered(&st.coverage);
    st.covered = Some(missing.is_none());
    let problem = missing.map(|m| {
        Problem::new(
            ErrorCode::WorkloadNotCovered,
            format!(
                "{}: {} {}: {m}; its method is not run, and the snapshot cannot be application-consistent for it",
                app.name, engine.name(), server.version
            ),
        )
    });
    (st, problem)
}

/// `quiesce __workload probe`, run like a script (SPEC §7, §8): its own
/// session and cgroup, the script sandbox (`None`: `--no-sandbox`), a
/// deadline with the whole tree killed at it. The client it starts asks the
/// server what it is; nothing is taken.
fn probe(
    cx: &Context,
    app: &App,
    source: &Source,
    sandbox: Option<&Arc<PreparedSandbox>>,
) -> Result<Server, (ErrorCode, String)> {
    let failed = |e: String| (ErrorCode::WorkloadPreFailed, e);
    let exe = app
        .pc
        .pre
        .as_ref()
        .map(|s| s.file.path.clone())
        .ok_or_else(|| failed("no checked quiesce binary to run the probe".into()))?;
    let cstr = |s: String| CString::new(s).map_err(|_| failed("a NUL byte in a path".into()));
    let mut argv = vec![
        cstr(exe.display().to_string())?,
        cstr(HELPER_ARG.into())?,
        cstr("probe".into())?,
    ];
    for a in source.args() {
        argv.push(cstr(a)?);
    }
    argv.push(cstr("--run-dir".into())?);
    argv.push(cstr(cx.run_dir.path.display().to_string())?);
    let mut spec = SpawnSpec::new(Exec::Path(argv[0].clone()), argv);
    spec.env = vec![
        cstr(format!("PATH={}", crate::sandbox::env::SCRIPT_PATH))?,
        cstr("LANG=C".into())?,
    ];
    spec.cgroup = Some(CgroupRequest::new(
        format!("probe-{}-{}", std::process::id(), app.index),
        Some(64),
    ));
    if let Some(sb) = sandbox {
        let sb = Arc::clone(sb);
        let guards = GuardFilter::now().map_err(|e| failed(e.to_string()))?;
        // INVARIANT: apply_in_child is allocation-free (see sandbox/mod.rs).
        spec.pre_exec = Some(Box::new(move || {
            sb.apply_in_child(Some(&guards)).map_err(Into::into)
        }));
    }
    let secs = app
        .pc
        .config
        .as_ref()
        .map_or(30, |c| c.timeout_secs.min(30));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let report = supervise::run(&spec, RunOptions::new(deadline))
        .map_err(|e| failed(format!("the probe could not be started: {e}")))?;
    let said = |c: &supervise::Captured| {
        let mut bytes = c.head.clone();
        bytes.extend_from_slice(&c.tail);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if report.timed_out {
        return Err((
            ErrorCode::WorkloadConnectionError,
            format!("the server did not answer within {secs} s"),
        ));
    }
    let stderr = said(&report.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("quiesce workload: ")
        .to_string();
    match report.exit_code {
        Some(0) => Server::from_lines(&said(&report.stdout))
            .ok_or_else(|| failed("the probe's report could not be read".into())),
        Some(c) => Err((
            crate::workload::error_code(c).unwrap_or(ErrorCode::WorkloadPreFailed),
            last,
        )),
        None => Err(failed(format!(
            "the probe was killed by signal {}",
            report.signal.unwrap_or(0)
        ))),
    }
}

/// The human lines: server, method and why, each location.
fn say_workload(app: &App, st: &WorkloadStatus, several: bool) {
    let indent = if several { "  " } else { "" };
    if !st.reached {
        return;
    }
    say(format!(
        "{indent}workload {}: server reached, {}; method {} ({})",
        st.engine,
        st.version.as_deref().unwrap_or("?"),
        st.method.as_deref().unwrap_or("?"),
        st.reason.as_deref().unwrap_or("")
    ));
    for l in &st.coverage {
        match &l.frozen_by {
            Some(m) => say(format!(
                "{indent}  {} {}: frozen with {}",
                l.what,
                l.path.display(),
                m.display()
            )),
            None => say(format!(
                "{indent}  {} {}: NOT frozen ({})",
                l.what,
                l.path.display(),
                l.reason.as_deref().unwrap_or("")
            )),
        }
    }
    let _ = app;
}
