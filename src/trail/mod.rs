//! The audit trail of SPEC.md §9 and the human output on stderr.
//!
//! Every record is one kind of the catalogue ([`Record`], `record.rs`: the
//! compliance contract) and goes to one or both sinks ([`TrailMode`],
//! `--trail`): a native journal entry on `/run/systemd/journal/socket`
//! (`journal.rs`: `MESSAGE_ID`, `QUIESCE_OP`, `QUIESCE_<KEY>`…; explained
//! by the catalog of `catalog.rs`), and/or one RFC 5424 record with the
//! structured-data element `[quiesce@32473 op="…" phase="…" key="value" …]`
//! on the local syslog socket (`/dev/log`, or `--syslog-socket PATH`; the
//! format is in `syslog.rs`). `auto`, the default, is the journal when its
//! socket exists: on systemd hosts `/dev/log` is journald's, which flattens
//! RFC 5424 structured data into MESSAGE.
//!
//! ```ignore
//! trail::event(Level::Info, Record::ScriptExit, "pre",
//!              &[("pid", pid.to_string()), ("exit", "0".into())], "pre-script exited 0");
//! ```
//!
//! The `log` facade reaches the trail too: records of target `audit` with a
//! `msgid` key-value naming a kind of the catalogue, and warnings and errors
//! of libraries (kind [`Record::Log`]).
//!
//! SPEC.md §6.5: nothing touches the frozen disk and sends never block
//! the window (the same rule for every sink). Between [`hold`] and [`release`] records and human lines are
//! queued in memory (time-stamped when the event happened) and nothing is
//! written anywhere, not even to a socket: stderr may be a file on the frozen
//! filesystem, and journald or a syslog daemon may write synchronously to one. [`release`]
//! sends the queue in order after the thaw.
//!
//! Why hand-written RFC 5424 and not the `syslog` crate (v7): its unix
//! transport is a *blocking* datagram socket that falls back to a blocking
//! stream socket, so a stalled daemon could block the caller; its structured
//! data is a `BTreeMap`, which reorders parameters (`op` and `phase` would not
//! come first) and does not sanitise SD-NAMEs; it stamps the time when the
//! record is formatted, whereas held records must carry the time of the event;
//! and it has no notion of holding. The format is ~100 lines here and every
//! byte that reaches a compliance team's SIEM is visible in this file.
//!
//! Receiving side: rsyslog's `imuxsock` parses the local socket with a
//! "special parser" for the traditional BSD format by default, which folds an
//! RFC 5424 record into MSG and replaces its timestamp with the time of
//! receipt. The socket input needs `useSpecialParser="off"` and
//! `ignoreTimestamp="off"` (tests/audit_syslog.rs shows a working config).

pub mod catalog;
mod journal;
mod record;
mod syslog;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use log::kv::{self, VisitSource};
use log::{Level, LevelFilter, Log, Metadata};

pub use journal::DEFAULT_JOURNAL_SOCKET;
pub use record::Record;
use syslog::{
    cap_value, connect, escape_controls, format_record, header_field, hostname, peer_gone,
};
pub use syslog::{rfc3339_micros, severity, Facility};

/// The `log` target whose records are audit events at every level. Records
/// from other targets (dependencies) reach the trail only at warn and error.
pub const AUDIT_TARGET: &str = "audit";

/// The SD-ID of our structured-data element (32473 is the IANA enterprise
/// number RFC 5612 reserves for documentation examples).
pub const SD_ID: &str = "quiesce@32473";

/// Where records go unless `--syslog-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// Upper bound of one record on the wire: rsyslog's default `maxMessageSize`.
/// rsyslog 8.2302 keeps a datagram of 8096 bytes whole and cuts a longer one
/// at byte 8096, wherever that falls (even inside a UTF-8 sequence, and past
/// our truncation mark); so we cut first, inside MSG, and say so.
pub const MAX_RECORD_BYTES: usize = 8096;

/// Upper bound of one SD-PARAM value before escaping (argv, paths, output tails).
pub const MAX_VALUE_BYTES: usize = 2 * 1024;

/// How many records and human lines [`hold`] keeps; beyond that they are
/// counted and dropped. The window is seconds long; this only stops a runaway
/// producer from growing memory without bound.
pub const MAX_HELD: usize = 10_000;

const MAX_OPERATION_ID_BYTES: usize = 128;

/// What can go wrong setting up the trail. Sending never fails: see
/// [`DeliveryReport`].
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("unknown syslog facility {0:?} (expected auth, authpriv, daemon, user, syslog or local0..local7)")]
    UnknownFacility(String),
    #[error("unknown trail {0:?} (expected auto, journal, syslog or both)")]
    UnknownMode(String),
    /// Another `log::Log` was installed first. The trail is configured anyway:
    /// [`event`] and [`human`] work, `log` macros do not reach it.
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
    fn sinks(self, journal_socket: &Path) -> &'static [SinkKind] {
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

/// One destination of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Journal,
    Syslog,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Journal => "journal",
            SinkKind::Syslog => "syslog",
        }
    }
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
    /// pluginName) once known; see [`set_application`].
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

/// What happened to the records of this run at one sink.
/// `sent + dropped` is every record submitted since [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDelivery {
    pub sink: SinkKind,
    /// Records the socket accepted.
    pub sent: u64,
    /// Records not delivered: socket buffer full (EAGAIN), hold queue full,
    /// too large for the socket, or the socket unavailable.
    pub dropped: u64,
    /// Why the socket could not be reached (first failure), e.g.
    /// `/dev/log: No such file or directory (os error 2)`.
    pub unavailable: Option<String>,
}

impl SinkDelivery {
    fn new(sink: SinkKind) -> SinkDelivery {
        SinkDelivery {
            sink,
            sent: 0,
            dropped: 0,
            unavailable: None,
        }
    }

    fn warning(&self) -> Option<String> {
        if self.dropped == 0 && self.unavailable.is_none() {
            return None;
        }
        let total = self.sent + self.dropped;
        let name = self.sink.name();
        let mut w = format!(
            "audit trail: {} of {total} {name} records not delivered",
            self.dropped
        );
        if let Some(why) = &self.unavailable {
            let _ = write!(w, " ({name} socket unavailable: {why})");
        }
        Some(w)
    }
}

/// What happened to the records of this run, for the status `warnings`:
/// the sum over the sinks, and each sink's own count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Deliveries the sockets accepted (a record sent to both sinks counts twice).
    pub sent: u64,
    /// Deliveries that failed, summed over the sinks.
    pub dropped: u64,
    /// The first sink's reason its socket could not be reached.
    pub unavailable: Option<String>,
    pub sinks: Vec<SinkDelivery>,
}

impl DeliveryReport {
    fn of(sinks: &[Sink]) -> DeliveryReport {
        let sinks: Vec<SinkDelivery> = sinks.iter().map(|s| s.report.clone()).collect();
        DeliveryReport {
            sent: sinks.iter().map(|s| s.sent).sum(),
            dropped: sinks.iter().map(|s| s.dropped).sum(),
            unavailable: sinks.iter().find_map(|s| s.unavailable.clone()),
            sinks,
        }
    }

    /// One line for the status `warnings`, or `None` when all went well.
    pub fn warning(&self) -> Option<String> {
        let lines: Vec<String> = self
            .sinks
            .iter()
            .filter_map(SinkDelivery::warning)
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

// ---------------------------------------------------------------------------
// The public entry points. All of them lock one global; none of them fails.

/// The trail of this process. `init` replaces it; the `log::Log` shim (which
/// the facade lets us install only once per process) forwards into it.
static TRAIL: Mutex<Option<Trail>> = Mutex::new(None);
static LOGGER: TrailLogger = TrailLogger;
/// Whether our shim owns the facade (decided once, at the first `init`).
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn trail() -> MutexGuard<'static, Option<Trail>> {
    // A panic elsewhere while holding the lock must not silence the trail.
    TRAIL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets up the trail for this run and installs the `log` shim (once per
/// process). Calling it again replaces the trail: the old one is released to
/// its socket first, so it must not be called inside a freeze window.
pub fn init(config: TrailConfig) -> Result<(), TrailError> {
    let new = Trail::new(config, HumanSink::Stderr);
    let old = trail().replace(new);
    if let Some(mut old) = old {
        old.release();
    }
    let installed = *INSTALLED.get_or_init(|| {
        let ok = log::set_logger(&LOGGER).is_ok();
        if ok {
            // Debug records of target "audit" (script output) always go to
            // the daemon, which filters; `enabled` drops the rest cheaply.
            log::set_max_level(LevelFilter::Trace);
        }
        ok
    });
    if installed {
        Ok(())
    } else {
        Err(TrailError::LoggerTaken)
    }
}

/// Names the application of records emitted from now on (`QUIESCE_APP`,
/// `app=`): the application whose work follows; empty for the run's own
/// records between the applications of several.
pub fn set_application(name: impl Into<String>) {
    if let Some(t) = trail().as_mut() {
        t.header.application = cap_value(&name.into(), MAX_OPERATION_ID_BYTES);
    }
}

/// Changes the operation id of records emitted from now on.
pub fn set_operation_id(id: impl Into<String>) {
    if let Some(t) = trail().as_mut() {
        t.header.operation_id = cap_value(&id.into(), MAX_OPERATION_ID_BYTES);
    }
}

/// Starts queueing: from now until [`release`] nothing is written anywhere.
/// Call it before the first freeze.
pub fn hold() {
    if let Some(t) = trail().as_mut() {
        t.held = true;
    }
}

/// Sends everything queued since [`hold`], in order, then resumes sending
/// immediately. Call it after the last thaw, on every path.
pub fn release() {
    if let Some(t) = trail().as_mut() {
        t.release();
    }
}

/// Holding the trail for as long as the guard lives: from [`Hold::start`]
/// (before the first freeze) nothing is written anywhere; dropping it
/// releases what was queued. The freeze window owns it, declared after the
/// window itself, so even while unwinding the release follows the thaw.
#[must_use = "the trail is released when the guard is dropped"]
pub struct Hold(());

impl Hold {
    pub fn start() -> Hold {
        hold();
        Hold(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        release();
    }
}

/// Whether records are being held.
pub fn is_held() -> bool {
    trail().as_ref().is_some_and(|t| t.held)
}

/// One human line on stderr, `quiesce: <line>`, held like the records.
/// Before [`init`] it is written directly.
pub fn human(line: impl AsRef<str>) {
    let line = escape_controls(line.as_ref());
    match trail().as_mut() {
        Some(t) => t.submit(Pending::Human(line)),
        None => HumanSink::Stderr.write(&line),
    }
}

/// One audit record without the macro syntax. Records before [`init`] are
/// discarded.
pub fn event(level: Level, kind: Record, phase: &str, params: &[(&str, String)], msg: &str) {
    let ev = Event {
        at: SystemTime::now(),
        level,
        kind,
        phase: Some(phase.to_owned()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), cap_value(v, MAX_VALUE_BYTES)))
            .collect(),
        msg: msg.to_owned(),
    };
    if let Some(t) = trail().as_mut() {
        t.record(ev);
    }
}

/// Delivery so far. Held records count once released.
pub fn delivery_report() -> DeliveryReport {
    trail()
        .as_ref()
        .map(|t| DeliveryReport::of(&t.sinks))
        .unwrap_or_default()
}

/// Releases what is held, removes the trail and returns its final report.
/// Records emitted afterwards are discarded; human lines go straight to stderr.
pub fn finish() -> DeliveryReport {
    let old = trail().take();
    match old {
        Some(mut t) => {
            t.release();
            DeliveryReport::of(&t.sinks)
        }
        None => DeliveryReport::default(),
    }
}

/// Test hook: forgets the trail and everything it holds, sending nothing.
#[doc(hidden)]
pub fn reset_for_tests() {
    trail().take();
}

// ---------------------------------------------------------------------------
// The `log` shim.

struct TrailLogger;

impl Log for TrailLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == AUDIT_TARGET || metadata.level() <= Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Everything is rendered before taking the lock: a Display impl that
        // logs would otherwise deadlock on it.
        let ev = Event::from_record(record);
        if let Some(t) = trail().as_mut() {
            t.record(ev);
        }
    }

    fn flush(&self) {}
}

/// One event, rendered to owned strings at the time it happened.
struct Event {
    at: SystemTime,
    level: Level,
    kind: Record,
    phase: Option<String>,
    params: Vec<(String, String)>,
    msg: String,
}

impl Event {
    fn from_record(record: &log::Record<'_>) -> Event {
        let mut ev = Event {
            at: SystemTime::now(),
            level: record.level(),
            kind: Record::Log,
            phase: None,
            params: Vec::new(),
            msg: record.args().to_string(),
        };
        if record.target() != AUDIT_TARGET {
            // A dependency's warning: keep where it came from.
            ev.params
                .push(("target".to_owned(), record.target().to_owned()));
        }
        let _ = record.key_values().visit(&mut CollectParams(&mut ev));
        ev
    }
}

struct CollectParams<'a>(&'a mut Event);

impl<'kvs> VisitSource<'kvs> for CollectParams<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let value = cap_value(&value.to_string(), MAX_VALUE_BYTES);
        match key.as_str() {
            // Only kinds of the catalogue: anything else stays a `log` record
            // that names what it claimed to be.
            "msgid" => match Record::from_msgid(&value) {
                Some(kind) => self.0.kind = kind,
                None => self.0.params.push(("msgid".to_owned(), value)),
            },
            "phase" => self.0.phase = Some(value),
            k => self.0.params.push((k.to_owned(), value)),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The trail: header fields, hold queue, socket, counters.

/// The parts of every record fixed for a run.
struct Header {
    facility: Facility,
    hostname: String,
    app_name: String,
    procid: String,
    operation_id: String,
    /// `QUIESCE_APP` in the journal, `app` in the RFC 5424 structured data.
    application: String,
}

enum Pending {
    /// One record, already in the format of each sink, in sink order.
    Record(Vec<Vec<u8>>),
    Human(String),
}

enum HumanSink {
    Stderr,
    #[cfg(test)]
    Memory(Vec<String>),
}

impl HumanSink {
    fn write(&mut self, line: &str) {
        match self {
            // Errors (closed stderr, EPIPE) are ignored: human output is a
            // courtesy, the status JSON and the trail are the record.
            HumanSink::Stderr => {
                let _ = writeln!(io::stderr().lock(), "quiesce: {line}");
            }
            #[cfg(test)]
            HumanSink::Memory(lines) => lines.push(line.to_owned()),
        }
    }
}

/// One destination: its socket (connected lazily, reconnected once when the
/// daemon went away) and what it delivered.
struct Sink {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    report: SinkDelivery,
}

impl Sink {
    fn new(kind: SinkKind, path: PathBuf) -> Sink {
        Sink {
            path,
            socket: None,
            report: SinkDelivery::new(kind),
        }
    }

    fn format(&self, header: &Header, ev: &Event) -> Vec<u8> {
        match self.report.sink {
            SinkKind::Syslog => format_record(header, ev),
            SinkKind::Journal => journal::format_entry(header, ev),
        }
    }

    /// One non-blocking send, reconnecting once if the daemon went away (a
    /// restarted rsyslog or journald leaves our connected socket pointing at
    /// a dead peer).
    fn send(&mut self, bytes: &[u8]) {
        for attempt in 0..2 {
            let sock = match self.socket.take() {
                Some(s) => s,
                None => match connect(&self.path) {
                    Ok(s) => s,
                    Err(e) => return self.unavailable(&e),
                },
            };
            let sent = match sock.send(bytes) {
                // Too large for one datagram: the journal takes it as a
                // sealed memfd; syslog has no such path (records are cut to
                // MAX_RECORD_BYTES before this, so it does not happen there).
                Err(e) if self.report.sink == SinkKind::Journal && journal::too_large(&e) => {
                    journal::send_memfd(&sock, bytes)
                }
                other => other.map(drop),
            };
            match sent {
                Ok(()) => {
                    self.socket = Some(sock);
                    self.report.sent += 1;
                    return;
                }
                // The daemon is behind: drop rather than wait (sudo-rs does
                // the same); the count goes into the status warnings.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || journal::too_large(&e) => {
                    self.socket = Some(sock);
                    self.report.dropped += 1;
                    return;
                }
                // The peer is gone: the socket is dropped here and the
                // next attempt connects afresh.
                Err(e) if attempt == 0 && peer_gone(&e) => continue,
                Err(e) => return self.unavailable(&e),
            }
        }
    }

    fn unavailable(&mut self, e: &io::Error) {
        self.report.dropped += 1;
        if self.report.unavailable.is_none() {
            self.report.unavailable = Some(format!("{}: {e}", self.path.display()));
        }
    }
}

struct Trail {
    header: Header,
    sinks: Vec<Sink>,
    verbose: bool,
    held: bool,
    queue: VecDeque<Pending>,
    overflow_records: u64,
    overflow_lines: u64,
    human_sink: HumanSink,
}

impl Trail {
    fn new(config: TrailConfig, human_sink: HumanSink) -> Trail {
        let app_name = config.app_name.as_deref().unwrap_or("quiesce");
        let sinks = config
            .mode
            .sinks(&config.journal_socket)
            .iter()
            .map(|&kind| match kind {
                SinkKind::Journal => Sink::new(kind, config.journal_socket.clone()),
                SinkKind::Syslog => Sink::new(kind, config.socket.clone()),
            })
            .collect();
        Trail {
            header: Header {
                facility: config.facility,
                hostname: header_field(&hostname(), 255),
                app_name: header_field(app_name, 48),
                procid: std::process::id().to_string(),
                operation_id: cap_value(&config.operation_id, MAX_OPERATION_ID_BYTES),
                application: cap_value(&config.application, MAX_OPERATION_ID_BYTES),
            },
            sinks,
            verbose: config.verbose,
            held: false,
            queue: VecDeque::new(),
            overflow_records: 0,
            overflow_lines: 0,
            human_sink,
        }
    }

    fn record(&mut self, ev: Event) {
        let echo = self.verbose.then(|| {
            escape_controls(&format!(
                "{} {} {}: {}",
                ev.level.as_str().to_ascii_lowercase(),
                ev.kind.msgid(),
                ev.phase.as_deref().unwrap_or("-"),
                ev.msg
            ))
        });
        let formatted = self
            .sinks
            .iter()
            .map(|s| s.format(&self.header, &ev))
            .collect();
        self.submit(Pending::Record(formatted));
        if let Some(line) = echo {
            self.submit(Pending::Human(line));
        }
    }

    fn submit(&mut self, item: Pending) {
        if !self.held {
            self.deliver(item);
            return;
        }
        // INVARIANT: while held, nothing leaves the process (SPEC.md §6.5).
        if self.queue.len() < MAX_HELD {
            self.queue.push_back(item);
            return;
        }
        match item {
            Pending::Record(_) => {
                self.overflow_records += 1;
                for sink in &mut self.sinks {
                    sink.report.dropped += 1;
                }
            }
            Pending::Human(_) => self.overflow_lines += 1,
        }
    }

    fn release(&mut self) {
        self.held = false;
        while let Some(item) = self.queue.pop_front() {
            self.deliver(item);
        }
        if self.overflow_records + self.overflow_lines > 0 {
            let msg = format!(
                "{} records and {} stderr lines dropped while held (limit {MAX_HELD})",
                self.overflow_records, self.overflow_lines
            );
            self.overflow_records = 0;
            self.overflow_lines = 0;
            let ev = Event {
                at: SystemTime::now(),
                level: Level::Warn,
                kind: Record::TrailOverflow,
                phase: None,
                params: Vec::new(),
                msg,
            };
            self.record(ev);
        }
    }

    fn deliver(&mut self, item: Pending) {
        match item {
            Pending::Record(per_sink) => {
                for (sink, bytes) in self.sinks.iter_mut().zip(per_sink) {
                    sink.send(&bytes);
                }
            }
            Pending::Human(line) => self.human_sink.write(&line),
        }
    }

    /// The summed delivery of every sink.
    #[cfg(test)]
    fn report(&self) -> DeliveryReport {
        DeliveryReport::of(&self.sinks)
    }
}

/// An event of the kind whose MSGID is `msgid` (else a `log` record), for
/// the unit tests of the trail and its formats.
#[cfg(test)]
fn test_event(level: Level, msgid: &str, phase: &str, params: &[(&str, &str)], msg: &str) -> Event {
    Event {
        at: std::time::UNIX_EPOCH + std::time::Duration::new(1_709_251_199, 123_456_000),
        level,
        kind: Record::from_msgid(msgid).unwrap_or(Record::Log),
        phase: Some(phase.to_owned()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        msg: msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn ev(level: Level, msgid: &str, phase: &str, params: &[(&str, &str)], msg: &str) -> Event {
        test_event(level, msgid, phase, params, msg)
    }

    fn trail_on_pair() -> (Trail, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut cfg = TrailConfig::new("op-1");
        // Reconnecting must fail: only the injected socket delivers.
        cfg.socket = PathBuf::from("/nonexistent/quiesce-audit-unit/log.sock");
        cfg.mode = TrailMode::Syslog;
        let mut t = Trail::new(cfg, HumanSink::Memory(Vec::new()));
        t.sinks[0].socket = Some(ours);
        (t, theirs)
    }

    fn received(s: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn human_lines(t: &Trail) -> Vec<String> {
        match &t.human_sink {
            HumanSink::Memory(l) => l.clone(),
            HumanSink::Stderr => unreachable!(),
        }
    }

    #[test]
    fn held_items_leave_nothing_until_release_then_go_in_order() {
        let (mut t, peer) = trail_on_pair();
        t.record(ev(Level::Info, "run-start", "run", &[], "before"));
        t.held = true;
        t.record(ev(Level::Info, "freeze", "freeze", &[], "held 1"));
        t.submit(Pending::Human("frozen".to_owned()));
        t.record(ev(Level::Info, "thaw", "freeze", &[], "held 2"));
        assert_eq!(received(&peer).len(), 1);
        assert!(human_lines(&t).is_empty());
        assert_eq!(t.report().sent, 1);
        t.release();
        let got = received(&peer);
        assert_eq!(got.len(), 2);
        assert!(
            got[0].ends_with("held 1") && got[1].ends_with("held 2"),
            "{got:?}"
        );
        // The stamp is the event's, not the release's.
        assert!(got[0].contains(" 2024-02-29T23:59:59.123456Z "), "{got:?}");
        assert_eq!(human_lines(&t), vec!["frozen".to_owned()]);
        assert_eq!(t.report().sent, 3);
    }

    #[test]
    fn the_hold_queue_is_bounded_and_overflow_is_reported() {
        let (mut t, peer) = trail_on_pair();
        t.held = true;
        for i in 0..MAX_HELD + 5 {
            t.record(ev(
                Level::Debug,
                "script-output",
                "pre",
                &[],
                &i.to_string(),
            ));
        }
        assert_eq!(t.report().dropped, 5);
        // Drain as we go so the socket buffer is not the limit being tested.
        let mut got = 0;
        t.held = false;
        while let Some(item) = t.queue.pop_front() {
            t.deliver(item);
            got += received(&peer).len();
        }
        t.release();
        let tail = received(&peer);
        assert_eq!(got, MAX_HELD);
        assert_eq!(tail.len(), 1);
        assert!(
            tail[0].contains(" trail-overflow ") && tail[0].contains("5 records"),
            "{tail:?}"
        );
    }

    #[test]
    fn a_full_socket_drops_and_counts_instead_of_blocking() {
        let (mut t, _peer_never_reads) = trail_on_pair();
        for _ in 0..5000 {
            t.record(ev(
                Level::Debug,
                "script-output",
                "pre",
                &[],
                &"x".repeat(1000),
            ));
        }
        assert!(t.report().dropped > 0, "{:?}", t.report());
        assert_eq!(t.report().sent + t.report().dropped, 5000);
        assert!(t.report().unavailable.is_none());
        assert!(t.report().warning().unwrap().contains("not delivered"));
    }

    #[test]
    fn a_vanished_peer_is_reconnected_once_then_reported() {
        let (mut t, peer) = trail_on_pair();
        drop(peer);
        t.record(ev(Level::Info, "m", "p", &[], "x"));
        assert_eq!(t.report().sent, 0);
        assert_eq!(t.report().dropped, 1);
        let why = t.report().unavailable.clone().unwrap();
        assert!(
            why.starts_with("/nonexistent/quiesce-audit-unit/log.sock: "),
            "{why}"
        );
    }

    #[test]
    fn verbose_echoes_records_as_human_lines() {
        let (mut t, _peer) = trail_on_pair();
        t.verbose = true;
        t.record(ev(
            Level::Warn,
            "script-exit",
            "pre",
            &[],
            "pre-script exited 1",
        ));
        assert_eq!(
            human_lines(&t),
            vec!["warn script-exit pre: pre-script exited 1".to_owned()]
        );
    }
}
