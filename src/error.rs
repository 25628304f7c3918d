//! The error table of SPEC.md §4 and the exit-code contract of §2.
//!
//! Operators already know these names from the Azure Backup extension's
//! troubleshooting table; they appear unchanged in the status JSON, the audit
//! trail and the human output, always with the recommended action.

use serde::Serialize;
use std::fmt;

/// One row of the error table: a public name, the extension's numeric code
/// where it has one, the product document's message and recommended action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ErrorCode {
    PreScriptExecutionFailed,
    PostScriptExecutionFailed,
    PreScriptNotFound,
    PostScriptNotFound,
    IncorrectPluginhostFile,
    IncorrectJSONConfigFile,
    InsufficientPermissionforPreScript,
    InsufficientPermissionforPostScript,
    PreScriptTimeout,
    PostScriptTimeout,
    ScriptChecksumMismatch,
    FsFreezeFailed,
    FsFreezeTimeout,
    UnableToOpenMount,
    SnapshotCommandFailed,
    TooManyOpenFiles,
}

impl ErrorCode {
    /// Every row, in table order (used by docs and tests).
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::PreScriptExecutionFailed,
        ErrorCode::PostScriptExecutionFailed,
        ErrorCode::PreScriptNotFound,
        ErrorCode::PostScriptNotFound,
        ErrorCode::IncorrectPluginhostFile,
        ErrorCode::IncorrectJSONConfigFile,
        ErrorCode::InsufficientPermissionforPreScript,
        ErrorCode::InsufficientPermissionforPostScript,
        ErrorCode::PreScriptTimeout,
        ErrorCode::PostScriptTimeout,
        ErrorCode::ScriptChecksumMismatch,
        ErrorCode::FsFreezeFailed,
        ErrorCode::FsFreezeTimeout,
        ErrorCode::UnableToOpenMount,
        ErrorCode::SnapshotCommandFailed,
        ErrorCode::TooManyOpenFiles,
    ];

    /// The public name, exactly as the product document spells it.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            PreScriptExecutionFailed => "Pre-ScriptExecutionFailed",
            PostScriptExecutionFailed => "Post-ScriptExecutionFailed",
            PreScriptNotFound => "Pre-ScriptNotFound",
            PostScriptNotFound => "Post-ScriptNotFound",
            IncorrectPluginhostFile => "IncorrectPluginhostFile",
            IncorrectJSONConfigFile => "IncorrectJSONConfigFile",
            InsufficientPermissionforPreScript => "InsufficientPermissionforPre-Script",
            InsufficientPermissionforPostScript => "InsufficientPermissionforPost-Script",
            PreScriptTimeout => "Pre-ScriptTimeout",
            PostScriptTimeout => "Post-ScriptTimeout",
            ScriptChecksumMismatch => "ScriptChecksumMismatch",
            FsFreezeFailed => "FsFreezeFailed",
            FsFreezeTimeout => "FsFreezeTimeout",
            UnableToOpenMount => "UnableToOpenMount",
            SnapshotCommandFailed => "SnapshotCommandFailed",
            TooManyOpenFiles => "TooManyOpenFiles",
        }
    }

    /// The extension's numeric status code; `None` for rows it has no code for.
    pub fn code(self) -> Option<u16> {
        use ErrorCode::*;
        Some(match self {
            PreScriptExecutionFailed => 300,
            PostScriptExecutionFailed => 301,
            PreScriptNotFound => 302,
            PostScriptNotFound => 303,
            IncorrectPluginhostFile => 304,
            IncorrectJSONConfigFile => 305,
            InsufficientPermissionforPreScript => 306,
            InsufficientPermissionforPostScript => 307,
            PreScriptTimeout => 308,
            PostScriptTimeout => 309,
            ScriptChecksumMismatch => 312,
            FsFreezeFailed => 121,
            FsFreezeTimeout => 122,
            UnableToOpenMount => 123,
            SnapshotCommandFailed | TooManyOpenFiles => return None,
        })
    }

    /// The product document's error message.
    pub fn summary(self) -> &'static str {
        use ErrorCode::*;
        match self {
            PreScriptExecutionFailed => {
                "the pre-script returned an error, so the backup might not be application-consistent"
            }
            PostScriptExecutionFailed => {
                "the post-script returned an error that might affect the state of the application"
            }
            PreScriptNotFound => {
                "the pre-script was not found at the location given in the configuration file"
            }
            PostScriptNotFound => {
                "the post-script was not found at the location given in the configuration file"
            }
            IncorrectPluginhostFile => {
                "the plugin-host or policy file is damaged or insecure, so the scripts cannot run and the backup will not be application-consistent"
            }
            IncorrectJSONConfigFile => {
                "the VMSnapshotScriptPluginConfig.json file is incorrect, so the scripts cannot run and the backup will not be application-consistent"
            }
            InsufficientPermissionforPreScript | InsufficientPermissionforPostScript => {
                "to run scripts, root must own the file and every directory above it, and only the owner may have permissions on the file (700)"
            }
            PreScriptTimeout => "the application-consistent backup pre-script timed out",
            PostScriptTimeout => "the application-consistent backup post-script timed out",
            ScriptChecksumMismatch => {
                "the script's SHA-256 does not match the pin in the configuration file"
            }
            FsFreezeFailed => "freezing a filesystem failed; everything frozen was thawed",
            FsFreezeTimeout => {
                "a filesystem freeze did not complete in time, or the freeze window passed its deadline and was thawed"
            }
            UnableToOpenMount => "a mount point to freeze could not be opened",
            SnapshotCommandFailed => "the snapshot command failed, so no snapshot was taken",
            TooManyOpenFiles => {
                "quiesce ran out of file descriptors (EMFILE/ENFILE) while opening the file named; the file itself was not found at fault"
            }
        }
    }

    /// The recommended action for the operator.
    pub fn action(self) -> &'static str {
        use ErrorCode::*;
        match self {
            PreScriptExecutionFailed => "check the script's error log (stderr tail in the status and the audit trail)",
            PostScriptExecutionFailed => {
                "check the script's error log and the state of the application"
            }
            PreScriptNotFound => "make sure the pre-script exists at the path given in the configuration file, and the interpreter its #! line names",
            PostScriptNotFound => "make sure the post-script exists at the path given in the configuration file, and the interpreter its #! line names",
            IncorrectPluginhostFile => {
                "reinstall the file named in the message (root-owned, not group/world-writable, well-formed)"
            }
            IncorrectJSONConfigFile => {
                "fix the key named in the message, or start again from the sample VMSnapshotScriptPluginConfig.json (owner root, mode 600)"
            }
            InsufficientPermissionforPreScript | InsufficientPermissionforPostScript => {
                "chown root:root the script and its directories, chmod 700 the script, chmod go-w its directories; the same for the interpreter named in the message (chmod go-w), or name a root-owned interpreter by its absolute path"
            }
            PreScriptTimeout | PostScriptTimeout => {
                "check the script and raise timeoutInSeconds in VMSnapshotScriptPluginConfig.json"
            }
            ScriptChecksumMismatch => {
                "check who changed the script; if the change is intended, update the *ScriptSha256 pin"
            }
            FsFreezeFailed => "check the mount named in the message (already frozen by another tool? unsupported filesystem?)",
            FsFreezeTimeout => {
                "find what blocks the freeze or the snapshot command, or raise --max-freeze"
            }
            UnableToOpenMount => "check that the mount point exists and is mounted",
            SnapshotCommandFailed => "check the snapshot command's output in the status",
            TooManyOpenFiles => {
                "raise the descriptor limit quiesce runs under (LimitNOFILE= of its unit, ulimit -n of its caller), or find what leaks descriptors into it or exhausts the system's (fs.file-max)"
            }
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(code) => write!(f, "{} ({code})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A failure found by a check or a phase: the table row plus the detail that
/// names the file, the field or the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

/// Whether `e` is running out of file descriptors — the process's
/// (`EMFILE`) or the system's (`ENFILE`) — which is never the fault of the
/// file being opened.
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// `code` with `detail`, unless `cause` is running out of descriptors:
/// then that, said as what it is (issue 26), whatever was being opened.
pub fn problem_or_out_of_descriptors(
    code: ErrorCode,
    detail: impl fmt::Display,
    cause: Option<&std::io::Error>,
) -> Problem {
    match cause {
        Some(e) if is_out_of_descriptors(e) => out_of_descriptors(detail),
        _ => Problem::new(code, detail.to_string()),
    }
}

/// The problem of running out of descriptors while `doing`, with the
/// limit quiesce runs under, so that the operator sees what to raise.
pub fn out_of_descriptors(doing: impl fmt::Display) -> Problem {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(String::new(), |(soft, hard)| {
            format!(" (quiesce's RLIMIT_NOFILE: soft {soft}, hard {hard})")
        });
    Problem::new(ErrorCode::TooManyOpenFiles, format!("{doing}{limit}"))
}

/// The process's public exit contract (SPEC.md §2). The only place exit
/// numbers are written down in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The phase succeeded; `snapshot`: application-consistent.
    Success,
    /// Completed, but only filesystem- or crash-consistent.
    Degraded,
    /// The phase failed, or no snapshot was taken.
    Failure,
    /// Bad command line.
    Usage,
    /// A bug; everything was still thawed and reaped.
    Internal,
    /// Stopped by this signal, after thawing and cleaning up.
    Signal(i32),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Degraded => 1,
            Exit::Failure => 2,
            Exit::Usage => 64,
            Exit::Internal => 70,
            Exit::Signal(n) => 128 + n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_match_the_table() {
        let mut seen = std::collections::HashSet::new();
        for e in ErrorCode::ALL {
            if let Some(c) = e.code() {
                assert!(seen.insert(c), "duplicate code {c}");
            }
            assert!(!e.action().is_empty() && !e.summary().is_empty());
        }
        assert_eq!(
            ErrorCode::InsufficientPermissionforPostScript.name(),
            "InsufficientPermissionforPost-Script"
        );
        assert_eq!(ErrorCode::ScriptChecksumMismatch.code(), Some(312));
        assert_eq!(Exit::Signal(15).code(), 143);
    }
}
