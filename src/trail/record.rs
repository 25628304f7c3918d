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
    /// never came) is run.
    PostRecovery,
    /// A post-script ran but its pending record could not be removed (the
    /// state directory is read-only or failing): marked settled instead.
    PostUnsettled,
    /// A run's own post-script ran, so the record of it as pending (written
    /// before its pre-script) was removed: the normal end of every pre/post
    /// pair, never a recovery.
    PostSettled,
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
    /// A consistency group's round was joined: group, round, member, revision.
    GroupJoin,
    /// A barrier of the round was passed: stage, round, own and passing revisions.
    GroupBarrier,
    /// The round aborted: who gave up, at which barrier, why.
    GroupAbort,
    /// The proof of the common instant, after the thaw: last frozen and first thaw revisions.
    GroupProof,
    /// A run ended: result, consistency, every error name and code.
    RunEnd,
}

impl Record {
    /// Every kind, in the order of a run.
    pub const ALL: [Record; 30] = [
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
        Record::PostUnsettled,
        Record::PostSettled,
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
        Record::GroupJoin,
        Record::GroupBarrier,
        Record::GroupAbort,
        Record::GroupProof,
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
            Record::PostUnsettled => "post-unsettled",
            Record::PostSettled => "post-settled",
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
            Record::GroupJoin => "group-join",
            Record::GroupBarrier => "group-barrier",
            Record::GroupAbort => "group-abort",
            Record::GroupProof => "group-proof",
            Record::RunEnd => "run-end",
        }
    }

    /// The journal's `MESSAGE_ID` (SPEC.md §9): 128 random bits, drawn once
    /// per kind and never changed, because `journalctl MESSAGE_ID=…` filters,
    /// SIEM rules and the catalog (`packaging/quiesce.catalog`) key on it.
    /// A kind whose meaning changes gets a new id; an id is never reused.
    pub fn message_id(self) -> &'static str {
        match self {
            Record::RunStart => "5f2d8170d684465cae9547b4c490d054",
            Record::Check => "444c013c9d0e440e998559f1797541a0",
            Record::CheckWarning => "dfb4552767bc4346b93ba9a3fcb75139",
            Record::SandboxDisabled => "7c938e7d133642b7b7f9c999c77214dc",
            Record::ScriptStart => "ed38166cd63e40a490de103f90cbeadb",
            Record::ScriptExit => "8d84764dc6c742d5b8fc52fef9c0e843",
            Record::ScriptOutput => "9de74b0744a84ae695249c2afccbe86f",
            Record::ScriptProgress => "7a721f2b5cfa4e02bdefe8b0182426fe",
            Record::ScriptSpawnFailed => "04396e0ee70147d0b0123069e42f4196",
            Record::HolderRecorded => "8042db5c92e744adbfd4d9f749bb7a0c",
            Record::HolderTerminated => "e44905aa86a54e938ad0dc7d8ea1979a",
            Record::Recovery => "d4e70a1f63cf4b748a6459c9e89c8b22",
            Record::PostRecovery => "0602c5b42eb741e592a525a37f5dbc7f",
            Record::PostUnsettled => "42d0ab89b20c41929ed7a507fde9022c",
            Record::PostSettled => "c67545ac6089401c96aff209823dd35b",
            Record::Freeze => "06bcb70c76174537ae131d70e953c0e7",
            Record::FreezeComplete => "81a9dbed7de846118f881c87dd1d3d2b",
            Record::FreezeFailed => "acf67e3142754131af59b98ea90f09eb",
            Record::Thaw => "236c94a3f1c941b9b81dd6a55a0b63b0",
            Record::Window => "97a398216a97421984360f875ac4aea7",
            Record::SnapshotProgress => "fb7ed3571e6d41f0b85094e19bbfbc55",
            Record::SnapshotExit => "943163df7c594838b0194b16f13f11a1",
            Record::EmergencyThaw => "713041947e3242d8b96373982fe9652b",
            Record::TrailOverflow => "7fcf75ac9a6845cf85f9f75e4cb406c2",
            Record::Log => "0b7d4b3109854c92ac1bed3e0491eea6",
            Record::GroupJoin => "5251ec0f3e02a8584c2743716806d7c4",
            Record::GroupBarrier => "f3ce18b18145a2c69ead615f4ed4bdef",
            Record::GroupAbort => "1e39834e1f3afaf6393511f09f038fc9",
            Record::GroupProof => "480f5e346bc6070225cc5633451fcb88",
            Record::RunEnd => "2d6da6a7f7e3445dbb85bb27e8e3b27a",
        }
    }

    /// The kind whose `MESSAGE_ID` is `id`.
    pub fn from_message_id(id: &str) -> Option<Record> {
        Record::ALL.into_iter().find(|r| r.message_id() == id)
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
