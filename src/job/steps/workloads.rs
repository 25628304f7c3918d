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
use crate::workload::{coverage, helper};

/// Checks every workload application that passed its pre-check against
/// `plan` (`None`: the run freezes nothing, so only the server is
/// reached). What fails is added to the application's pre-check problems
/// and its status entry; returns those problems.
pub fn cover(
    job: &mut Job,
    cx: &Context,
    apps: &mut Apps,
    plan: Option<&MountPlan>,
) -> Vec<Problem> {
    let several = apps.several();
    let mut found = Vec::new();
    for app in apps.list.iter_mut() {
        if app.pc.workload.is_none() || !app.pc.passed() {
            continue;
        }
        let (st, problem) = check_one(cx, app, plan);
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
) -> (WorkloadStatus, Option<Problem>) {
    let (source, engine) = app.pc.workload.clone().expect("a workload application");
    let mut st = WorkloadStatus {
        engine: engine.name().to_string(),
        ..WorkloadStatus::default()
    };
    let server = match helper::probe(&source, &cx.run_dir.path) {
        Ok(s) => s,
        Err((f, msg)) => {
            let code = crate::workload::error_code(f.exit() as i32)
                .unwrap_or(ErrorCode::WorkloadPreFailed);
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
