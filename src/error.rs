//! The error table of SPEC.md §4 and the exit-code contract of §2.
//!
//! Operators already know these names from the Azure Backup extension's
//! troubleshooting table; they appear unchanged in the status JSON, the audit
//! trail and the human output, always with the recommended action.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

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
    WorkloadPreFailed,
    WorkloadConfigError,
    WorkloadInvalidRole,
    WorkloadInvalidName,
    WorkloadPostFailed,
    WorkloadNoCredentials,
    WorkloadConnectionError,
    WorkloadQuiescingError,
    WorkloadQuiescingTimeout,
    WorkloadNotCovered,
    FreezeAlreadyHeld,
    NoHeldFreeze,
    HeldFreezeExpired,
    AgentHookMissing,
    IncorrectGroupFile,
    GroupUnreachable,
    GroupRoundClosed,
    GroupAborted,
}

impl ErrorCode {
    /// Every row, in table order (used by docs and tests).
    pub const ALL: [ErrorCode; 34] = [
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
        ErrorCode::WorkloadPreFailed,
        ErrorCode::WorkloadConfigError,
        ErrorCode::WorkloadInvalidRole,
        ErrorCode::WorkloadInvalidName,
        ErrorCode::WorkloadPostFailed,
        ErrorCode::WorkloadNoCredentials,
        ErrorCode::WorkloadConnectionError,
        ErrorCode::WorkloadQuiescingError,
        ErrorCode::WorkloadQuiescingTimeout,
        ErrorCode::WorkloadNotCovered,
        ErrorCode::FreezeAlreadyHeld,
        ErrorCode::NoHeldFreeze,
        ErrorCode::HeldFreezeExpired,
        ErrorCode::AgentHookMissing,
        ErrorCode::IncorrectGroupFile,
        ErrorCode::GroupUnreachable,
        ErrorCode::GroupRoundClosed,
        ErrorCode::GroupAborted,
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
            WorkloadPreFailed => "WorkloadPreFailed",
            WorkloadConfigError => "WorkloadConfigError",
            WorkloadInvalidRole => "WorkloadInvalidRole",
            WorkloadInvalidName => "WorkloadInvalidName",
            WorkloadPostFailed => "WorkloadPostFailed",
            WorkloadNoCredentials => "WorkloadNoCredentials",
            WorkloadConnectionError => "WorkloadConnectionError",
            WorkloadQuiescingError => "WorkloadQuiescingError",
            WorkloadQuiescingTimeout => "WorkloadQuiescingTimeout",
            WorkloadNotCovered => "WorkloadNotCovered",
            FreezeAlreadyHeld => "FreezeAlreadyHeld",
            NoHeldFreeze => "NoHeldFreeze",
            HeldFreezeExpired => "HeldFreezeExpired",
            AgentHookMissing => "AgentHookMissing",
            IncorrectGroupFile => "IncorrectGroupFile",
            GroupUnreachable => "GroupUnreachable",
            GroupRoundClosed => "GroupRoundClosed",
            GroupAborted => "GroupAborted",
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
            WorkloadPreFailed => 500,
            WorkloadConfigError => 501,
            WorkloadInvalidRole => 502,
            WorkloadInvalidName => 503,
            WorkloadPostFailed => 504,
            WorkloadNoCredentials => 505,
            WorkloadConnectionError => 506,
            WorkloadQuiescingError => 509,
            WorkloadQuiescingTimeout => 510,
            SnapshotCommandFailed
            | TooManyOpenFiles
            | WorkloadNotCovered
            | FreezeAlreadyHeld
            | NoHeldFreeze
            | HeldFreezeExpired
            | AgentHookMissing
            | IncorrectGroupFile
            | GroupUnreachable
            | GroupRoundClosed
            | GroupAborted => return None,
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
            WorkloadPreFailed => "the workload's pre step failed, so the backup might not be application-consistent",
            WorkloadConfigError => "the workload settings (the application's \"workload\"/\"connection\", or workload.conf) could not be read or are insecure",
            WorkloadInvalidRole => "workload.conf names a role quiesce does not run",
            WorkloadInvalidName => "the workload names a database quiesce has no method for (oracle is refused until it can be tested against a real server)",
            WorkloadPostFailed => "the workload's post step could not release what its pre step held on the same session",
            WorkloadNoCredentials => "the database refused the workload's credentials, or none could be given to it",
            WorkloadConnectionError => "the database server could not be reached",
            WorkloadQuiescingError => "a statement of the workload's method failed; nothing was left held",
            WorkloadQuiescingTimeout => "the workload's method did not complete in time; its session was closed, so nothing was left held",
            WorkloadNotCovered => "a file of the database is not on a filesystem frozen in the window, so the snapshot cannot be application-consistent for it",
            FreezeAlreadyHeld => {
                "a held freeze (hook pre) is already in place, so a second one was refused; nothing new was run or frozen"
            }
            NoHeldFreeze => {
                "no held freeze was in place for this hook post call: none was made, or its holding process died and the watchdog thawed"
            }
            HeldFreezeExpired => {
                "the held freeze reached --max-freeze before its post call and was thawed, so the snapshot may not be application-consistent"
            }
            AgentHookMissing => {
                "the guest agent that drives the snapshot is missing or not set up to call quiesce, so no script runs around its freeze"
            }
            IncorrectGroupFile => {
                "the consistency group's file (or a TLS file it names) is missing, insecure or malformed, so the group's round cannot be joined"
            }
            GroupUnreachable => {
                "no etcd endpoint of the consistency group answered, so the round could not be joined and nothing was frozen"
            }
            GroupRoundClosed => {
                "the group's round had already begun its barriers (or this member was already in it), so this run did not join"
            }
            GroupAborted => {
                "the consistency group's round aborted (a member failed, timed out, never joined or lost its lease), so no member's snapshot is a consistent group snapshot"
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
                "fix the file or directory the message names: root-owned, not group- or world-writable, well-formed"
            }
            IncorrectJSONConfigFile => {
                "fix what the message names in the configuration: the file's owner and mode (root, 600), its JSON, a key, or the apps directory"
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
            SnapshotCommandFailed => {
                "check the snapshot command's output (phases.snapshot.stderrTail in the status)"
            }
            TooManyOpenFiles => {
                "raise the descriptor limit quiesce runs under (LimitNOFILE= of its unit, ulimit -n of its caller), or find what leaks descriptors into it or exhausts the system's (fs.file-max)"
            }
            WorkloadPreFailed => "check the workload's message in the status (stderr tail) and the database's log",
            WorkloadConfigError => "fix what the message names in the workload settings: the file's owner and mode (root, not group- or world-writable), a key or its value",
            WorkloadInvalidRole => "set role = master in workload.conf, or leave it out",
            WorkloadInvalidName => "name postgres, mariadb or mysql, or pause that database with pre/post scripts",
            WorkloadPostFailed => "check the database now: the server releases a lock when its session ends, and the message says whether it has",
            WorkloadNoCredentials => "give the connection a root-only (0600) option file or passfile, or an osUser the database trusts by peer authentication",
            WorkloadConnectionError => "check that the server runs and that the connection's socket, host and port are its own",
            WorkloadQuiescingError => "check the statement's error in the status and the database user's privileges (CHECKPOINT, BACKUP STAGE, FLUSH TABLES WITH READ LOCK)",
            WorkloadQuiescingTimeout => "find what holds the lock the method waits for (a long transaction or DDL), or raise timeoutInSeconds",
            WorkloadNotCovered => "freeze every filesystem holding the database's files in the same run (--mount, or MountsToSkip), or move them",
            FreezeAlreadyHeld => {
                "let the agent's post call end the held freeze first (or wait for --max-freeze); two snapshots of one VM must not overlap"
            }
            NoHeldFreeze => {
                "call post only after a pre that succeeded; if the holding process died, the trail and `quiesce check` say why"
            }
            HeldFreezeExpired => {
                "raise --max-freeze in the hook's wrapper, or find why the agent's post call came late"
            }
            AgentHookMissing => {
                "install the agent and quiesce's wrapper for it as the message says (README: every agent's hook)"
            }
            IncorrectGroupFile => {
                "fix the group file the message names (root-owned, 600, the SPEC §11 keys) or the TLS file it names (the key 600, root's)"
            }
            GroupUnreachable => {
                "check the group's endpoints, its TLS files and the network path to etcd (`quiesce check --group NAME`)"
            }
            GroupRoundClosed => {
                "start every member at about the same time, within joinSeconds; run this member again for the next round"
            }
            GroupAborted => {
                "see group.abort in the status: the member, the barrier and the reason; fix that member and take the group's snapshot again"
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

/// A failure found by a check or a phase: the table row, the detail that
/// names the file, the field or the rule, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    /// The fix, chosen where the failure is found from what failed. The
    /// rows are coarse — 305 is a missing file, a mode, a key or an apps
    /// directory — and each of those has its own fix.
    pub fix: Fix,
}

impl Problem {
    /// A problem whose row's action is the fix (see [`Fix::Row`]).
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            fix: Fix::Row,
        }
    }

    /// The same problem with the fix for what failed.
    pub fn with_fix(mut self, fix: Fix) -> Self {
        self.fix = fix;
        self
    }

    /// The recommended action: this failure's fix.
    pub fn action(&self) -> String {
        self.fix.action(self.code)
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

/// The installed sample configuration, named when a config is missing.
pub const SAMPLE_CONFIG: &str = "/usr/share/doc/quiesce/examples/VMSnapshotScriptPluginConfig.json";

/// What the operator does about one failure: the action printed with it
/// (status `errors[].action`, the human `action:` line, the trail). One
/// variant per kind of fix, carrying the file, key or mount it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// The error table's action for the row: for failures whose every
    /// cause has the same fix (a snapshot command that failed).
    Row,
    /// quiesce was run without root: freezing needs `CAP_SYS_ADMIN`, and
    /// its state and run directories must be root's.
    RunAsRoot,
    /// A configuration file does not exist.
    CreateConfig(PathBuf),
    /// A file `--policy` names does not exist.
    NamedPolicyMissing(PathBuf),
    /// A trusted file's owner or mode: `chown root:root`, `chmod MODE`.
    OwnerMode { path: PathBuf, mode: &'static str },
    /// A directory above a trusted file, or a trusted directory itself,
    /// is not root-owned or is writable by group or others.
    Directory(PathBuf),
    /// A state or run directory cannot be created (`option` names another).
    CreateDirectory { path: PathBuf, option: &'static str },
    /// A trusted directory (apps, state, run) is a symbolic link or not a
    /// directory.
    RealDirectory(PathBuf),
    /// A trusted path is a symbolic link.
    Symlink(PathBuf),
    /// A path names something other than a regular file.
    NotRegular(PathBuf),
    /// A file could not be opened or read.
    Unreadable(PathBuf),
    /// A file is larger than its limit.
    TooLarge(PathBuf),
    /// A configuration file is not one valid JSON object.
    Json(PathBuf),
    /// A key of a configuration file (the message says what is wrong).
    Key { path: PathBuf, key: String },
    /// An unknown key that is a near miss of a known one.
    Rename {
        path: PathBuf,
        key: String,
        known: &'static str,
    },
    /// The plugin-host file's content: its line or key is in the message.
    HostFile(PathBuf),
    /// The sandbox policy's content: its field is in the message.
    Policy(PathBuf),
    /// A script is not where its key says (`key` is
    /// `preScriptLocation`/`postScriptLocation`; `path` may be empty).
    PlaceScript { key: String, path: PathBuf },
    /// A script's pin does not match (`key` is `preScriptSha256`…).
    Pin { key: String, path: PathBuf },
    /// A script failed: its stderr (the last lines are printed with the
    /// error) and the last result file that keeps its whole tail.
    ScriptLog {
        phase: &'static str,
        last_result: Option<PathBuf>,
    },
    /// A script could not be started (exec, interpreter, sealed copy).
    ScriptStart(PathBuf),
    /// A script's path named another file when it was started than when
    /// it was checked.
    ScriptChanged(PathBuf),
    /// A script ran past `timeoutInSeconds` of this config.
    Timeout {
        phase: &'static str,
        config: PathBuf,
    },
    /// Another run (or the extension) holds the freeze, pid if known.
    Wait(Option<i32>),
    /// A filesystem was frozen by another tool.
    FrozenElsewhere(PathBuf),
    /// A filesystem refused to freeze.
    Unfreezable(PathBuf),
    /// A mount to freeze is gone or hidden.
    Mount(PathBuf),
    /// A mount may still be frozen.
    Thaw,
    /// `quiesce thaw` could not thaw this mount.
    ThawByHand(PathBuf),
    /// `quiesce thaw` without `--mount` cannot act now: name the mounts.
    ThawNamed,
    /// A signal stopped the run (everything was thawed).
    Interrupted(i32),
    /// The freeze window could not be set up; nothing was frozen.
    WindowSetup,
    /// The runner could not thaw by its deadline (stopped, stuck, starved):
    /// the freeze did not hold for the whole window.
    RunnerStalled,
    /// Discovery found nothing to freeze.
    NameMounts,
    /// Cannot happen on a working system: a bug to report.
    Report,
    /// The snapshot command could not be found or started.
    SnapshotCommand(String),
}

impl Fix {
    /// The action, as said to the operator. `code` is the row, for
    /// [`Fix::Row`].
    pub fn action(&self, code: ErrorCode) -> String {
        match self {
            Fix::Row => code.action().to_string(),
            Fix::RunAsRoot => "run quiesce as root (sudo quiesce …): freezing needs CAP_SYS_ADMIN, and its state and run directories must be root's".into(),
            _ => self
                .file_action()
                .or_else(|| self.run_action())
                .unwrap_or_else(|| code.action().to_string()),
        }
    }

    /// The fixes of a file or directory that decides what runs.
    fn file_action(&self) -> Option<String> {
        use Fix::*;
        let d = |p: &PathBuf| p.display().to_string();
        Some(match self {
            CreateConfig(p) => format!(
                "create {} (owner root, mode 600) from the sample {SAMPLE_CONFIG}, or name the configuration with --config",
                d(p)
            ),
            NamedPolicyMissing(p) => format!(
                "--policy names {}, which does not exist: give the policy's real path, or leave --policy out to use /etc/quiesce/policy.json or the built-in policy",
                d(p)
            ),
            OwnerMode { path, mode } => {
                format!("chown root:root {0} && chmod {mode} {0}", d(path))
            }
            Directory(p) => format!(
                "chown root {0} && chmod go-w {0}: the directories that decide what runs as root must be root's alone",
                d(p)
            ),
            CreateDirectory { path, option } => format!(
                "create {} (owner root, mode 700) or name another directory with {option}",
                d(path)
            ),
            RealDirectory(p) => format!(
                "make {} a real directory, owned by root, not a symbolic link",
                d(p)
            ),
            Symlink(p) => format!(
                "configure the real path instead of the symbolic link {}",
                d(p)
            ),
            NotRegular(p) => format!("{} must be a regular file: point the setting at the file itself", d(p)),
            Unreadable(p) => format!(
                "check that root can read {} (the filesystem, and SELinux or AppArmor labels)",
                d(p)
            ),
            TooLarge(p) => format!("shrink {} below the limit the message names", d(p)),
            Json(p) => format!(
                "fix the JSON of {} where the message says (one object, each key once, UTF-8)",
                d(p)
            ),
            Key { path, key } => format!("fix \"{key}\" in {}", d(path)),
            Rename { path, key, known } => {
                format!("rename \"{key}\" to \"{known}\" in {}", d(path))
            }
            HostFile(p) => format!(
                "fix {} at the line or key the message names ([pre_post] section)",
                d(p)
            ),
            Policy(p) => format!(
                "fix {} at the field the message names (the shipped policy is /usr/share/quiesce/policies/script-policy.json)",
                d(p)
            ),
            _ => return None,
        })
    }

    /// The fixes of what failed while running: a script, the freeze.
    fn run_action(&self) -> Option<String> {
        use Fix::*;
        let d = |p: &PathBuf| p.display().to_string();
        Some(match self {
            PlaceScript { key, path } if path.as_os_str().is_empty() => {
                format!("set {key} to the script's absolute path")
            }
            PlaceScript { key, path } => format!(
                "put the script at {} (owner root, mode 700), or set {key} to where it is",
                d(path)
            ),
            Pin { key, path } => format!(
                "find out who changed {}; if the change is intended, set {key} to the SHA-256 the message gives",
                d(path)
            ),
            ScriptLog { phase, last_result } => match last_result {
                Some(f) => format!(
                    "read the {phase}-script's stderr: its last lines are above, its whole tail in {} (stderrTail) and in the audit trail",
                    d(f)
                ),
                None => format!(
                    "read the {phase}-script's stderr: its last lines are above, its whole tail in the status (stderrTail) and in the audit trail"
                ),
            },
            ScriptStart(p) => format!(
                "check that {} can be executed as the message says: its #! interpreter exists and passes the same checks (root-owned, not writable by others)",
                d(p)
            ),
            ScriptChanged(p) => format!(
                "find out what replaced {} between its check and its start (a deploy, a package update), then run again",
                d(p)
            ),
            Timeout { phase, config } => format!(
                "find what the {phase}-script waits for, or raise timeoutInSeconds in {}",
                d(config)
            ),
            Wait(Some(pid)) => format!(
                "wait for pid {pid} to finish its freeze (ps -p {pid}), then run again"
            ),
            Wait(None) => "wait for the other freeze to finish, then run again".into(),
            FrozenElsewhere(m) => format!(
                "find the tool that froze {0} (fsfreeze, xfs_freeze, a backup agent) and let it thaw; fsfreeze -u {0} only once nothing relies on the freeze",
                d(m)
            ),
            Unfreezable(m) => format!(
                "leave {} out (it cannot be frozen: name the other mounts with --mount, or list it in MountsToSkip)",
                d(m)
            ),
            Mount(m) => format!("check that {} is mounted and not hidden by a later mount", d(m)),
            Thaw => "run quiesce thaw, then check that every filesystem is writable".into(),
            ThawByHand(m) => format!(
                "thaw it by hand (fsfreeze -u {}); if that fails too, the kernel log (dmesg) says why",
                d(m)
            ),
            ThawNamed => "name the mounts to thaw now: quiesce thaw --mount M (repeatable)".into(),
            Interrupted(sig) => format!(
                "the run was stopped by signal {sig} (everything it froze was thawed): find out who sent it, then run again"
            ),
            WindowSetup => "nothing was frozen: check the limit the message names (threads, open files, memory, the watchdog), then run again".into(),
            RunnerStalled => "find what stopped or starved the runner during the window (SIGSTOP from a shell or a debugger, systemctl freeze of its unit, memory pressure); the snapshot is at most crash-consistent: take it again".into(),
            NameMounts => "name the filesystems with --mount; quiesce check -v says why each mount is skipped".into(),
            Report => "this should not happen: report it with the message and quiesce --version (nothing was run or frozen)".into(),
            SnapshotCommand(c) => format!("check that {c} is installed and executable by root, or give its absolute path"),
            _ => return None,
        })
    }
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

    /// One fix of every kind, with what its action must name.
    fn every_fix() -> Vec<(Fix, &'static str)> {
        let p = || PathBuf::from("/etc/x/thing");
        vec![
            (Fix::RunAsRoot, "run quiesce as root"),
            (Fix::CreateConfig(p()), "create /etc/x/thing"),
            (Fix::NamedPolicyMissing(p()), "--policy names /etc/x/thing"),
            (
                Fix::OwnerMode {
                    path: p(),
                    mode: "600",
                },
                "chown root:root /etc/x/thing && chmod 600 /etc/x/thing",
            ),
            (Fix::Directory(p()), "chmod go-w /etc/x/thing"),
            (
                Fix::CreateDirectory {
                    path: p(),
                    option: "--state-dir",
                },
                "--state-dir",
            ),
            (Fix::RealDirectory(p()), "make /etc/x/thing a real directory"),
            (Fix::Symlink(p()), "symbolic link /etc/x/thing"),
            (Fix::NotRegular(p()), "/etc/x/thing must be a regular file"),
            (Fix::Unreadable(p()), "root can read /etc/x/thing"),
            (Fix::TooLarge(p()), "shrink /etc/x/thing"),
            (Fix::Json(p()), "JSON of /etc/x/thing"),
            (
                Fix::Key {
                    path: p(),
                    key: "timeoutInSeconds".into(),
                },
                "fix \"timeoutInSeconds\" in /etc/x/thing",
            ),
            (
                Fix::Rename {
                    path: p(),
                    key: "fsFreezeEnabeld".into(),
                    known: "fsFreezeEnabled",
                },
                "rename \"fsFreezeEnabeld\" to \"fsFreezeEnabled\" in /etc/x/thing",
            ),
            (Fix::HostFile(p()), "fix /etc/x/thing at the line"),
            (Fix::Policy(p()), "fix /etc/x/thing at the field"),
            (
                Fix::PlaceScript {
                    key: "preScriptLocation".into(),
                    path: p(),
                },
                "put the script at /etc/x/thing",
            ),
            (
                Fix::PlaceScript {
                    key: "preScriptLocation".into(),
                    path: PathBuf::new(),
                },
                "set preScriptLocation to the script's absolute path",
            ),
            (
                Fix::Pin {
                    key: "preScriptSha256".into(),
                    path: p(),
                },
                "set preScriptSha256",
            ),
            (
                Fix::ScriptLog {
                    phase: "pre",
                    last_result: Some("/var/lib/quiesce/last-pre.json".into()),
                },
                "pre-script's stderr: its last lines are above, its whole tail in /var/lib/quiesce/last-pre.json",
            ),
            (Fix::ScriptStart(p()), "/etc/x/thing can be executed"),
            (Fix::ScriptChanged(p()), "replaced /etc/x/thing"),
            (
                Fix::Timeout {
                    phase: "pre",
                    config: p(),
                },
                "raise timeoutInSeconds in /etc/x/thing",
            ),
            (Fix::Wait(Some(42)), "wait for pid 42"),
            (Fix::Wait(None), "wait for the other freeze"),
            (Fix::FrozenElsewhere(p()), "fsfreeze -u /etc/x/thing"),
            (Fix::Unfreezable(p()), "leave /etc/x/thing out"),
            (Fix::Mount(p()), "/etc/x/thing is mounted"),
            (Fix::Thaw, "quiesce thaw"),
            (Fix::ThawByHand(p()), "fsfreeze -u /etc/x/thing"),
            (Fix::ThawNamed, "quiesce thaw --mount"),
            (Fix::Interrupted(15), "signal 15"),
            (Fix::WindowSetup, "nothing was frozen"),
            (Fix::NameMounts, "--mount"),
            (Fix::Report, "report it"),
            (Fix::SnapshotCommand("lvcreate".into()), "lvcreate is installed"),
        ]
    }

    #[test]
    fn every_fix_has_its_own_action_naming_what_failed() {
        for (fix, names) in every_fix() {
            for code in ErrorCode::ALL {
                let a = fix.action(code);
                assert!(a.contains(names), "{fix:?}: {a:?} lacks {names:?}");
                assert_ne!(a, code.action(), "{fix:?} falls back to the row");
            }
        }
        assert_eq!(
            Fix::Row.action(ErrorCode::FsFreezeTimeout),
            ErrorCode::FsFreezeTimeout.action()
        );
        let p = Problem::new(ErrorCode::IncorrectJSONConfigFile, "x")
            .with_fix(Fix::Json("/c.json".into()));
        assert!(p.action().contains("/c.json"));
    }
}
