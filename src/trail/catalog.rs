//! The journal catalog (catalog(7) of journalctl, SPEC.md §9): one entry per
//! `MESSAGE_ID` of the record catalogue, saying what happened and, where the
//! record can carry an error of the table (SPEC.md §4), the recommended
//! action, so `journalctl -x` shows it next to the record.
//!
//! `packaging/quiesce.catalog` is [`render`]'s output, installed by both
//! packages to `/usr/lib/systemd/catalog/quiesce.catalog`; a unit test keeps
//! the file and the code in step (`QUIESCE_WRITE_CATALOG=1 cargo test --lib
//! catalog` rewrites it).

use std::fmt::Write as _;

use super::Record;
use crate::error::ErrorCode;

/// Where the installed file points readers for more.
const SUPPORT: &str = "man:quiesce(8)";

/// The catalog's subject line of a kind. `@FIELD@` is replaced by the
/// record's field when journalctl shows it.
fn subject(kind: Record) -> &'static str {
    match kind {
        Record::RunStart => "quiesce @QUIESCE_PHASE@ started (operation @QUIESCE_OP@)",
        Record::Check => "quiesce pre-check: @QUIESCE_ITEM@ @QUIESCE_OUTCOME@",
        Record::CheckWarning => "quiesce pre-check warning",
        Record::SandboxDisabled => "quiesce runs scripts WITHOUT the sandbox (--no-sandbox)",
        Record::ScriptStart => "quiesce started the @QUIESCE_PHASE@-script",
        Record::ScriptExit => "quiesce: the @QUIESCE_PHASE@-script ended",
        Record::ScriptOutput => "output of the @QUIESCE_PHASE@-script",
        Record::ScriptProgress => "the @QUIESCE_PHASE@-script is still running",
        Record::ScriptSpawnFailed => "quiesce could not start the @QUIESCE_PHASE@-script",
        Record::HolderRecorded => "a process left by the pre-script is kept until the post phase",
        Record::HolderTerminated => "quiesce ended a process left by the pre-script",
        Record::Recovery => "quiesce thawed what a dead runner left frozen",
        Record::PostRecovery => {
            "quiesce ran the post-script a dead run left pending (@QUIESCE_RECOVERY@)"
        }
        Record::PostUnsettled => "a post-script ran, but its pending record could not be removed",
        Record::PostSettled => {
            "the @QUIESCE_PHASE@ run's own post-script ran; its pending record was removed"
        }
        Record::Freeze => "quiesce froze @QUIESCE_MOUNT@",
        Record::FreezeComplete => "every planned filesystem is frozen",
        Record::FreezeFailed => "quiesce could not freeze the filesystems; all were thawed",
        Record::Thaw => "quiesce thawed @QUIESCE_MOUNT@",
        Record::Window => "the freeze window closed",
        Record::SnapshotProgress => "the snapshot command is still running",
        Record::SnapshotExit => "the snapshot command ended",
        Record::EmergencyThaw => "quiesce thaw: @QUIESCE_MOUNT@",
        Record::TrailOverflow => "audit records were dropped while the trail was held",
        Record::Log => "quiesce log message",
        Record::GroupJoin => "joined round @QUIESCE_ROUND@ of consistency group @QUIESCE_GROUP@",
        Record::GroupBarrier => "group @QUIESCE_GROUP@: every member passed @QUIESCE_STAGE@",
        Record::GroupAbort => {
            "group @QUIESCE_GROUP@ aborted at @QUIESCE_STAGE@ by @QUIESCE_MEMBER@"
        }
        Record::GroupProof => "group @QUIESCE_GROUP@: common instant @QUIESCE_HOLDS@",
        Record::RunEnd => "quiesce @QUIESCE_PHASE@ finished: @QUIESCE_RESULT@",
    }
}

/// What the record means, in a few sentences.
fn body(kind: Record) -> &'static str {
    match kind {
        Record::RunStart => "A run of quiesce began. Every record of the same run carries the same QUIESCE_OP, which is also the operationId of the status document (quiesce --json) and of /var/lib/quiesce/last-<operation>.json. QUIESCE_CAPEFF lists the runner's effective capabilities.",
        Record::Check => "One check of the pre-check, in the order of the Azure Backup extension: the configuration file, then each script. QUIESCE_SHA256 is the SHA-256 of the checked file. A failed check names the error (QUIESCE_ERROR, QUIESCE_CODE); the first failure is the pre-check result, and continueBackupOnFailure decides whether the backup goes on.",
        Record::CheckWarning => "The pre-check accepted the configuration but found something worth fixing: an unknown key, a clamped timeout, an insecure but tolerated setting. Nothing failed.",
        Record::SandboxDisabled => "quiesce was started with --no-sandbox: pre- and post-scripts run as root with every capability, without no_new_privs, rlimits or the seccomp filter. Remove --no-sandbox unless a script has been shown to need it, and write a policy (/etc/quiesce/policy.json) that grants only what it needs instead.",
        Record::ScriptStart => "A script attempt started. QUIESCE_SCRIPT is its path, QUIESCE_SHA256 the SHA-256 of the file that ran, QUIESCE_ARGV its arguments, QUIESCE_PID its process id; the record also lists what the script holds under the sandbox policy.",
        Record::ScriptExit => "A script attempt ended: its exit status or signal, its duration, whether it ran past timeoutInSeconds, and which of its processes quiesce killed. A failed attempt is retried as configured; the last one decides the phase.",
        Record::ScriptOutput => "A capped excerpt of what the script wrote to stdout or stderr, at debug priority.",
        Record::ScriptProgress => "The script is still running; the record repeats at each poll interval until it ends or reaches timeoutInSeconds.",
        Record::ScriptSpawnFailed => "The script could not be executed at all (exec failed, sandbox set-up failed, fork failed). The message says which step failed.",
        Record::HolderRecorded => "The pre-script left a process running on purpose (for example a session holding a database lock during the freeze). quiesce records it and ends it after the post phase.",
        Record::HolderTerminated => "A process the pre-script left running was ended after the post-script, as the pre-script's contract says.",
        Record::Recovery => "A runner died with filesystems frozen, and this run found its recovery record and thawed them before doing anything else. Find out why the earlier runner died (kernel log, OOM killer, a kill by an operator).",
        Record::PostRecovery => "A run started a pre-script and did not live to run its post-script (the runner was killed, the machine rebooted, or a separate quiesce post never came). quiesce ran that post-script now, under the same checks, sandbox and supervision, with QUIESCE_RECOVERY set to runner-died, reboot or post-overdue, so the application is resumed without anyone acting. Post-scripts must therefore be idempotent. If the script or its configuration changed since the pre-script, nothing runs and the pending record is kept: run the post-script's resume step by hand, then remove the record named in the message.",
        Record::PostUnsettled => "The post-script of a pending record ran, but the record could not be removed from the state directory (/var/lib/quiesce, --state-dir): its filesystem is read-only or failing. So that the post-script never runs a second time as a recovery, the record is marked settled in the run directory (/run/quiesce, settled-<record>), and every later run and quiesce recover skip it and retry the removal. The mark lives on tmpfs: make the state directory writable (or remove the record named in the message) before the next reboot, or the recovery at boot runs the post-script again.",
        Record::PostSettled => "Before a pre-script starts, quiesce records its post-script as pending, so that the post-script still runs if the runner dies (see the post-recovery record). This run's own post-script has now run, so that record was removed: the normal end of every pre/post pair, in one snapshot or in a separate quiesce post. QUIESCE_SETTLED is how many records were removed. Nothing was recovered and nothing needs doing.",
        Record::Freeze => "One filesystem was frozen (FIFREEZE): mount, device, type and how long the ioctl took. Writes to it block until the thaw.",
        Record::FreezeComplete => "Every planned filesystem is frozen; the snapshot command runs now, bounded by --max-freeze.",
        Record::FreezeFailed => "Freezing failed; every filesystem already frozen was thawed, in reverse order, before this record was written.",
        Record::Thaw => "One filesystem was thawed (FITHAW) and how long it was frozen. Records of the window are held in memory while filesystems are frozen and sent after the last thaw, so they reach the journal late but carry the event's time (QUIESCE_TIME).",
        Record::Window => "The freeze window closed: QUIESCE_WINDOWMS is the total time filesystems were frozen.",
        Record::SnapshotProgress => "The snapshot command is still running inside the freeze window.",
        Record::SnapshotExit => "The snapshot command ended: exit status or signal and duration. A non-zero exit means no snapshot was taken.",
        Record::EmergencyThaw => "quiesce thaw thawed (or failed to thaw) a mount recorded as frozen by a dead runner, or named with --mount.",
        Record::TrailOverflow => "More records were produced while filesystems were frozen than the hold queue keeps; the excess was dropped and counted. The status document and the metric quiesce_last_run_trail_records_dropped say how many.",
        Record::Log => "A warning or error from quiesce or one of its libraries that is not one of the audit events; QUIESCE_TARGET names where it came from.",
        Record::GroupJoin => "This member joined the open round of its consistency group (SPEC §11) in one etcd transaction; QUIESCE_REVISION is the etcd revision of its joined key, written under its own lease. The barriers follow: every member joined, pre-scripts done, frozen, snapshot commands done.",
        Record::GroupBarrier => "Every member of the round reached the barrier QUIESCE_STAGE (joined, pre, frozen or snapshot). QUIESCE_REVISION is this member's own key, QUIESCE_PASSEDREVISION the etcd revision at which every member's key was seen. Records of the frozen and snapshot barriers are sent after the thaw.",
        Record::GroupAbort => "The round aborted: QUIESCE_MEMBER failed, timed out, never joined or lost its lease at QUIESCE_STAGE (QUIESCE_REASON). Every member thaws and runs its post-scripts at once; no member reports a consistent group snapshot. Fix the member named and take the group's snapshot again.",
        Record::GroupProof => "After the thaw, the round's keys read once more: the common instant holds when every member's frozen key (QUIESCE_LASTFROZEN, the latest) is older than the first thaw key (QUIESCE_FIRSTTHAW) in etcd's single revision order; clocks are not trusted. A round where it does not hold is never reported as a consistent group.",
        Record::RunEnd => "The run ended. QUIESCE_RESULT is success, degraded or failure, QUIESCE_CONSISTENCY the consistency of the snapshot, and QUIESCE_ERRORS every error name with its code, in pre-check order. The same result is kept in /var/lib/quiesce/last-<operation>.json and in the Prometheus textfile quiesce.prom.",
    }
}

/// The errors of the table (SPEC.md §4) a record of this kind can report.
fn errors(kind: Record) -> &'static [ErrorCode] {
    use ErrorCode::*;
    match kind {
        Record::Check => &[
            PreScriptNotFound,
            PostScriptNotFound,
            IncorrectPluginhostFile,
            IncorrectJSONConfigFile,
            InsufficientPermissionforPreScript,
            InsufficientPermissionforPostScript,
            ScriptChecksumMismatch,
            TooManyOpenFiles,
        ],
        Record::ScriptExit => &[
            PreScriptExecutionFailed,
            PostScriptExecutionFailed,
            PreScriptTimeout,
            PostScriptTimeout,
        ],
        Record::ScriptSpawnFailed => &[
            PreScriptExecutionFailed,
            PostScriptExecutionFailed,
            TooManyOpenFiles,
        ],
        Record::PostRecovery => &[
            PostScriptExecutionFailed,
            PostScriptTimeout,
            IncorrectJSONConfigFile,
            ScriptChecksumMismatch,
        ],
        Record::FreezeFailed => &[FsFreezeFailed, FsFreezeTimeout, UnableToOpenMount],
        Record::Window => &[FsFreezeTimeout],
        Record::SnapshotExit => &[SnapshotCommandFailed, FsFreezeTimeout],
        Record::EmergencyThaw | Record::Recovery => &[FsFreezeFailed],
        Record::GroupJoin => &[IncorrectGroupFile, GroupUnreachable, GroupRoundClosed],
        Record::GroupAbort | Record::GroupProof => &[GroupAborted],
        Record::RunEnd => &ErrorCode::ALL,
        _ => &[],
    }
}

/// The whole catalog file.
pub fn render() -> String {
    let mut out = String::from(
        "#  quiesce: journal catalog of the audit trail (catalog(7) format).\n\
         #  Generated from src/trail/catalog.rs; one entry per MESSAGE_ID of\n\
         #  src/trail/record.rs. Installed to /usr/lib/systemd/catalog/;\n\
         #  systemd's package triggers rebuild the catalog database.\n",
    );
    for kind in Record::ALL {
        let _ = write!(
            out,
            "\n-- {}\nSubject: {}\nDefined-By: quiesce\nSupport: {SUPPORT}\n\n{}\n",
            kind.message_id(),
            subject(kind),
            body(kind),
        );
        let errs = errors(kind);
        if !errs.is_empty() {
            out.push_str("\nWhat to do, by error (QUIESCE_ERROR / QUIESCE_CODE):\n");
            for e in errs {
                let _ = writeln!(out, "  {e}: {}.", e.action());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/quiesce.catalog");

    /// The `-- ID` lines of a catalog, in order.
    fn ids(text: &str) -> Vec<&str> {
        text.lines().filter_map(|l| l.strip_prefix("-- ")).collect()
    }

    #[test]
    fn every_message_id_is_valid_unique_and_in_the_catalog() {
        let mut seen = HashSet::new();
        for kind in Record::ALL {
            let id = kind.message_id();
            assert!(
                id.len() == 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{kind:?}: MESSAGE_ID {id} is not 32 lowercase hex digits"
            );
            assert!(seen.insert(id), "{kind:?}: MESSAGE_ID {id} twice");
            assert_eq!(Record::from_message_id(id), Some(kind));
        }
        if std::env::var_os("QUIESCE_WRITE_CATALOG").is_some() {
            std::fs::write(FILE, render()).unwrap();
        }
        let on_disk = std::fs::read_to_string(FILE).unwrap();
        let listed: HashSet<&str> = ids(&on_disk).into_iter().collect();
        for kind in Record::ALL {
            assert!(
                listed.contains(kind.message_id()),
                "{kind:?} ({}) has no entry in packaging/quiesce.catalog",
                kind.message_id()
            );
        }
        assert_eq!(
            on_disk,
            render(),
            "packaging/quiesce.catalog is out of date: QUIESCE_WRITE_CATALOG=1 cargo test --lib catalog"
        );
    }

    #[test]
    fn failing_records_carry_the_error_tables_actions() {
        let text = render();
        for e in ErrorCode::ALL {
            assert!(text.contains(e.action()), "{e}: action missing");
        }
    }
}
