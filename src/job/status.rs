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
    pub errors: Vec<ErrorEntry>,
}

/// The whole status document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub operation: &'static str,
    pub operation_id: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
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
    /// The signal that stopped the runner, if one did (exit 128+N).
    #[serde(skip)]
    pub signal: Option<i32>,
    /// A bug was contained during the run (exit 70, everything still
    /// thawed and reaped).
    #[serde(skip)]
    pub internal_error: bool,
}

impl Status {
    pub fn new(operation: &'static str, operation_id: &str) -> Status {
        Status {
            operation,
            operation_id: operation_id.to_string(),
            result: Outcome::Success,
            consistency: None,
            errors: Vec::new(),
            warnings: Vec::new(),
            phases: Phases::default(),
            applications: Vec::new(),
            application_source: None,
            mounts: None,
            audit: None,
            recovered: Vec::new(),
            pending: None,
            signal: None,
            internal_error: false,
        }
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
