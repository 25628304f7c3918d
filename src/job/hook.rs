//! quiesce as another agent's hook (SPEC.md §10): which agent, what its
//! arguments mean, and the records in the run directory that carry one
//! operation from the agent's first call to its second.
//!
//! Two kinds of agents:
//! - the agent freezes (qemu-guest-agent, open-vm-tools): quiesce runs the
//!   scripts around the agent's freeze and is the deadline the agent lacks
//!   ([`DeadlineRecord`]);
//! - quiesce freezes (Google's guest agent, AWS DLM): `pre` leaves the
//!   filesystems frozen, held by a process that outlives the call
//!   ([`HoldRecord`]), until `post` thaws them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The agents quiesce is a hook of. (Plain comments on the variants: doc
/// comments would make clap list them as `- name: text` help lines.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    // qemu-guest-agent's `-F` fsfreeze hook: `freeze` | `thaw`.
    #[value(name = "qemu-ga")]
    QemuGa,
    // open-vm-tools' backupScripts.d: `freeze` | `freezeFail` | `thaw` (any case).
    Vmware,
    // Google's guest agent, /etc/google/snapshots/{pre,post}.sh: `pre` | `post` DISKS.
    Gce,
    // AWS Data Lifecycle Manager's SSM document: `pre-script` | `post-script` | `dry-run`.
    #[value(name = "aws-dlm")]
    AwsDlm,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::QemuGa => "qemu-ga",
            Agent::Vmware => "vmware",
            Agent::Gce => "gce",
            Agent::AwsDlm => "aws-dlm",
        }
    }

    /// Whether the agent freezes the filesystems itself (quiesce never
    /// does then), or expects the hook to.
    pub fn freezes(self) -> bool {
        matches!(self, Agent::QemuGa | Agent::Vmware)
    }

    /// The arguments the agent passes, for the usage error.
    fn expected(self) -> &'static str {
        match self {
            Agent::QemuGa => "freeze or thaw",
            Agent::Vmware => {
                "freeze, freezeFail or thaw (any case), then an optional script argument"
            }
            Agent::Gce => "pre or post, then the disk list",
            Agent::AwsDlm => "pre-script, post-script or dry-run",
        }
    }
}

/// What one call of the agent asks of quiesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookCall {
    /// Before the agent's freeze: the pre-scripts (qemu-ga and VMware
    /// `freeze`).
    BeforeAgentFreeze,
    /// After the agent's thaw: the post-scripts (`thaw`).
    AfterAgentThaw,
    /// The agent's freeze failed after this hook's `freeze` (VMware's
    /// `freezeFail`): the post-scripts of what started, and a failure.
    AgentFreezeFailed,
    /// The pre-scripts, then a freeze held past the call (`gce pre`,
    /// `aws-dlm pre-script`).
    HoldFreeze,
    /// The held freeze thawed and its report collected, then the
    /// post-scripts (`gce post`, `aws-dlm post-script`).
    ReleaseFreeze,
    /// Would a snapshot be application-consistent (`aws-dlm dry-run`): the
    /// checks of `quiesce check`, nothing run.
    DryRun,
}

/// The agent's arguments as it passes them; what is not understood is a
/// usage error (exit 64) naming what the agent was expected to pass.
pub fn parse_call(agent: Agent, args: &[String]) -> Result<HookCall, String> {
    let first = args.first().map(String::as_str).unwrap_or("");
    let bad = || {
        let got = if args.is_empty() {
            "no argument".to_string()
        } else {
            format!("{:?}", args.join(" "))
        };
        format!(
            "hook {}: {got} is not a call of this agent (expected {})",
            agent.name(),
            agent.expected()
        )
    };
    // The arguments after the first that each agent may pass.
    let extra_allowed = match agent {
        Agent::QemuGa | Agent::AwsDlm => 0,
        // vmtoolsd appends the host's scriptArg when one is set.
        Agent::Vmware => 1,
        // The disk list (one argument, comma-separated).
        Agent::Gce => 1,
    };
    if args.len() > 1 + extra_allowed {
        return Err(bad());
    }
    let call = match (agent, first) {
        (Agent::QemuGa, "freeze") => HookCall::BeforeAgentFreeze,
        (Agent::QemuGa, "thaw") => HookCall::AfterAgentThaw,
        (Agent::Vmware, a) if a.eq_ignore_ascii_case("freeze") => HookCall::BeforeAgentFreeze,
        (Agent::Vmware, a) if a.eq_ignore_ascii_case("freezefail") => HookCall::AgentFreezeFailed,
        (Agent::Vmware, a) if a.eq_ignore_ascii_case("thaw") => HookCall::AfterAgentThaw,
        (Agent::Gce, "pre") => HookCall::HoldFreeze,
        (Agent::Gce, "post") => HookCall::ReleaseFreeze,
        (Agent::AwsDlm, "pre-script") => HookCall::HoldFreeze,
        (Agent::AwsDlm, "post-script") => HookCall::ReleaseFreeze,
        (Agent::AwsDlm, "dry-run") => HookCall::DryRun,
        _ => return Err(bad()),
    };
    Ok(call)
}

/// In the run directory: the held freeze of a `pre` (its holding process).
pub const HOLD_RECORD: &str = "hold.json";
/// In the run directory: written by the command inside the held window
/// once every filesystem is frozen (its pid and start time).
pub const HOLD_FROZEN: &str = "hold.frozen";
/// In the run directory: written by `post` to end the held window.
pub const HOLD_RELEASE: &str = "hold.release";
/// In the run directory: the holding run's status document (its stdout).
pub const HOLD_STATUS: &str = "hold.status.json";
/// In the run directory: the holding run's human lines (its stderr).
pub const HOLD_LOG: &str = "hold.log";
/// In the run directory: the deadline watcher of an agent's freeze.
pub const DEADLINE_RECORD: &str = "agent-deadline.json";
/// In the run directory: what the deadline watcher thawed, for the `thaw`.
pub const DEADLINE_REPORT: &str = "agent-deadline.report.json";

/// The held freeze of a `pre` call: the process that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HoldRecord {
    pub agent: String,
    pub pid: i32,
    /// Its start time (clock ticks since boot), so a reused pid is not it.
    pub start: u64,
    /// The `pre` run's operation id.
    pub operation_id: String,
    pub max_freeze_secs: u64,
    /// When the hold was started (seconds since the epoch).
    pub started_unix: u64,
    /// The `pre` call that made it, until it hands the hold over (returns):
    /// a `pre` killed before that (an agent's timeout) takes the hold with
    /// it, so its post-scripts, run at once by its post guard, do not meet
    /// frozen filesystems.
    pub pre_pid: i32,
    pub pre_start: u64,
    #[serde(default)]
    pub handed_over: bool,
}

/// What the command inside the held window writes once it runs: every
/// filesystem is frozen then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldFrozen {
    pub pid: i32,
    pub start: u64,
}

/// The watcher of an agent's freeze: the process that thaws at
/// `--max-freeze` what the agent left frozen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineRecord {
    pub agent: String,
    pub pid: i32,
    pub start: u64,
    pub operation_id: String,
    /// The deadline (milliseconds since the epoch).
    pub deadline_unix_ms: u64,
    pub mounts: Vec<PathBuf>,
}

/// What the deadline watcher did when the agent's thaw had not come.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineReport {
    pub agent: String,
    pub operation_id: String,
    /// The filesystems that were still frozen at the deadline, now thawed.
    pub thawed: Vec<PathBuf>,
    /// Frozen by a live window of quiesce's own, left to its own deadline.
    pub left_to_quiesce: Vec<PathBuf>,
    /// Thaws that failed, with why.
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(agent: Agent, args: &[&str]) -> Result<HookCall, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_call(agent, &args)
    }

    #[test]
    fn every_agent_call_is_understood() {
        use HookCall::*;
        assert_eq!(call(Agent::QemuGa, &["freeze"]), Ok(BeforeAgentFreeze));
        assert_eq!(call(Agent::QemuGa, &["thaw"]), Ok(AfterAgentThaw));
        assert_eq!(call(Agent::Vmware, &["FREEZE"]), Ok(BeforeAgentFreeze));
        assert_eq!(call(Agent::Vmware, &["freezeFail"]), Ok(AgentFreezeFailed));
        assert_eq!(call(Agent::Vmware, &["Thaw", "arg"]), Ok(AfterAgentThaw));
        assert_eq!(call(Agent::Gce, &["pre", "sda,sdb"]), Ok(HoldFreeze));
        assert_eq!(call(Agent::Gce, &["post"]), Ok(ReleaseFreeze));
        assert_eq!(call(Agent::AwsDlm, &["pre-script"]), Ok(HoldFreeze));
        assert_eq!(call(Agent::AwsDlm, &["post-script"]), Ok(ReleaseFreeze));
        assert_eq!(call(Agent::AwsDlm, &["dry-run"]), Ok(DryRun));
    }

    #[test]
    fn what_the_agent_never_passes_is_a_usage_error_naming_what_it_does() {
        let e = call(Agent::QemuGa, &["Freeze"]).unwrap_err();
        assert!(e.contains("freeze or thaw"), "{e}");
        assert!(call(Agent::QemuGa, &[])
            .unwrap_err()
            .contains("no argument"));
        assert!(call(Agent::QemuGa, &["freeze", "x"]).is_err());
        assert!(call(Agent::Gce, &["pre", "a", "b"]).is_err());
        assert!(call(Agent::AwsDlm, &["pre"]).is_err());
        assert!(call(Agent::Vmware, &["freeze-fail"]).is_err());
    }
}
