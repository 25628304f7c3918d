//! What a run leaves behind for monitoring (SPEC.md §9 "Metrics and last
//! result"): the status document as `<state-dir>/last-<operation>.json`, and
//! the node-exporter textfile `quiesce.prom` with the last run of every
//! operation, replaced atomically.
//!
//! Both are written by [`record_run`], once per run, after the trail is
//! finished, which is after the last thaw: never inside the freeze window,
//! where the state directory may be on a frozen disk. A directory that fails
//! the run directory's trust check (`RunDir::check`: a symbolic link, not
//! owned by root, group- or world-writable, or a parent that is) gets
//! nothing, and a failed write is a warning of the run, never its failure.

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::status::{say, Consistency, FreezePhase, Outcome, ScriptPhaseStatus, Status};
use crate::freeze::state::RunDir;
use crate::replace::{replace_file, Fsync};
use crate::trail::{self, rfc3339_micros, DeliveryReport};

/// `--state-dir`'s default: pending post-scripts and last results.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/quiesce";
/// The textfile directory of Debian's and RHEL's prometheus-node-exporter,
/// used when `--metrics-dir` is not given and it exists.
pub const DEFAULT_METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";
/// The textfile's name in the metrics directory.
pub const METRICS_FILE: &str = "quiesce.prom";

/// Every operation that can leave a last result, for the textfile.
const OPERATIONS: [&str; 8] = [
    "check", "pre", "post", "freeze", "snapshot", "thaw", "recover", "audit",
];
/// A last-result file larger than this is not read back (it is ours, and
/// ours are a few KiB; this only bounds memory).
const MAX_LAST_BYTES: u64 = 4 * 1024 * 1024;

/// Where the results of a run go (`--state-dir`, `--metrics-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// `None`: no last-result file (library use, unit tests).
    pub state_dir: Option<PathBuf>,
    pub metrics_dir: MetricsDir,
}

/// Whether and where `quiesce.prom` is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetricsDir {
    /// Nowhere.
    #[default]
    Off,
    /// [`DEFAULT_METRICS_DIR`] when it exists, else nowhere.
    Default,
    /// `--metrics-dir DIR`: there, or a warning.
    Given(PathBuf),
}

/// The document kept as `last-<operation>.json`: the status document, when
/// the run finished and what its audit trail delivered.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LastRun<'a> {
    #[serde(flatten)]
    status: &'a Status,
    finished_at: String,
    finished_at_unix_seconds: f64,
    trail_delivery: TrailDelivery,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct TrailDelivery {
    sent: u64,
    dropped: u64,
}

/// What the textfile needs of a last result: this run's, from its status,
/// and the other operations', read back from their `last-<operation>.json`
/// (an older file may lack any of it: what is missing is left out).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct LastResult {
    operation: Option<String>,
    result: Option<Outcome>,
    consistency: Option<Consistency>,
    errors: Vec<ErrorSeen>,
    phases: PhaseTimes,
    /// Each application's script phases (several applications).
    applications: Vec<ScriptTimes>,
    finished_at_unix_seconds: f64,
    trail_delivery: TrailDelivery,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct ErrorSeen {
    name: String,
    code: Option<u64>,
}

/// `phases`: how long each took.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct PhaseTimes {
    pre: Option<Attempts>,
    freeze: Option<WindowTime>,
    snapshot: Option<Timed>,
    post: Option<Attempts>,
}

/// The script phases of one application.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct ScriptTimes {
    pre: Option<Attempts>,
    post: Option<Attempts>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct Attempts {
    attempts: Option<Vec<Timed>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Timed {
    duration_ms: Option<f64>,
}

/// `phases.freeze`: a window has its length; a `thaw` has none.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WindowTime {
    window_ms: Option<f64>,
}

impl LastResult {
    /// This run's, from its status.
    fn of(last: &LastRun<'_>) -> LastResult {
        let s = last.status;
        let attempts = |p: &Option<ScriptPhaseStatus>| {
            p.as_ref().map(|p| Attempts {
                attempts: Some(
                    p.attempts
                        .iter()
                        .map(|a| Timed {
                            duration_ms: Some(a.duration_ms),
                        })
                        .collect(),
                ),
            })
        };
        let window_ms = match &s.phases.freeze {
            Some(FreezePhase::Window(w)) => Some(w.window_ms),
            Some(FreezePhase::Thawed { .. }) | None => None,
        };
        LastResult {
            operation: Some(s.operation.to_string()),
            result: Some(s.result()),
            consistency: s.consistency(),
            errors: s
                .errors
                .iter()
                .map(|e| ErrorSeen {
                    name: e.name.to_string(),
                    code: e.code.map(u64::from),
                })
                .collect(),
            phases: PhaseTimes {
                pre: attempts(&s.phases.pre),
                freeze: s.phases.freeze.as_ref().map(|_| WindowTime { window_ms }),
                snapshot: s.phases.snapshot.as_ref().map(|c| Timed {
                    duration_ms: Some(c.duration_ms),
                }),
                post: attempts(&s.phases.post),
            },
            applications: s
                .applications
                .iter()
                .map(|a| ScriptTimes {
                    pre: attempts(&a.pre),
                    post: attempts(&a.post),
                })
                .collect(),
            finished_at_unix_seconds: last.finished_at_unix_seconds,
            trail_delivery: last.trail_delivery,
        }
    }
}

/// Keeps the finished run's status as the last result of its operation and
/// rewrites the metrics textfile. Call once per run, after `trail::finish`
/// (so after the last thaw). Problems are added to `status.warnings` and
/// said on stderr; they never change the run's result.
pub fn record_run(outputs: &Outputs, status: &mut Status, delivery: &DeliveryReport) {
    let warnings = write_outputs(outputs, status, delivery, SystemTime::now());
    for w in warnings {
        say(format!("warning: {w}"));
        status.warnings.push(w);
    }
}

/// Writes both files; returns the warnings.
fn write_outputs(
    outputs: &Outputs,
    status: &Status,
    delivery: &DeliveryReport,
    now: SystemTime,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if trail::is_held() {
        // INVARIANT: nothing touches a disk inside the freeze window.
        warnings.push("last result and metrics not written: the audit trail is still held (inside the freeze window)".into());
        return warnings;
    }
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let last = LastRun {
        status,
        finished_at: rfc3339_micros(now),
        finished_at_unix_seconds: secs,
        trail_delivery: TrailDelivery {
            sent: delivery.sent,
            dropped: delivery.dropped,
        },
    };
    let mut runs: Vec<LastResult> = Vec::new();
    // `recover` never creates the state directory (its filesystem may not
    // be mounted yet: one made underneath would hide the records).
    let state_dir = outputs
        .state_dir
        .as_ref()
        .filter(|d| status.operation != "recover" || d.is_dir());
    if let Some(dir) = state_dir {
        let name = format!("last-{}.json", status.operation);
        // Replaced atomically, not synced (SPEC §9 promises no more): a
        // crash of the machine may keep the one before.
        match RunDir::new(dir).write_json_unsynced(&name, &last) {
            Ok(()) => runs = read_last_runs(dir),
            Err(e) => warnings.push(format!(
                "last result not kept in {}: {e}",
                dir.join(&name).display()
            )),
        }
    }
    // This run from its status, the others as their files say; in the
    // order of OPERATIONS. When the state directory was unusable the
    // textfile still has this run.
    runs.retain(|r| r.operation.as_deref() != Some(status.operation));
    runs.push(LastResult::of(&last));
    runs.sort_by_key(|r| {
        OPERATIONS
            .iter()
            .position(|op| r.operation.as_deref() == Some(*op))
            .unwrap_or(OPERATIONS.len())
    });
    let dir = match &outputs.metrics_dir {
        MetricsDir::Off => return warnings,
        MetricsDir::Default if !Path::new(DEFAULT_METRICS_DIR).is_dir() => return warnings,
        MetricsDir::Default => PathBuf::from(DEFAULT_METRICS_DIR),
        MetricsDir::Given(d) => d.clone(),
    };
    let pending = outputs.state_dir.as_ref().map(|d| pending_counts(d));
    let mut body = render(&runs);
    if let Some((n, failing)) = pending {
        body.push_str(&pending_families(n, failing));
    }
    if let Err(e) = write_textfile(&dir, &body) {
        warnings.push(format!(
            "metrics not written to {}: {e}",
            dir.join(METRICS_FILE).display()
        ));
    }
    warnings
}

/// How many post-scripts are pending in the state directory, and how many
/// of them wait for a retry after a failed recovery (SPEC §6.6).
fn pending_counts(dir: &Path) -> (usize, usize) {
    let opts = super::pending::PendingOptions {
        state_dir: RunDir::new(dir),
        ..Default::default()
    };
    let records: Vec<_> = opts
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            super::pending::Entry::Record(r) => Some(r),
            _ => None,
        })
        .collect();
    let failing = records.iter().filter(|r| r.failures > 0).count();
    (records.len(), failing)
}

/// The pending post-scripts as metrics: an alert on the second catches a
/// database that a recovery cannot resume.
fn pending_families(n: usize, failing: usize) -> String {
    format!(
        "# HELP quiesce_pending_post_scripts Post-scripts recorded as pending (their pre-script ran, they did not yet).\n# TYPE quiesce_pending_post_scripts gauge\nquiesce_pending_post_scripts {n}\n# HELP quiesce_pending_post_scripts_failing Pending post-scripts whose recovery failed and is retried with a backoff.\n# TYPE quiesce_pending_post_scripts_failing gauge\nquiesce_pending_post_scripts_failing {failing}\n"
    )
}

/// The last result of every operation found in the state directory.
fn read_last_runs(dir: &Path) -> Vec<LastResult> {
    let mut runs = Vec::new();
    for op in OPERATIONS {
        let path = dir.join(format!("last-{op}.json"));
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let mut text = String::new();
        if file.take(MAX_LAST_BYTES).read_to_string(&mut text).is_err() {
            continue;
        }
        // One that does not parse (a damaged file) is left out.
        if let Ok(run) = serde_json::from_str::<LastResult>(&text) {
            if run.operation.as_deref() == Some(op) {
                runs.push(run);
            }
        }
    }
    runs
}

#[derive(Debug, thiserror::Error)]
enum TextfileError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Untrusted(crate::freeze::state::StateError),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// `quiesce.prom`, replaced atomically in a trusted directory: a temporary
/// file created `O_EXCL | O_NOFOLLOW` in the directory (node-exporter must
/// never read half a file), written, renamed over the old one. Not synced:
/// the next run writes it again, and a crash of the machine that keeps the
/// one before loses nothing node-exporter could not scrape again. Mode
/// 0644: node-exporter does not run as root.
fn write_textfile(dir: &Path, body: &str) -> Result<(), TextfileError> {
    // An existing directory only: creating one (0700, root) would give
    // node-exporter a directory it cannot read.
    if fs::symlink_metadata(dir).is_err() {
        return Err(TextfileError::Missing(dir.to_path_buf()));
    }
    // The run directory's trust check: no symlink, root-owned, not group- or
    // world-writable, and so every directory above it (SPEC.md §4). The
    // file is written through the descriptor that was checked.
    let checked = RunDir::new(dir).open().map_err(TextfileError::Untrusted)?;
    let io_err = |e: io::Error| TextfileError::Io(dir.to_path_buf(), e);
    replace_file(
        checked.as_fd(),
        METRICS_FILE,
        body.as_bytes(),
        0o644,
        Fsync::Nothing,
    )
    .map_err(io_err)
}

// ---------------------------------------------------------------------------
// The Prometheus text exposition format (version 0.0.4).

/// One metric family: its HELP, its TYPE (all gauges) and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }
}

/// The textfile for the last runs `runs` (each a `last-<operation>.json`).
fn render(runs: &[LastResult]) -> String {
    let mut fams = [
        Family::new("quiesce_last_run_timestamp_seconds", "When the last run of the operation finished, in seconds since the Unix epoch."),
        Family::new("quiesce_last_run_success", "1 if the last run of the operation succeeded, else 0 (degraded or failure)."),
        Family::new("quiesce_last_run_result", "The result of the last run of the operation: 1 for the result it had, 0 for the others."),
        Family::new("quiesce_last_run_consistency", "The consistency of the last freeze or snapshot: 1 for the one it had, 0 for the others."),
        Family::new("quiesce_last_freeze_window_seconds", "How long filesystems were frozen in the last run of the operation."),
        Family::new("quiesce_last_phase_duration_seconds", "How long each phase of the last run took (script phases: all attempts)."),
        Family::new("quiesce_last_run_errors", "How many errors the last run of the operation reported."),
        Family::new("quiesce_last_run_error", "1 for each error the last run reported, by its name and code (man quiesce, ERRORS)."),
        Family::new("quiesce_last_run_trail_records_dropped", "Audit-trail records of the last run that no sink accepted."),
    ];
    for run in runs {
        let op = run.operation.as_deref().unwrap_or("unknown").to_string();
        let l = |extra: Vec<(&'static str, String)>| {
            let mut v = vec![("operation", op.clone())];
            v.extend(extra);
            v
        };
        let one = |yes: bool| f64::from(u8::from(yes));
        fams[0].add(l(vec![]), run.finished_at_unix_seconds);
        fams[1].add(l(vec![]), one(run.result == Some(Outcome::Success)));
        for r in [Outcome::Success, Outcome::Degraded, Outcome::Failure] {
            fams[2].add(
                l(vec![("result", r.name().into())]),
                one(run.result == Some(r)),
            );
        }
        if let Some(c) = run.consistency {
            for k in [
                Consistency::Application,
                Consistency::Filesystem,
                Consistency::Crash,
                Consistency::None,
            ] {
                fams[3].add(l(vec![("consistency", k.name().into())]), one(c == k));
            }
        }
        if let Some(w) = window_ms(run) {
            fams[4].add(l(vec![]), w / 1000.0);
        }
        for (phase, ms) in phase_durations(run) {
            fams[5].add(l(vec![("phase", phase.into())]), ms / 1000.0);
        }
        fams[6].add(l(vec![]), run.errors.len() as f64);
        for e in &run.errors {
            let code = e.code.map_or(String::new(), |c| c.to_string());
            fams[7].add(l(vec![("name", e.name.clone()), ("code", code)]), 1.0);
        }
        fams[8].add(l(vec![]), run.trail_delivery.dropped as f64);
    }
    let mut out = String::new();
    for f in &fams {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n",
            f.name, f.help, f.name
        ));
        for (labels, value) in &f.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            out.push_str(&format!("{}{{{}}} {value}\n", f.name, labels.join(",")));
        }
    }
    out
}

/// Each phase that ran and how long it took, in milliseconds. A script
/// phase of several applications is all of theirs (they run one after
/// another).
fn phase_durations(run: &LastResult) -> Vec<(&'static str, f64)> {
    let phases = &run.phases;
    let attempts = |p: &Option<Attempts>| -> Option<f64> {
        let a = p.as_ref()?.attempts.as_ref()?;
        Some(a.iter().filter_map(|x| x.duration_ms).sum())
    };
    let script = |own: &Option<Attempts>, of_app: fn(&ScriptTimes) -> &Option<Attempts>| {
        if let Some(ms) = attempts(own) {
            return Some(ms);
        }
        let per_app: Vec<f64> = run
            .applications
            .iter()
            .filter_map(|a| attempts(of_app(a)))
            .collect();
        (!per_app.is_empty()).then(|| per_app.iter().sum())
    };
    let mut out = Vec::new();
    if let Some(ms) = script(&phases.pre, |a| &a.pre) {
        out.push(("pre", ms));
    }
    if let Some(ms) = window_ms(run) {
        out.push(("freeze", ms));
    }
    if let Some(ms) = phases.snapshot.as_ref().and_then(|s| s.duration_ms) {
        out.push(("snapshot", ms));
    }
    if let Some(ms) = script(&phases.post, |a| &a.post) {
        out.push(("post", ms));
    }
    out
}

/// How long the run's freeze window was, when it had one.
fn window_ms(run: &LastResult) -> Option<f64> {
    run.phases.freeze.as_ref()?.window_ms
}

/// Label values: backslash, double quote and newline are escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A last result as its file says it.
    fn read(v: serde_json::Value) -> LastResult {
        serde_json::from_value(v).expect("a last result")
    }

    #[test]
    fn the_textfile_has_help_type_and_one_sample_per_label_set() {
        let run = serde_json::json!({
            "operation": "snapshot", "operationId": "op", "result": "degraded",
            "consistency": "filesystem",
            "errors": [{"name": "Pre-ScriptTimeout", "code": 308}],
            "phases": {"pre": {"attempts": [{"durationMs": 1500.0}, {"durationMs": 500.0}]},
                       "freeze": {"windowMs": 40.0}, "snapshot": {"durationMs": 30.0}},
            "finishedAtUnixSeconds": 1700000000.5,
            "trailDelivery": {"sent": 10, "dropped": 2}
        });
        let text = render(&[read(run)]);
        for want in [
            "# TYPE quiesce_last_run_success gauge\n",
            "quiesce_last_run_success{operation=\"snapshot\"} 0\n",
            "quiesce_last_run_result{operation=\"snapshot\",result=\"degraded\"} 1\n",
            "quiesce_last_run_consistency{operation=\"snapshot\",consistency=\"filesystem\"} 1\n",
            "quiesce_last_phase_duration_seconds{operation=\"snapshot\",phase=\"pre\"} 2\n",
            "quiesce_last_freeze_window_seconds{operation=\"snapshot\"} 0.04\n",
            "quiesce_last_run_error{operation=\"snapshot\",name=\"Pre-ScriptTimeout\",code=\"308\"} 1\n",
            "quiesce_last_run_trail_records_dropped{operation=\"snapshot\"} 2\n",
            "quiesce_last_run_timestamp_seconds{operation=\"snapshot\"} 1700000000.5\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        // HELP is read by whoever scrapes the host: it cites what they
        // have (the man page), not this repository's SPEC.md.
        for help in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(!help.contains("SPEC"), "{help}");
        }
    }

    /// Every metric the journal catalog names exists under that name.
    #[test]
    fn the_catalog_names_real_metrics() {
        let text = render(&[read(serde_json::json!({"operation": "pre"}))]);
        let catalog = crate::trail::catalog::render();
        for word in catalog.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("quiesce_") {
                assert!(
                    text.contains(&format!("# TYPE {word} ")),
                    "the catalog names {word}, which quiesce.prom does not have"
                );
            }
        }
    }

    #[test]
    fn script_phases_of_several_applications_add_up() {
        let run = serde_json::json!({
            "phases": {"freeze": {"windowMs": 40.0}},
            "applications": [
                {"pre": {"attempts": [{"durationMs": 1500.0}]}, "post": {"attempts": [{"durationMs": 250.0}]}},
                {"pre": {"attempts": [{"durationMs": 500.0}]}},
            ]
        });
        assert_eq!(
            phase_durations(&read(run)),
            vec![("pre", 2000.0), ("freeze", 40.0), ("post", 250.0)]
        );
    }

    /// This run's line comes from its status, the others' from their
    /// files: both must read the same, whatever the status's field names.
    #[test]
    fn a_status_reads_the_same_from_its_fields_and_from_its_file() {
        let status = crate::job::status::tests::populated();
        let last = LastRun {
            status: &status,
            finished_at: "2026-01-01T00:00:00.000000Z".into(),
            finished_at_unix_seconds: 1767225600.5,
            trail_delivery: TrailDelivery {
                sent: 10,
                dropped: 2,
            },
        };
        let file = serde_json::to_string(&last).expect("serialises");
        let from_file: LastResult = serde_json::from_str(&file).expect("reads back");
        let from_fields = LastResult::of(&last);
        assert_eq!(from_fields, from_file);
        assert_eq!(
            phase_durations(&from_fields),
            vec![
                ("pre", 1.5),
                ("freeze", 40.25),
                ("snapshot", 30.5),
                ("post", 0.0)
            ]
        );
        assert_eq!(from_fields.errors[0].code, Some(308));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
