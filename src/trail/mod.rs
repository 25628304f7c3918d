//! The audit trail of SPEC.md §9 and the human output on stderr.
//!
//! Every record is one kind of the catalogue ([`Record`], `record.rs`: the
//! compliance contract) and becomes one RFC 5424 record with the
//! structured-data element `[quiesce@32473 op="…" phase="…" key="value" …]`,
//! sent to the local syslog socket (`/dev/log`, or `--syslog-socket PATH`;
//! the format is in `syslog.rs`):
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
//! SPEC.md §6.5: nothing touches the frozen disk and syslog sends never block
//! the window. Between [`hold`] and [`release`] records and human lines are
//! queued in memory (time-stamped when the event happened) and nothing is
//! written anywhere, not even to the socket: stderr may be a file on the frozen
//! filesystem, and a syslog daemon may write synchronously to one. [`release`]
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

mod record;
mod syslog;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use log::kv::{self, VisitSource};
use log::{Level, LevelFilter, Log, Metadata};

pub use record::Record;
use syslog::{
    cap_value, connect, escape_controls, format_record, header_field, hostname, peer_gone,
};
pub use syslog::{severity, Facility};

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
    /// Another `log::Log` was installed first. The trail is configured anyway:
    /// [`event`] and [`human`] work, `log` macros do not reach it.
    #[error(
        "another logger already owns the log facade; log macros will not reach the audit trail"
    )]
    LoggerTaken,
}

/// How the trail is set up for one run.
#[derive(Debug, Clone)]
pub struct TrailConfig {
    /// The unix datagram socket of the local syslog daemon.
    pub socket: PathBuf,
    pub facility: Facility,
    /// Shared by every record and the status JSON (`operationId`).
    pub operation_id: String,
    /// APP-NAME; `quiesce` unless set.
    pub app_name: Option<String>,
    /// `-v`: every audit record is also echoed as a human line on stderr.
    pub verbose: bool,
}

impl TrailConfig {
    /// Defaults of SPEC.md §2/§9: `/dev/log`, facility `authpriv`.
    pub fn new(operation_id: impl Into<String>) -> Self {
        TrailConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            facility: Facility::default(),
            operation_id: operation_id.into(),
            app_name: None,
            verbose: false,
        }
    }
}

/// What happened to the records of this run, for the status `warnings`.
/// `sent + dropped` is every record submitted since [`init`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Records the socket accepted.
    pub sent: u64,
    /// Records not delivered: socket buffer full (EAGAIN), hold queue full,
    /// too large for the socket, or the socket unavailable.
    pub dropped: u64,
    /// Why the socket could not be reached (first failure), e.g.
    /// `/dev/log: No such file or directory (os error 2)`.
    pub unavailable: Option<String>,
}

impl DeliveryReport {
    /// One line for the status `warnings`, or `None` when all went well.
    pub fn warning(&self) -> Option<String> {
        if self.dropped == 0 && self.unavailable.is_none() {
            return None;
        }
        let total = self.sent + self.dropped;
        let mut w = format!(
            "audit trail: {} of {} syslog records not delivered",
            self.dropped, total
        );
        if let Some(why) = &self.unavailable {
            let _ = write!(w, " (syslog socket unavailable: {why})");
        }
        Some(w)
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
        .map(|t| t.report.clone())
        .unwrap_or_default()
}

/// Releases what is held, removes the trail and returns its final report.
/// Records emitted afterwards are discarded; human lines go straight to stderr.
pub fn finish() -> DeliveryReport {
    let old = trail().take();
    match old {
        Some(mut t) => {
            t.release();
            t.report
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
}

enum Pending {
    Record(Vec<u8>),
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

struct Trail {
    header: Header,
    socket_path: PathBuf,
    socket: Option<UnixDatagram>,
    verbose: bool,
    held: bool,
    queue: VecDeque<Pending>,
    overflow_records: u64,
    overflow_lines: u64,
    human_sink: HumanSink,
    report: DeliveryReport,
}

impl Trail {
    fn new(config: TrailConfig, human_sink: HumanSink) -> Trail {
        let app_name = config.app_name.as_deref().unwrap_or("quiesce");
        Trail {
            header: Header {
                facility: config.facility,
                hostname: header_field(&hostname(), 255),
                app_name: header_field(app_name, 48),
                procid: std::process::id().to_string(),
                operation_id: cap_value(&config.operation_id, MAX_OPERATION_ID_BYTES),
            },
            socket_path: config.socket,
            socket: None,
            verbose: config.verbose,
            held: false,
            queue: VecDeque::new(),
            overflow_records: 0,
            overflow_lines: 0,
            human_sink,
            report: DeliveryReport::default(),
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
        let bytes = format_record(&self.header, &ev);
        self.submit(Pending::Record(bytes));
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
                self.report.dropped += 1;
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
            Pending::Record(bytes) => self.send(&bytes),
            Pending::Human(line) => self.human_sink.write(&line),
        }
    }

    /// One non-blocking send, reconnecting once if the daemon went away (a
    /// restarted rsyslog leaves our connected socket pointing at a dead peer).
    fn send(&mut self, bytes: &[u8]) {
        for attempt in 0..2 {
            let sock = match self.socket.take() {
                Some(s) => s,
                None => match connect(&self.socket_path) {
                    Ok(s) => s,
                    Err(e) => return self.unavailable(&e),
                },
            };
            match sock.send(bytes) {
                Ok(_) => {
                    self.socket = Some(sock);
                    self.report.sent += 1;
                    return;
                }
                // The daemon is behind: drop rather than wait (sudo-rs does
                // the same); the count goes into the status warnings.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket = Some(sock);
                    self.report.dropped += 1;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
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
            self.report.unavailable = Some(format!("{}: {e}", self.socket_path.display()));
        }
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
        let mut t = Trail::new(cfg, HumanSink::Memory(Vec::new()));
        t.socket = Some(ours);
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
        assert_eq!(t.report.sent, 1);
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
        assert_eq!(t.report.sent, 3);
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
        assert_eq!(t.report.dropped, 5);
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
        assert!(t.report.dropped > 0, "{:?}", t.report);
        assert_eq!(t.report.sent + t.report.dropped, 5000);
        assert!(t.report.unavailable.is_none());
        assert!(t.report.warning().unwrap().contains("not delivered"));
    }

    #[test]
    fn a_vanished_peer_is_reconnected_once_then_reported() {
        let (mut t, peer) = trail_on_pair();
        drop(peer);
        t.record(ev(Level::Info, "m", "p", &[], "x"));
        assert_eq!(t.report.sent, 0);
        assert_eq!(t.report.dropped, 1);
        let why = t.report.unavailable.clone().unwrap();
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
