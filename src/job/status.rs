//! The status document of SPEC.md §9 (`--json` on stdout) and the human
//! one-line-per-step output on stderr. Field names are a public contract.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Exit, Problem};
use crate::freeze::mounts::PlanEntry;
use crate::freeze::state::ThawResult;
use crate::freeze::window::WindowReport;
use crate::job::apps::Source;
use crate::job::pending::Recovery;
use crate::sandbox::guards::GuardsDescription;
use crate::sandbox::inspect::{ProcessSandboxState, SandboxDescription};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Degraded,
    Failure,
}

impl Outcome {
    /// Its name in the status document and the trail.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Degraded => "degraded",
            Outcome::Failure => "failure",
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            Outcome::Success => Exit::Success,
            Outcome::Degraded => Exit::Degraded,
            Outcome::Failure => Exit::Failure,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Application,
    Filesystem,
    Crash,
    None,
}

impl Consistency {
    /// Its name in the status document and the trail.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Application => "application",
            Consistency::Filesystem => "filesystem",
            Consistency::Crash => "crash",
            Consistency::None => "none",
        }
    }
}

/// One entry of `errors`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub name: &'static str,
    pub code: Option<u16>,
    pub message: String,
    pub action: String,
}

impl From<&Problem> for ErrorEntry {
    fn from(p: &Problem) -> Self {
        ErrorEntry {
            name: p.code.name(),
            code: p.code.code(),
            message: p.detail.clone(),
            action: p.action(),
        }
    }
}

/// One script attempt (`phases.pre.attempts[]`).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AttemptStatus {
    pub attempt: u32,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: f64,
    pub killed_pids: Vec<i32>,
    pub left_running_pids: Vec<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_error: Option<String>,
    /// What the script really held right after its exec (`/proc/PID/status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::inspect::ProcessSandboxState>,
}

/// `phases.pre` / `phases.post`.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScriptPhaseStatus {
    pub script: String,
    pub sha256: String,
    pub attempts: Vec<AttemptStatus>,
    /// Pre-script leftovers terminated after the post phase (post only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders_terminated: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Phases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<ScriptPhaseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezePhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<ScriptPhaseStatus>,
}

/// `phases.freeze`: what the freeze window reported (`freeze`, `snapshot`),
/// or what an emergency thaw did (`thaw`). Each as its engine serialises it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FreezePhase {
    /// `{"mounts": [...], "windowMs": ...}`.
    Window(WindowReport),
    /// `{"thawed": [{"path", "device", "outcome"}]}`.
    Thawed { thawed: Vec<ThawResult> },
}

/// `phases.snapshot`: the snapshot command inside the window.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub command: Vec<String>,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: f64,
    pub killed_pids: Vec<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Whether the filesystems were frozen while it ran.
    pub frozen: bool,
}

/// `audit` (`quiesce audit`): the sandbox rules, the guards, and what a
/// probe started under the sandbox really held.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditStatus {
    pub sandbox: SandboxDescription,
    /// `null` when the sandbox could not be prepared.
    pub guards: Option<GuardsDescription>,
    /// `null` when the probe could not be started.
    pub observed_script: Option<ProcessSandboxState>,
}

/// One entry of `recovered`: a pending post-script of a dead runner that
/// this run ran (SPEC §6.6).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveredStatus {
    /// The operation whose post-script it was.
    pub operation_id: String,
    pub operation: String,
    pub app_name: Option<String>,
    /// Why it was due.
    pub recovery: Recovery,
    /// `success` or `failure`.
    pub result: Outcome,
    pub post: ScriptPhaseStatus,
}

/// One entry of `pending` (`quiesce check`): a pending post-script record,
/// or one that cannot be run.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PendingStatus {
    Record(PendingRecordStatus),
    /// Damaged, or settled but not removed: `{"record", "state"}`.
    Unusable {
        record: PathBuf,
        state: String,
    },
}

/// A pending post-script record: whose, how old, and whether it is due.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRecordStatus {
    pub record: PathBuf,
    pub operation_id: String,
    pub operation: String,
    pub app_name: Option<String>,
    pub post_script: PathBuf,
    pub age_seconds: u64,
    pub state: String,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// A checked script of `check` (`applications[].preScript`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckedScriptStatus {
    pub script: String,
    pub sha256: String,
    pub pinned: bool,
    /// What runs as root before its bytes, in order, each checked (SPEC §4);
    /// empty for an ELF binary.
    pub interpreters: Vec<InterpreterStatus>,
}

/// One interpreter of a checked script (`applications[].preScript.interpreters`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterpreterStatus {
    /// As named (a `#!` line, the launch's `/bin/sh`, where env finds it).
    pub path: String,
    /// With every symbolic link resolved.
    pub resolved: String,
    /// Who names it: `#! line of FILE`, the shell, or env and the name.
    pub named_by: String,
    /// For a program env finds: the PATH directories before its own,
    /// checked because a program of that name there would run instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowing: Vec<String>,
}

impl From<&crate::job::interpreter::Interpreter> for InterpreterStatus {
    fn from(i: &crate::job::interpreter::Interpreter) -> Self {
        InterpreterStatus {
            path: i.path.display().to_string(),
            resolved: i.resolved.display().to_string(),
            named_by: i.named_by.to_string(),
            shadowing: i
                .shadowing
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
        }
    }
}

/// One entry of `applications` (SPEC §3.1): the application, its config,
/// its script phases and its errors.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    pub name: String,
    pub config: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    pub continue_backup_on_failure: bool,
    pub fs_freeze_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_in_seconds: Option<u64>,
    /// `check`: the scripts that passed their checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_script: Option<CheckedScriptStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_script: Option<CheckedScriptStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<ScriptPhaseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<ScriptPhaseStatus>,
    /// A workload application (SPEC §3.2): the server, its method and
    /// whether its files are all frozen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadStatus>,
    pub errors: Vec<ErrorEntry>,
}

/// What the coverage check learnt of a workload application's server.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub engine: String,
    /// The server answered.
    pub reached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Why that method, for this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each file location and the frozen filesystem holding it; empty
    /// when the run freezes nothing.
    pub coverage: Vec<crate::workload::coverage::Location>,
    /// Every location is frozen in the window; `None` when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<bool>,
}

/// The whole status document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub operation: &'static str,
    pub operation_id: String,
    /// Set once, by [`Status::conclude`].
    result: Outcome,
    /// Present for a run that freezes (`none` until its end), set by
    /// [`Status::conclude`].
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<Consistency>,
    pub errors: Vec<ErrorEntry>,
    pub warnings: Vec<String>,
    pub phases: Phases,
    /// The applications of the run, in application order (SPEC §3.1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<ApplicationStatus>,
    /// Where they came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_source: Option<Source>,
    /// `quiesce check`: every mount and the verdict on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<PlanEntry>>,
    /// `quiesce audit`: the sandbox rules, the runner's and a probe's
    /// capabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditStatus>,
    /// Pending post-scripts of dead runners this run ran (SPEC §6.6).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<RecoveredStatus>,
    /// `quiesce check`: the pending post-scripts, their age and state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingStatus>>,
    /// `quiesce hook`: the agent, its arguments, and what quiesce did
    /// around the agent's freeze or for its held freeze (SPEC §10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookStatus>,
    /// `snapshot --group`, `check --group`: the consistency group's round
    /// (SPEC §11): members, barriers, the abort, the proof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::report::GroupReport>,
    /// The signal that stopped the runner, if one did (exit 128+N).
    #[serde(skip)]
    pub signal: Option<i32>,
    /// A bug was contained during the run (exit 70, everything still
    /// thawed and reaped).
    #[serde(skip)]
    pub internal_error: bool,
}

/// `quiesce hook`: which agent called, with what, and what became of the
/// freeze it is the hook of.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    pub agent: &'static str,
    pub args: Vec<String>,
    /// Where the agent freezes: the process that thaws at `--max-freeze`
    /// what the agent left frozen (started by `freeze`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_watcher: Option<i32>,
    /// Where the agent freezes: what quiesce thawed at `--max-freeze`
    /// because the agent's thaw had not come.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thawed_at_deadline: Vec<PathBuf>,
    /// Where quiesce freezes: the held freeze.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldStatus>,
}

/// The held freeze as the hook reports it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldStatus {
    /// The holding process.
    pub pid: i32,
    /// `post`: the holding run's own result (`success`, `failure`…), and
    /// the names of its errors; absent when it left no report (killed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// `post`: how long the filesystems were frozen, as the holding run
    /// measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<f64>,
}

/// What a run's own rules decided at its end, for [`Status::conclude`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `check`, `pre`, `post`, `thaw`, `recover`, `audit`: a failure if any
    /// error is listed, else a success.
    ByErrors,
    /// The run stopped on a problem before its work: a failure.
    Refused,
    /// `freeze` and `snapshot`: the outcome and the consistency of the
    /// decision table (SPEC §5).
    Table(Outcome, Consistency),
}

impl Status {
    /// The status of a run that has not ended; `freezes`: one whose
    /// consistency is reported, `none` until it is decided.
    pub fn new(operation: &'static str, operation_id: &str, freezes: bool) -> Status {
        Status {
            operation,
            operation_id: operation_id.to_string(),
            result: Outcome::Success,
            consistency: freezes.then_some(Consistency::None),
            errors: Vec::new(),
            warnings: Vec::new(),
            phases: Phases::default(),
            applications: Vec::new(),
            application_source: None,
            mounts: None,
            audit: None,
            recovered: Vec::new(),
            pending: None,
            hook: None,
            group: None,
            signal: None,
            internal_error: false,
        }
    }

    /// The run's result and consistency, from what its own rules decided,
    /// once at its end. A signal to the runner or a contained bug makes the
    /// run a failure whatever they decided (the exit code, 128+N or 70,
    /// then says which); the consistency stays what the table gave.
    pub fn conclude(&mut self, decided: Decision) {
        let outcome = match decided {
            Decision::ByErrors if self.errors.is_empty() => Outcome::Success,
            Decision::ByErrors | Decision::Refused => Outcome::Failure,
            Decision::Table(outcome, consistency) => {
                self.consistency = Some(consistency);
                outcome
            }
        };
        self.result = if self.signal.is_some() || self.internal_error {
            Outcome::Failure
        } else {
            outcome
        };
    }

    pub fn result(&self) -> Outcome {
        self.result
    }

    pub fn consistency(&self) -> Option<Consistency> {
        self.consistency
    }

    /// The exit code (SPEC §2), derived from the status alone: 128+N after
    /// a signal, 70 after a contained bug, else what the result says.
    pub fn exit(&self) -> Exit {
        match self.signal {
            Some(sig) => Exit::Signal(sig),
            None if self.internal_error => Exit::Internal,
            None => self.result.exit(),
        }
    }

    pub fn push_error(&mut self, p: &Problem) {
        self.errors.push(ErrorEntry::from(p));
    }

    /// Whether `p` is already listed (the plugin-host file's problem is the
    /// pre-check result of every application, and listed once).
    pub fn has_error(&self, p: &Problem) -> bool {
        let e = ErrorEntry::from(p);
        self.errors
            .iter()
            .any(|x| x.code == e.code && x.message == e.message)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("status serialises")
    }
}

/// A fresh operation id: 128 random bits as a UUID-shaped string, shared by
/// every audit record and the status of one run.
pub fn new_operation_id() -> String {
    let mut b = [0u8; 16];
    // getrandom(2) never fails for 16 bytes once the pool is initialised;
    // fall back to time and pid rather than abort a thaw-critical tool.
    if nix_getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[0] ^= std::process::id() as u8;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::integrity::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn nix_getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `buf`, which is valid for writes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n as usize == buf.len() {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Human output: one short line per step on stderr (held, like the audit
/// records, while filesystems are frozen).
pub fn say(line: impl AsRef<str>) {
    crate::trail::human(line);
}

/// Human output for a problem: the line, then the recommended action.
pub fn say_problem(p: &Problem) {
    say(format!("error: {p}"));
    say(format!("  action: {}", p.action()));
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::freeze::state::ThawOutcome;
    use crate::freeze::window::MountReport;
    use crate::job::apps::SourceKind;
    use crate::sandbox::guards::RuleDescription;
    use crate::sandbox::inspect::SeccompDescription;
    use crate::sandbox::policy::Commented;
    use crate::sandbox::seccomp::FilterAction;

    fn phase(script: &str, attempts: Vec<AttemptStatus>) -> ScriptPhaseStatus {
        ScriptPhaseStatus {
            script: script.into(),
            sha256: "5ca1ab1e".into(),
            attempts,
            holders_terminated: Vec::new(),
        }
    }

    fn probe(pid: i32) -> ProcessSandboxState {
        ProcessSandboxState {
            pid,
            cap_eff: vec![],
            cap_prm: vec![],
            cap_bnd: vec!["cap_chown".into()],
            cap_amb: vec![],
            cap_inh: vec![],
            no_new_privs: Some(true),
            seccomp: Some(2),
            seccomp_filters: Some(2),
        }
    }

    fn checked(script: &str) -> CheckedScriptStatus {
        CheckedScriptStatus {
            script: script.into(),
            sha256: "5ca1ab1e".into(),
            pinned: true,
            interpreters: vec![InterpreterStatus {
                path: "/usr/bin/env".into(),
                resolved: "/usr/bin/env".into(),
                named_by: format!("#! line of {script}"),
                shadowing: vec!["/usr/local/bin".into()],
            }],
        }
    }

    fn sandbox() -> SandboxDescription {
        SandboxDescription {
            policy: "built-in".into(),
            policy_sha256: "b0a710ad".into(),
            comment: "the default".into(),
            capabilities_dropped: vec![],
            no_new_privs: Commented {
                value: true,
                comment: "no setuid".into(),
            },
            rlimits: vec![],
            kill_grace_seconds: Commented {
                value: 5,
                comment: "grace".into(),
            },
            output_cap_bytes: Commented {
                value: 65536,
                comment: "cap".into(),
            },
            seccomp: SeccompDescription {
                filter: "scripts",
                comment: "deny list".into(),
                arch: "x86_64",
                default_action: FilterAction::Allow,
                filter_action: FilterAction::Errno(1),
                x32_denied: true,
                rules: vec![],
            },
            baseline_gaps: vec![],
            runner: None,
            script: None,
        }
    }

    fn audit() -> AuditStatus {
        AuditStatus {
            sandbox: sandbox(),
            guards: Some(GuardsDescription {
                comment: "out of reach",
                rules: vec![RuleDescription {
                    syscall: "kill",
                    refuses: "a guard's pid".into(),
                    answer: "EPERM".into(),
                    comment: "the guards outlive the scripts",
                }],
                protected_now: vec!["1000 runner".into()],
                instructions: 12,
                read_only_in_scripts: vec!["/sys/fs/cgroup".into()],
                masked_in_scripts: vec!["/proc/1000".into()],
            }),
            observed_script: Some(probe(4400)),
        }
    }

    fn window() -> FreezePhase {
        FreezePhase::Window(WindowReport {
            mounts: vec![MountReport {
                path: "/data".into(),
                device: "7:0".into(),
                fs_type: "ext4".into(),
                stage: 1,
                freeze_start_ms: 0.25,
                freeze_ms: 2.5,
                frozen_ms: 12.5,
                thawed_by_watchdog: true,
                thaw_error: Some("EIO".into()),
            }],
            window_ms: 40.25,
            ..Default::default()
        })
    }

    fn snapshot() -> SnapshotStatus {
        SnapshotStatus {
            command: vec!["snap".into(), "--now".into()],
            pid: Some(4300),
            exit_code: Some(0),
            signal: None,
            duration_ms: 30.5,
            killed_pids: vec![4301],
            stdout_tail: "taken".into(),
            stderr_tail: String::new(),
            frozen: true,
        }
    }

    fn application() -> ApplicationStatus {
        ApplicationStatus {
            name: "app".into(),
            config: "/etc/quiesce/apps.d/10-app.json".into(),
            config_sha256: Some("c0ffee".into()),
            continue_backup_on_failure: true,
            fs_freeze_enabled: true,
            timeout_in_seconds: Some(30),
            pre_script: Some(checked("/etc/quiesce/pre.sh")),
            post_script: Some(CheckedScriptStatus {
                interpreters: vec![],
                ..checked("/etc/quiesce/post")
            }),
            pre: Some(phase("/etc/quiesce/pre.sh", vec![])),
            post: Some(phase("/etc/quiesce/post", vec![])),
            workload: None,
            errors: vec![ErrorEntry {
                name: "Pre-ScriptTimeout",
                code: Some(308),
                message: "timed out".into(),
                action: "raise timeoutInSeconds".into(),
            }],
        }
    }

    fn pending() -> Vec<PendingStatus> {
        vec![
            PendingStatus::Record(PendingRecordStatus {
                record: "/var/lib/quiesce/pending-post-op1.json".into(),
                operation_id: "op1".into(),
                operation: "pre".into(),
                app_name: None,
                post_script: "/etc/quiesce/post.sh".into(),
                age_seconds: 12,
                state: "pending: awaits `quiesce post`".into(),
                failures: 1,
                last_error: Some("exit 1".into()),
            }),
            PendingStatus::Unusable {
                record: "/var/lib/quiesce/pending-post-op2.json".into(),
                state: "damaged: not JSON".into(),
            },
        ]
    }

    /// A status with every field set (the run's own `applications`,
    /// `mounts` of a check, `audit` and `pending` all at once).
    pub(crate) fn populated() -> Status {
        let attempt = AttemptStatus {
            attempt: 1,
            pid: Some(4242),
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            duration_ms: 1.5,
            killed_pids: vec![4243],
            left_running_pids: vec![4244],
            stdout_tail: "ok\n".into(),
            stderr_tail: String::new(),
            spawn_error: Some("retried".into()),
            sandbox: Some(probe(4242)),
        };
        let pre = phase("/etc/quiesce/pre.sh", vec![attempt]);
        let post = ScriptPhaseStatus {
            holders_terminated: vec![4244],
            ..phase("/etc/quiesce/post.sh", vec![])
        };
        let mut status = Status::new("snapshot", "op0", true);
        status.conclude(Decision::Table(Outcome::Degraded, Consistency::Filesystem));
        status.errors = application().errors;
        status.warnings = vec!["a warning".into()];
        status.phases = Phases {
            pre: Some(pre),
            freeze: Some(window()),
            snapshot: Some(snapshot()),
            post: Some(post),
        };
        status.applications = vec![application()];
        status.application_source = Some(Source {
            source: SourceKind::AppsDir,
            path: Some("/etc/quiesce/apps.d".into()),
            ignored: vec!["/etc/quiesce/apps.d/README".into()],
            notes: vec!["said, not listed".into()],
        });
        status.mounts = Some(vec![PlanEntry {
            path: "/data".into(),
            fs_type: "ext4".into(),
            device: "7:0".into(),
            source: "/dev/loop0".into(),
            freeze: true,
            reason: "a block device".into(),
            major: 7,
            minor: 0,
            mount_id: 42,
            stage: Some(1),
        }]);
        status.audit = Some(audit());
        status.recovered = vec![RecoveredStatus {
            operation_id: "op-dead".into(),
            operation: "pre".into(),
            app_name: Some("app".into()),
            recovery: Recovery::RunnerDied,
            result: Outcome::Failure,
            post: phase("/etc/quiesce/post.sh", vec![]),
        }];
        status.pending = Some(pending());
        status.signal = Some(15);
        status.internal_error = true;
        status
    }

    /// The whole document, byte for byte: a renamed field, a field that
    /// moved, a `null` that became absent (or the other way round) fails
    /// here before it reaches a user's parser.
    #[test]
    fn a_populated_status_serialises_to_the_documented_json() {
        assert_eq!(populated().to_json(), POPULATED);
    }

    #[test]
    fn a_run_ends_as_it_decided_unless_a_signal_or_a_bug_stopped_it() {
        let ended = |decided, errors: bool, signal, internal_error, freezes| {
            let mut s = Status::new("snapshot", "op", freezes);
            if errors {
                s.errors = application().errors;
            }
            s.signal = signal;
            s.internal_error = internal_error;
            s.conclude(decided);
            (s.result(), s.consistency())
        };
        let table = Decision::Table(Outcome::Degraded, Consistency::Crash);
        let crash = Some(Consistency::Crash);
        assert_eq!(
            ended(table, true, None, false, true),
            (Outcome::Degraded, crash)
        );
        // The table's consistency stays; the result is a failure.
        assert_eq!(
            ended(table, false, Some(15), false, true),
            (Outcome::Failure, crash)
        );
        assert_eq!(
            ended(table, false, None, true, true),
            (Outcome::Failure, crash)
        );
        assert_eq!(
            ended(Decision::ByErrors, false, None, false, false),
            (Outcome::Success, None)
        );
        assert_eq!(
            ended(Decision::ByErrors, true, None, false, false),
            (Outcome::Failure, None)
        );
        assert_eq!(
            ended(Decision::ByErrors, false, Some(2), false, false),
            (Outcome::Failure, None)
        );
        // A freeze refused before its window: nothing is consistent.
        assert_eq!(
            ended(Decision::Refused, true, None, false, true),
            (Outcome::Failure, Some(Consistency::None))
        );
    }

    /// `phases.freeze` of `thaw`: what it thawed.
    #[test]
    fn a_thaw_files_what_it_thawed() {
        let thawed = FreezePhase::Thawed {
            thawed: vec![crate::freeze::state::ThawResult {
                path: PathBuf::from("/data"),
                device: "7:0".into(),
                outcome: ThawOutcome::NotFrozen,
            }],
        };
        assert_eq!(
            serde_json::to_string(&thawed).expect("serialises"),
            r#"{"thawed":[{"path":"/data","device":"7:0","outcome":"not-frozen"}]}"#
        );
    }

    const POPULATED: &str = r##"{
  "operation": "snapshot",
  "operationId": "op0",
  "result": "degraded",
  "consistency": "filesystem",
  "errors": [
    {
      "name": "Pre-ScriptTimeout",
      "code": 308,
      "message": "timed out",
      "action": "raise timeoutInSeconds"
    }
  ],
  "warnings": [
    "a warning"
  ],
  "phases": {
    "pre": {
      "script": "/etc/quiesce/pre.sh",
      "sha256": "5ca1ab1e",
      "attempts": [
        {
          "attempt": 1,
          "pid": 4242,
          "exitCode": 0,
          "signal": null,
          "timedOut": false,
          "durationMs": 1.5,
          "killedPids": [
            4243
          ],
          "leftRunningPids": [
            4244
          ],
          "stdoutTail": "ok\n",
          "stderrTail": "",
          "spawnError": "retried",
          "sandbox": {
            "pid": 4242,
            "capEff": [],
            "capPrm": [],
            "capBnd": [
              "cap_chown"
            ],
            "capAmb": [],
            "capInh": [],
            "noNewPrivs": true,
            "seccomp": 2,
            "seccompFilters": 2
          }
        }
      ]
    },
    "freeze": {
      "mounts": [
        {
          "path": "/data",
          "device": "7:0",
          "fsType": "ext4",
          "stage": 1,
          "freezeStartMs": 0.25,
          "freezeMs": 2.5,
          "frozenMs": 12.5,
          "thawedByWatchdog": true,
          "thawError": "EIO"
        }
      ],
      "windowMs": 40.25
    },
    "snapshot": {
      "command": [
        "snap",
        "--now"
      ],
      "pid": 4300,
      "exitCode": 0,
      "signal": null,
      "durationMs": 30.5,
      "killedPids": [
        4301
      ],
      "stdoutTail": "taken",
      "stderrTail": "",
      "frozen": true
    },
    "post": {
      "script": "/etc/quiesce/post.sh",
      "sha256": "5ca1ab1e",
      "attempts": [],
      "holdersTerminated": [
        4244
      ]
    }
  },
  "applications": [
    {
      "name": "app",
      "config": "/etc/quiesce/apps.d/10-app.json",
      "configSha256": "c0ffee",
      "continueBackupOnFailure": true,
      "fsFreezeEnabled": true,
      "timeoutInSeconds": 30,
      "preScript": {
        "script": "/etc/quiesce/pre.sh",
        "sha256": "5ca1ab1e",
        "pinned": true,
        "interpreters": [
          {
            "path": "/usr/bin/env",
            "resolved": "/usr/bin/env",
            "namedBy": "#! line of /etc/quiesce/pre.sh",
            "shadowing": [
              "/usr/local/bin"
            ]
          }
        ]
      },
      "postScript": {
        "script": "/etc/quiesce/post",
        "sha256": "5ca1ab1e",
        "pinned": true,
        "interpreters": []
      },
      "pre": {
        "script": "/etc/quiesce/pre.sh",
        "sha256": "5ca1ab1e",
        "attempts": []
      },
      "post": {
        "script": "/etc/quiesce/post",
        "sha256": "5ca1ab1e",
        "attempts": []
      },
      "errors": [
        {
          "name": "Pre-ScriptTimeout",
          "code": 308,
          "message": "timed out",
          "action": "raise timeoutInSeconds"
        }
      ]
    }
  ],
  "applicationSource": {
    "source": "apps-dir",
    "path": "/etc/quiesce/apps.d",
    "ignored": [
      "/etc/quiesce/apps.d/README"
    ]
  },
  "mounts": [
    {
      "path": "/data",
      "fsType": "ext4",
      "device": "7:0",
      "source": "/dev/loop0",
      "freeze": true,
      "reason": "a block device",
      "stage": 1
    }
  ],
  "audit": {
    "sandbox": {
      "policy": "built-in",
      "policySha256": "b0a710ad",
      "comment": "the default",
      "capabilitiesDropped": [],
      "noNewPrivs": {
        "value": true,
        "comment": "no setuid"
      },
      "rlimits": [],
      "killGraceSeconds": {
        "value": 5,
        "comment": "grace"
      },
      "outputCapBytes": {
        "value": 65536,
        "comment": "cap"
      },
      "seccomp": {
        "filter": "scripts",
        "comment": "deny list",
        "arch": "x86_64",
        "defaultAction": "allow",
        "filterAction": {
          "errno": 1
        },
        "x32Denied": true,
        "rules": []
      },
      "baselineGaps": [],
      "runner": null,
      "script": null
    },
    "guards": {
      "comment": "out of reach",
      "rules": [
        {
          "syscall": "kill",
          "refuses": "a guard's pid",
          "answer": "EPERM",
          "comment": "the guards outlive the scripts"
        }
      ],
      "protectedNow": [
        "1000 runner"
      ],
      "instructions": 12,
      "readOnlyInScripts": [
        "/sys/fs/cgroup"
      ],
      "maskedInScripts": [
        "/proc/1000"
      ]
    },
    "observedScript": {
      "pid": 4400,
      "capEff": [],
      "capPrm": [],
      "capBnd": [
        "cap_chown"
      ],
      "capAmb": [],
      "capInh": [],
      "noNewPrivs": true,
      "seccomp": 2,
      "seccompFilters": 2
    }
  },
  "recovered": [
    {
      "operationId": "op-dead",
      "operation": "pre",
      "appName": "app",
      "recovery": "runner-died",
      "result": "failure",
      "post": {
        "script": "/etc/quiesce/post.sh",
        "sha256": "5ca1ab1e",
        "attempts": []
      }
    }
  ],
  "pending": [
    {
      "record": "/var/lib/quiesce/pending-post-op1.json",
      "operationId": "op1",
      "operation": "pre",
      "appName": null,
      "postScript": "/etc/quiesce/post.sh",
      "ageSeconds": 12,
      "state": "pending: awaits `quiesce post`",
      "failures": 1,
      "lastError": "exit 1"
    },
    {
      "record": "/var/lib/quiesce/pending-post-op2.json",
      "state": "damaged: not JSON"
    }
  ]
}"##;
}
