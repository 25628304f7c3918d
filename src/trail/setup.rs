//! How the trail is set up for a run: where the records go (`--trail`,
//! the sockets, the facility), the run's names, and what can go wrong.

use std::path::{Path, PathBuf};

use super::journal::DEFAULT_JOURNAL_SOCKET;
use super::sink::SinkKind;
use super::syslog::Facility;

/// Where records go unless `--syslog-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// What can go wrong setting up the trail. Sending never fails: see
/// [`DeliveryReport`](super::DeliveryReport).
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("unknown syslog facility {0:?} (expected auth, authpriv, daemon, user, syslog or local0..local7)")]
    UnknownFacility(String),
    #[error("unknown trail {0:?} (expected auto, journal, syslog or both)")]
    UnknownMode(String),
    /// Another `log::Log` was installed first. The trail is configured anyway:
    /// [`event`](super::event) and [`human`](super::human) work, `log`
    /// macros do not reach it.
    #[error(
        "another logger already owns the log facade; log macros will not reach the audit trail"
    )]
    LoggerTaken,
}

/// Where the records go (`--trail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrailMode {
    /// The journal when its socket exists, else syslog.
    #[default]
    Auto,
    Journal,
    Syslog,
    Both,
}

impl std::str::FromStr for TrailMode {
    type Err = TrailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TrailMode::Auto,
            TrailMode::Journal,
            TrailMode::Syslog,
            TrailMode::Both,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| TrailError::UnknownMode(s.to_owned()))
    }
}

impl TrailMode {
    /// The name `--trail` takes.
    pub fn name(self) -> &'static str {
        match self {
            TrailMode::Auto => "auto",
            TrailMode::Journal => "journal",
            TrailMode::Syslog => "syslog",
            TrailMode::Both => "both",
        }
    }

    /// The sinks this mode means on this host: `auto` looks for the journal
    /// socket once, when the trail is set up.
    pub(super) fn sinks(self, journal_socket: &Path) -> &'static [SinkKind] {
        match self {
            TrailMode::Auto if is_socket(journal_socket) => &[SinkKind::Journal],
            TrailMode::Auto | TrailMode::Syslog => &[SinkKind::Syslog],
            TrailMode::Journal => &[SinkKind::Journal],
            TrailMode::Both => &[SinkKind::Journal, SinkKind::Syslog],
        }
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// How the trail is set up for one run.
#[derive(Debug, Clone)]
pub struct TrailConfig {
    /// The unix datagram socket of the local syslog daemon.
    pub socket: PathBuf,
    /// journald's native socket (`--journal-socket`).
    pub journal_socket: PathBuf,
    pub mode: TrailMode,
    pub facility: Facility,
    /// Shared by every record and the status JSON (`operationId`).
    pub operation_id: String,
    /// APP-NAME and `SYSLOG_IDENTIFIER`; `quiesce` unless set.
    pub app_name: Option<String>,
    /// `QUIESCE_APP`: the configuration's application (appName, else
    /// pluginName) once known; see
    /// [`set_application`](super::set_application).
    pub application: String,
    /// `-v`: every audit record is also echoed as a human line on stderr.
    pub verbose: bool,
}

impl TrailConfig {
    /// Defaults of SPEC.md §2/§9: `--trail auto`, `/dev/log`, facility
    /// `authpriv`.
    pub fn new(operation_id: impl Into<String>) -> Self {
        TrailConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            journal_socket: PathBuf::from(DEFAULT_JOURNAL_SOCKET),
            mode: TrailMode::default(),
            facility: Facility::default(),
            operation_id: operation_id.into(),
            app_name: None,
            application: String::new(),
            verbose: false,
        }
    }
}
