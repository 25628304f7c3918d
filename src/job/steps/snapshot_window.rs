//! The freeze window as `quiesce freeze -- CMD` and `quiesce snapshot --
//! CMD` take it: the mount plan and the lock before anything runs
//! ([`prepare`]), the window's standby before the first script, the targets
//! opened, and what the window did filed in the job ([`file_window`]). The
//! command inside the window is [`super::snapshot_command`]; the order of
//! its steps, [`super::window_order`].

use std::path::PathBuf;
use std::time::Duration;

use super::snapshot_command::SnapshotRun;
use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::lock::RunLock;
use crate::freeze::mounts::{self, MountPlan, SysBlockInfo};
use crate::freeze::window::{MountTarget, WindowStandby};
use crate::job::context::Context;
use crate::job::decide::Settings;
use crate::job::run::Job;
use crate::job::runner::Runner;
use crate::job::status::{self as report, FreezePhase};
use crate::sandbox::guards;
use crate::supervise::{self};
use crate::trail::{self, Record};
use log::Level;

/// Opens every mount of the plan, in freeze order, before the window, each
/// checked to still be the planned mount (123 otherwise).
pub fn open_targets(plan: &MountPlan) -> Result<Vec<MountTarget>, Problem> {
    let order = plan.freeze_order();
    if order.is_empty() {
        return Err(Problem::new(
            ErrorCode::FsFreezeFailed,
            "no filesystem to freeze was found",
        )
        .with_fix(Fix::NameMounts));
    }
    order
        .into_iter()
        .map(|e| MountTarget::open_planned(e).map_err(Problem::from))
        .collect()
}

/// Starts what the window of `plan` needs before the run's first script:
/// the watchdog (under its filter) and the freeze threads (SPEC §8: every
/// script's guard filter names them). The watchdog is protected from the
/// scripts from here on.
pub fn standby(
    runner: &Runner,
    plan: &MountPlan,
    warnings: &mut Vec<String>,
) -> Result<WindowStandby, Problem> {
    let mut widths = std::collections::BTreeMap::new();
    for e in plan.freeze_order() {
        *widths.entry(e.stage.unwrap_or(1)).or_insert(0usize) += 1;
    }
    let threads = widths.values().copied().max().unwrap_or(0);
    let filter_fn;
    let filter: Option<crate::freeze::watchdog::ChildFilter<'_>> = match &runner.watchdog_filter {
        Some(f) => {
            filter_fn = move || f.apply().map_or_else(|e| e.errno as i32, |_| 0);
            Some(&filter_fn)
        }
        None => None,
    };
    let standby = WindowStandby::start(Some(&runner.run_dir), threads, true, filter)?;
    if let Some(pid) = standby.watchdog_pid() {
        guards::protect(pid, "watchdog");
        // Out of the runner's cgroup: a freeze of the runner's unit must
        // not freeze the watchdog with it.
        if let Err(e) = supervise::move_to_root_cgroup(pid) {
            let w = format!("the watchdog stays in the runner's cgroup ({e}): a freeze of that cgroup (systemctl freeze) would stop it too");
            report::say(format!("warning: {w}"));
            trail::event(Level::Warn, Record::Log, "freeze", &[], &w);
            warnings.push(w);
        }
    }
    Ok(standby)
}

/// The mount plan: the `--mount` list when given (it replaces discovery),
/// else discovery from `/proc/self/mountinfo` minus `MountsToSkip`.
pub fn mount_plan(cx: &Context, requested: &[PathBuf]) -> Result<MountPlan, Problem> {
    if requested.is_empty() {
        return Ok(mounts::discover_system(&cx.options.vmbackup_conf)?);
    }
    let infos = mounts::load_mounts()?;
    Ok(mounts::plan_explicit(
        &infos,
        requested,
        &SysBlockInfo::default(),
    )?)
}

/// What the operator asked of the window.
#[derive(Debug, Clone)]
pub struct WindowRequest {
    /// `--mount`: replaces discovery when not empty.
    pub mounts: Vec<PathBuf>,
    /// `--max-freeze`.
    pub max_freeze: Duration,
    /// The snapshot command.
    pub cmd: Vec<String>,
}

/// The mount plan (when the freeze is on) and the freeze lock, before
/// anything runs; what a dead runner left frozen is recovered here.
pub fn prepare(
    job: &mut Job,
    cx: &Context,
    settings: Settings,
    plan: Result<MountPlan, Problem>,
) -> Result<(Option<MountPlan>, RunLock), Problem> {
    let plan = if settings.fs_freeze_enabled {
        let plan = plan?;
        job.say_warnings(plan.warnings.iter().cloned());
        Some(plan)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let lock = super::lock::lock_and_recover(cx, &mut warnings);
    job.warn_all(warnings);
    Ok((plan, lock?))
}

/// What the window achieved.
#[derive(Default)]
pub struct Shot {
    pub froze: bool,
    pub snapshot_ok: bool,
}

/// Files what the window did in the job: warnings, errors, phases.
pub fn file_window(job: &mut Job, run: SnapshotRun) -> Shot {
    // Gathered in the window, where nothing is said: said now.
    job.say_warnings(run.warnings.iter().cloned());
    for p in &run.problems {
        job.problem(p);
    }
    if let Some(w) = run.window {
        job.status.phases.freeze = Some(FreezePhase::Window(w));
    }
    if let Some(s) = run.snapshot {
        job.status.phases.snapshot = Some(s);
    }
    if let Some(sig) = run.interrupted {
        job.interrupted(sig);
    }
    Shot {
        froze: run.froze,
        snapshot_ok: run.snapshot_ok,
    }
}
