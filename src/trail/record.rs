//! The catalogue of audit records: every kind of record quiesce can emit, in
//! one place, the way `error.rs` holds the error table. This list is the
//! compliance contract of SPEC.md §9: a SIEM keys on the MSGID, and adding,
//! renaming or removing a kind is a change of that contract (the README's
//! "Audit trail" section and the tests list them).

/// One kind of audit record. Its [`msgid`](Record::msgid) is the RFC 5424
/// MSGID on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Record {
    /// A run began: pid, version, the runner's capabilities.
    RunStart,
    /// One check of the pre-check: the config, a script, or a failure with
    /// its error name and code.
    Check,
    /// A warning of the pre-check (unknown key, clamped timeout…).
    CheckWarning,
    /// `--no-sandbox` was given: scripts run without the sandbox.
    SandboxDisabled,
    /// A script attempt started: path, SHA-256, argv, pid, what it holds.
    ScriptStart,
    /// A script attempt ended: status, signal, duration, timeout, kills.
    ScriptExit,
    /// A script's output (debug level, capped).
    ScriptOutput,
    /// A script is still running (once per poll interval).
    ScriptProgress,
    /// A script could not be started at all.
    ScriptSpawnFailed,
    /// A pre-script leftover was recorded to live until the post phase.
    HolderRecorded,
    /// A pre-script leftover was terminated after the post phase.
    HolderTerminated,
    /// A dead runner's window was recovered (thawed) at the start of a run.
    Recovery,
    /// A pending post-script of a dead runner (or of a `pre` whose `post`
    /// never came) is run, or a run's own pending record was settled.
    PostRecovery,
    /// One filesystem was frozen: mount, device, type, duration.
    Freeze,
    /// Every planned filesystem is frozen.
    FreezeComplete,
    /// The freeze failed; everything frozen was thawed.
    FreezeFailed,
    /// One filesystem was thawed: mount, device, how long it was frozen.
    Thaw,
    /// The freeze window closed: its total frozen time.
    Window,
    /// The snapshot command is still running.
    SnapshotProgress,
    /// The snapshot command ended.
    SnapshotExit,
    /// `quiesce thaw` thawed (or failed to thaw) a mount.
    EmergencyThaw,
    /// Records or human lines were dropped while the trail was held.
    TrailOverflow,
    /// A warning or error from a library, through the `log` facade.
    Log,
    /// A run ended: result, consistency, every error name and code.
    RunEnd,
}

impl Record {
    /// Every kind, in the order of a run.
    pub const ALL: [Record; 24] = [
        Record::RunStart,
        Record::Check,
        Record::CheckWarning,
        Record::SandboxDisabled,
        Record::ScriptStart,
        Record::ScriptExit,
        Record::ScriptOutput,
        Record::ScriptProgress,
        Record::ScriptSpawnFailed,
        Record::HolderRecorded,
        Record::HolderTerminated,
        Record::Recovery,
        Record::PostRecovery,
        Record::Freeze,
        Record::FreezeComplete,
        Record::FreezeFailed,
        Record::Thaw,
        Record::Window,
        Record::SnapshotProgress,
        Record::SnapshotExit,
        Record::EmergencyThaw,
        Record::TrailOverflow,
        Record::Log,
        Record::RunEnd,
    ];

    /// The RFC 5424 MSGID (at most 32 printable ASCII characters).
    pub fn msgid(self) -> &'static str {
        match self {
            Record::RunStart => "run-start",
            Record::Check => "check",
            Record::CheckWarning => "check-warning",
            Record::SandboxDisabled => "sandbox-disabled",
            Record::ScriptStart => "script-start",
            Record::ScriptExit => "script-exit",
            Record::ScriptOutput => "script-output",
            Record::ScriptProgress => "script-progress",
            Record::ScriptSpawnFailed => "script-spawn-failed",
            Record::HolderRecorded => "holder-recorded",
            Record::HolderTerminated => "holder-terminated",
            Record::Recovery => "recovery",
            Record::PostRecovery => "post-recovery",
            Record::Freeze => "freeze",
            Record::FreezeComplete => "freeze-complete",
            Record::FreezeFailed => "freeze-failed",
            Record::Thaw => "thaw",
            Record::Window => "window",
            Record::SnapshotProgress => "snapshot-progress",
            Record::SnapshotExit => "snapshot-exit",
            Record::EmergencyThaw => "emergency-thaw",
            Record::TrailOverflow => "trail-overflow",
            Record::Log => "log",
            Record::RunEnd => "run-end",
        }
    }

    /// The kind whose MSGID is `msgid`.
    pub fn from_msgid(msgid: &str) -> Option<Record> {
        Record::ALL.into_iter().find(|r| r.msgid() == msgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgids_are_unique_and_valid_rfc5424() {
        let mut seen = std::collections::HashSet::new();
        for r in Record::ALL {
            let id = r.msgid();
            assert!(seen.insert(id), "{id} twice");
            assert!(
                !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_graphic()),
                "{id} is not an RFC 5424 MSGID"
            );
        }
    }
}
