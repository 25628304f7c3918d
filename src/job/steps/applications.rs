//! The applications of a run, as the runs meet them: loaded and pre-checked
//! once (each check in the trail, each warning said, an entry per
//! application in the status), their problems reported, and the trail
//! naming the application whose script runs.

use crate::error::Problem;
use crate::job::apps::{self, App, Apps};
use crate::job::context::Context;
use crate::job::preflight;
use crate::job::run::Job;
use crate::job::status::{self, ApplicationStatus};
use crate::trail;

/// The pre-check of every application: each check recorded in the trail
/// (naming its application), each warning said and kept, and one entry per
/// application in the status. A source that fails closed is the error.
pub fn load(job: &mut Job, cx: &Context) -> Result<Apps, Problem> {
    let apps = apps::precheck(&cx.apps)?;
    job.status.application_source = Some(apps.source.clone());
    for app in &apps.list {
        trail::set_application(app.name.clone());
        preflight::record(job.status.operation, &app.pc);
        let warnings: Vec<String> = app
            .pc
            .warnings
            .iter()
            .map(|w| {
                if apps.several() {
                    format!("{}: {w}", app.name)
                } else {
                    w.clone()
                }
            })
            .collect();
        for w in &warnings {
            status::say(format!("warning: {w}"));
        }
        job.warn_all(warnings);
        job.status.applications.push(application_status(app));
    }
    leave(&apps);
    for w in &apps.warnings {
        status::say(format!("warning: {w}"));
    }
    job.warn_all(apps.warnings.iter().cloned());
    Ok(apps)
}

/// The status entry of an application, before any of its scripts ran.
fn application_status(app: &App) -> ApplicationStatus {
    let c = app.pc.config.as_ref();
    ApplicationStatus {
        name: app.name.clone(),
        config: app.config_path.display().to_string(),
        config_sha256: app.pc.config_sha256.clone(),
        continue_backup_on_failure: app.continue_on_failure(),
        fs_freeze_enabled: app.fs_freeze_enabled(),
        timeout_in_seconds: c.map(|c| c.timeout_secs),
        errors: app.pc.problems.iter().map(Into::into).collect(),
        ..ApplicationStatus::default()
    }
}

/// From here the trail names `app` on every record (with one application,
/// it names it throughout the run).
pub fn enter(apps: &Apps, app: &App) {
    trail::set_application(app.name.clone());
    if apps.several() {
        status::say(format!(
            "application {} of {}: {} ({})",
            app.index + 1,
            apps.list.len(),
            app.name,
            app.config_path.display()
        ));
    }
}

/// The records that follow belong to the run, not to one of several
/// applications.
pub fn leave(apps: &Apps) {
    if apps.several() {
        trail::set_application("");
    }
}

/// Every application's pre-check problems in the status, in application
/// order (a problem they share, the plugin-host file's, once).
pub fn report_problems(job: &mut Job, apps: &Apps) {
    for app in &apps.list {
        for p in &app.pc.problems {
            if !job.status.has_error(p) {
                job.problem(p);
            }
        }
    }
}
