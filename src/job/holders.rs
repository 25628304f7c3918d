//! The pre-script's "holders" (SPEC.md §7): processes a pre-script leaves
//! running on purpose (a session holding a database lock across the freeze)
//! live until the post-script has finished, then are terminated and
//! recorded — also across separate `pre` and `post` invocations, through a
//! record in the run directory. A run ends only its own holders and those of
//! runs that are over: a bridge-mode `pre` during a cron `snapshot` must not
//! end that snapshot's lock holder mid-window.

use log::Level;
use serde::{Deserialize, Serialize};

use super::script::RunContext;
use crate::job::phase::Phase;
use crate::supervise::{self, Leftover};
use crate::trail::{self, Record};

/// File under the run directory recording pre-script leftovers.
pub const HOLDERS_FILE: &str = "holders.json";

/// The leftover with its command line read again now, if it is still the
/// same process (pid and start time): the first look may have caught it
/// between fork and exec, still showing the script's own command line.
fn refreshed(l: &Leftover) -> Leftover {
    let mut l = l.clone();
    if supervise::procfs::read_stat(l.pid).is_some_and(|s| s.start == l.start_time_ticks) {
        let now = supervise::procfs::cmdline(l.pid);
        if !now.is_empty() {
            l.cmdline = now;
        }
    }
    l
}

/// A pre-script leftover recorded between `pre` and `post` invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub operation_id: String,
    pub leftover: Leftover,
    /// The runner that recorded it (pid and `/proc/PID/stat` start time):
    /// its holders are ended by its own post phase, or by anyone once that
    /// runner is gone — never by another run while it is still alive (a
    /// bridge-mode `post` during a cron `snapshot` must not end that
    /// snapshot's lock holder mid-window). 0 in records of older versions,
    /// whose runner is taken as gone.
    #[serde(default)]
    pub runner_pid: i32,
    #[serde(default)]
    pub runner_start: u64,
    /// The config of the application whose pre-script left it (SPEC §3.1):
    /// it is ended after that application's own post-script, not another's.
    /// Absent in records of older versions (any post phase may end it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_config: Option<std::path::PathBuf>,
}

/// Lock file serialising read-modify-write of [`HOLDERS_FILE`].
const HOLDERS_LOCK: &str = "holders.lock";

/// This runner's pid and start time, as recorded with its holders.
fn this_runner() -> (i32, u64) {
    let pid = std::process::id() as i32;
    let start = supervise::procfs::read_stat(pid).map_or(0, |s| s.start);
    (pid, start)
}

impl Holder {
    fn recorded_by(&self, me: (i32, u64)) -> bool {
        (self.runner_pid, self.runner_start) == me
    }

    /// The run that recorded it is over.
    fn orphaned(&self) -> bool {
        !supervise::procfs::read_stat(self.runner_pid)
            .is_some_and(|s| s.start == self.runner_start && !s.is_zombie())
    }

    /// It belongs to the application of `ctx` (or no application is named
    /// on either side).
    fn of_app(&self, ctx: &RunContext<'_>) -> bool {
        match (&self.app_config, &ctx.app) {
            (Some(mine), Some(app)) => *mine == app.config,
            _ => true,
        }
    }
}

/// Which holders a call ends.
#[derive(Clone, Copy)]
enum Ending {
    /// Before a pre-script: those of runs that are over, whatever their
    /// application (never this run's own: another application's may be
    /// holding its lock until its post-script).
    Stale,
    /// After a post-script: this run's and those of runs that are over, of
    /// the application of the post-script.
    AfterPost,
}

impl Holder {
    /// `awaited`: operations whose post-script is still awaited (a separate
    /// `pre` whose `post` has not come and is not due): their holders belong
    /// to them until that record is settled or due, whatever run ends
    /// (SPEC §7) — a cron `snapshot` must not end the lock session of a
    /// bridge-mode `pre` while the extension takes its snapshot.
    fn ended_by(
        &self,
        ctx: &RunContext<'_>,
        me: (i32, u64),
        ending: Ending,
        awaited: &[String],
    ) -> bool {
        if !self.recorded_by(me) && awaited.contains(&self.operation_id) {
            return false;
        }
        match ending {
            Ending::Stale => !self.recorded_by(me) && self.orphaned(),
            Ending::AfterPost => (self.recorded_by(me) || self.orphaned()) && self.of_app(ctx),
        }
    }
}

/// Whether any holder is recorded at all (most runs have none: then the
/// pending records need not be read to tell whose they are).
pub fn any_recorded(ctx: &RunContext<'_>) -> bool {
    ctx.run_dir.has(HOLDERS_FILE)
}

/// Records the pre-script's leftovers under the run directory, so the next
/// post phase (in this run or a later `quiesce post`) terminates them. The
/// record is locked across its read-modify-write: concurrent `pre` runs
/// each keep theirs.
pub fn record(ctx: &RunContext<'_>, leftovers: &[Leftover]) -> Vec<String> {
    let mut warnings = Vec::new();
    if leftovers.is_empty() {
        return warnings;
    }
    let mut cgroups: Vec<String> = leftovers.iter().flat_map(|l| l.cgroups.clone()).collect();
    cgroups.sort();
    cgroups.dedup();
    if let Some(how) = supervise::forking(&cgroups, leftovers.len()) {
        let w = format!(
            "the pre-script left descendants that keep forking ({how}); everything in its cgroup is ended after its post-script"
        );
        trail::human(format!("warning: {w}"));
        warnings.push(w);
    }
    let fresh: Vec<Leftover> = leftovers.iter().map(refreshed).collect();
    let (runner_pid, runner_start) = this_runner();
    let recorded = (|| {
        let _lock = ctx.run_dir.lock(HOLDERS_LOCK)?;
        let mut all: Vec<Holder> = match ctx.run_dir.read_json(HOLDERS_FILE) {
            Ok(v) => v.unwrap_or_default(),
            Err(e) if !e.is_untrusted() => {
                warnings.push(format!("{e}; starting a new holder record"));
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        all.extend(fresh.iter().map(|l| Holder {
            operation_id: ctx.operation_id.clone(),
            leftover: l.clone(),
            runner_pid,
            runner_start,
            app_config: ctx.app.as_ref().map(|a| a.config.clone()),
        }));
        ctx.run_dir.write_json(HOLDERS_FILE, &all)
    })();
    if let Err(e) = recorded {
        warnings.push(format!(
            "cannot record pre-script holders ({e}); they will not be terminated by the next post phase"
        ));
    }
    for l in &fresh {
        trail::event(
            Level::Info,
            Record::HolderRecorded,
            Phase::Pre.name(),
            &[("pid", l.pid.to_string()), ("cmdline", l.cmdline.clone())],
            "pre-script leftover kept running until the post phase",
        );
    }
    warnings
}

/// Before a new cycle's pre-script: holders an earlier cycle recorded and no
/// post phase released (its post never ran, e.g. the runner was killed) are
/// terminated now, so a lock they hold does not outlive the backup that took
/// it. Holders of a run still in progress are left alone. Returns the
/// warnings to report.
pub fn end_stale(ctx: &RunContext<'_>, awaited: &[String]) -> Vec<String> {
    let (ops, killed, mut warnings) = end_holders(ctx, Ending::Stale, awaited);
    if ops.is_empty() {
        return warnings;
    }
    let w = format!(
        "pre-script leftovers of earlier operation(s) {} were never released by a post phase; terminated before this pre-script: {killed:?}",
        ops.join(", ")
    );
    trail::human(format!("warning: {w}"));
    warnings.push(w);
    warnings
}

/// Terminates the recorded pre-script holders this run may end (its own,
/// and those of runs that are over) that are still the same process (pid
/// and start time), once the post phase is over. Holders of another run
/// still in progress stay recorded for that run. Returns the pids
/// terminated.
pub fn terminate(ctx: &RunContext<'_>, awaited: &[String]) -> (Vec<i32>, Vec<String>) {
    let (_, killed, warnings) = end_holders(ctx, Ending::AfterPost, awaited);
    (killed, warnings)
}

/// Takes the holders this run may end out of the record (under its lock)
/// and terminates them. Returns their operation ids, the pids terminated
/// and the warnings.
fn end_holders(
    ctx: &RunContext<'_>,
    ending: Ending,
    awaited: &[String],
) -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut warnings = Vec::new();
    let me = this_runner();
    let taken = (|| {
        let _lock = ctx.run_dir.lock(HOLDERS_LOCK)?;
        let all: Vec<Holder> = ctx.run_dir.read_json(HOLDERS_FILE)?.unwrap_or_default();
        let (mine, others): (Vec<Holder>, Vec<Holder>) = all
            .into_iter()
            .partition(|h| h.ended_by(ctx, me, ending, awaited));
        if mine.is_empty() {
            // Nothing of ours: the record stays exactly as the others left it.
        } else if others.is_empty() {
            ctx.run_dir.remove(HOLDERS_FILE);
        } else {
            ctx.run_dir.write_json(HOLDERS_FILE, &others)?;
        }
        Ok::<_, crate::freeze::state::StateError>(mine)
    })();
    let holders = match taken {
        Ok(h) => h,
        Err(e) => {
            warnings.push(e.to_string());
            Vec::new()
        }
    };
    if holders.is_empty() {
        return (Vec::new(), Vec::new(), warnings);
    }
    let ops: std::collections::BTreeSet<String> =
        holders.iter().map(|h| h.operation_id.clone()).collect();
    let ops: Vec<String> = ops
        .into_iter()
        .filter(|op| *op != ctx.operation_id)
        .collect();
    let leftovers: Vec<Leftover> = holders.iter().map(|h| refreshed(&h.leftover)).collect();
    let mut report = supervise::terminate_leftovers(&leftovers, ctx.grace);
    // What escaped the recorded processes — a session a holder started after
    // the pre-script's scan and then left, a fork bomb's children — is still
    // in the pre-script's cgroups: ended with them (SPEC §7).
    let escaped = supervise::end_cgroup_members(&leftovers);
    if !escaped.is_empty() {
        let w = format!(
            "the pre-script's cgroup still held processes its recorded holders did not account for (started later, or forked away): ended {escaped:?}"
        );
        trail::human(format!("warning: {w}"));
        warnings.push(w);
    }
    report.killed.extend(escaped);
    for pid in &report.killed {
        let cmdline = leftovers
            .iter()
            .find(|l| l.pid == *pid)
            .map(|l| l.cmdline.clone())
            .unwrap_or_default();
        trail::event(
            Level::Info,
            Record::HolderTerminated,
            Phase::Post.name(),
            &[("pid", pid.to_string()), ("cmdline", cmdline)],
            "pre-script leftover terminated after the post phase",
        );
        trail::human(format!("terminated pre-script leftover pid {pid}"));
    }
    if !report.survivors.is_empty() {
        warnings.push(format!(
            "pre-script leftovers still alive after SIGKILL: {:?}",
            report.survivors
        ));
    }
    (ops, report.killed, warnings)
}
