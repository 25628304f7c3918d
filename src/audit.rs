//! The audit trail of SPEC.md §9 and the human output on stderr.
//!
//! Every event becomes one RFC 5424 record with the structured-data element
//! `[quiesce@32473 op="…" phase="…" key="value" …]`, sent to the local syslog
//! socket (`/dev/log`, or `--syslog-socket PATH`). The `log` facade carries
//! the records: code emits them with key-values,
//!
//! ```ignore
//! log::info!(target: "audit", msgid = "script-exit", phase = "pre", pid = 1234,
//!            exit = 0, duration_ms = 1.7; "pre-script exited 0");
//! ```
//!
//! or with [`event`] when the macros get unwieldy. `msgid` and `phase` become
//! the MSGID field and the `phase` SD-PARAM; every other key-value becomes an
//! SD-PARAM in the order given.
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

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{self, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

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

/// Appended to a value or MSG that was cut short.
const TRUNCATED_MARK: &str = "…[truncated]";
/// A record whose MSG, value or parameter list was cut carries this SD-PARAM.
const TRUNCATED_PARAM: &str = "truncated";
/// MSG keeps at least this much room before trailing parameters are dropped.
const MIN_MSG_ROOM: usize = 128;
const MAX_OPERATION_ID_BYTES: usize = 128;
const MAX_PHASE_BYTES: usize = 64;

/// What can go wrong setting up the trail. Sending never fails: see
/// [`DeliveryReport`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("unknown syslog facility {0:?} (expected auth, authpriv, daemon, user, syslog or local0..local7)")]
    UnknownFacility(String),
    /// Another `log::Log` was installed first. The trail is configured anyway:
    /// [`event`] and [`human`] work, `log` macros do not reach it.
    #[error(
        "another logger already owns the log facade; log macros will not reach the audit trail"
    )]
    LoggerTaken,
}

/// Syslog facilities a user-space tool may use (RFC 5424 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Facility {
    User,
    Daemon,
    Auth,
    Syslog,
    /// Private security/authorisation messages: the default, because the
    /// trail records capabilities, argv and script output.
    #[default]
    AuthPriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    const ALL: [Facility; 13] = [
        Facility::User,
        Facility::Daemon,
        Facility::Auth,
        Facility::Syslog,
        Facility::AuthPriv,
        Facility::Local0,
        Facility::Local1,
        Facility::Local2,
        Facility::Local3,
        Facility::Local4,
        Facility::Local5,
        Facility::Local6,
        Facility::Local7,
    ];

    /// The numeric code of RFC 5424 table 1.
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::AuthPriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }

    /// The name syslog.conf(5) uses.
    pub fn name(self) -> &'static str {
        match self {
            Facility::User => "user",
            Facility::Daemon => "daemon",
            Facility::Auth => "auth",
            Facility::Syslog => "syslog",
            Facility::AuthPriv => "authpriv",
            Facility::Local0 => "local0",
            Facility::Local1 => "local1",
            Facility::Local2 => "local2",
            Facility::Local3 => "local3",
            Facility::Local4 => "local4",
            Facility::Local5 => "local5",
            Facility::Local6 => "local6",
            Facility::Local7 => "local7",
        }
    }
}

impl FromStr for Facility {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Facility::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuditError::UnknownFacility(s.to_owned()))
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RFC 5424 severity of a `log` level. Kept simple on purpose: the final
/// result is an info (success) or error (failure) record like any other.
pub fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// How the trail is set up for one run.
#[derive(Debug, Clone)]
pub struct AuditConfig {
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

impl AuditConfig {
    /// Defaults of SPEC.md §2/§9: `/dev/log`, facility `authpriv`.
    pub fn new(operation_id: impl Into<String>) -> Self {
        AuditConfig {
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
pub fn init(config: AuditConfig) -> Result<(), AuditError> {
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
        Err(AuditError::LoggerTaken)
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
pub fn event(level: Level, msgid: &str, phase: &str, params: &[(&str, String)], msg: &str) {
    let ev = Event {
        at: SystemTime::now(),
        level,
        msgid: Some(msgid.to_owned()),
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

    fn log(&self, record: &Record<'_>) {
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
    msgid: Option<String>,
    phase: Option<String>,
    params: Vec<(String, String)>,
    msg: String,
}

impl Event {
    fn from_record(record: &Record<'_>) -> Event {
        let mut ev = Event {
            at: SystemTime::now(),
            level: record.level(),
            msgid: None,
            phase: None,
            params: Vec::new(),
            msg: record.args().to_string(),
        };
        if record.target() != AUDIT_TARGET {
            // A dependency's warning: keep where it came from.
            ev.msgid = Some("log".to_owned());
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
            "msgid" => self.0.msgid = Some(value),
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
    fn new(config: AuditConfig, human_sink: HumanSink) -> Trail {
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
                ev.msgid.as_deref().unwrap_or("-"),
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
                msgid: Some("trail-overflow".to_owned()),
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

/// A connected, non-blocking datagram socket. std creates it with
/// SOCK_CLOEXEC, so scripts never inherit it.
fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.connect(path)?;
    Ok(sock)
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ECONNRESET | libc::EPIPE | libc::ENOENT)
    )
}

/// The node name of uname(2), the HOSTNAME of every record.
fn hostname() -> String {
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: `uts` points to writable memory the size of a utsname, and
    // uname(2) writes only within that struct.
    let rc = unsafe { libc::uname(uts.as_mut_ptr()) };
    if rc != 0 {
        return String::new();
    }
    // SAFETY: utsname is plain C data (byte arrays) for which all-zero is a
    // valid value, and uname(2) returned 0, so it also filled it in.
    let uts = unsafe { uts.assume_init() };
    let bytes: Vec<u8> = uts
        .nodename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------
// RFC 5424 formatting. Pure functions, unit-tested below.

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, at most
/// MAX_RECORD_BYTES long. `op` and `phase` always come first in the SD.
fn format_record(h: &Header, ev: &Event) -> Vec<u8> {
    let pri = u16::from(h.facility.code()) * 8 + u16::from(severity(ev.level));
    let msgid = header_field(ev.msgid.as_deref().unwrap_or(""), 32);
    let head = format!(
        "<{pri}>1 {} {} {} {} {msgid} ",
        rfc3339_micros(ev.at),
        h.hostname,
        h.app_name,
        h.procid
    );
    let phase = cap_value(ev.phase.as_deref().unwrap_or(""), MAX_PHASE_BYTES);
    let params: Vec<(String, &str)> = ev
        .params
        .iter()
        .map(|(k, v)| (param_name(k), v.as_str()))
        .collect();
    let msg = escape_controls(&ev.msg);

    let mut kept = params.len();
    let mut truncated = params.iter().any(|(_, v)| v.ends_with(TRUNCATED_MARK));
    loop {
        let sd = structured_data(&h.operation_id, &phase, &params[..kept], truncated);
        let room = MAX_RECORD_BYTES.saturating_sub(head.len() + sd.len() + 1);
        if msg.len() <= room {
            return assemble(&head, &sd, &msg);
        }
        if !truncated {
            // Room is recomputed with the `truncated` parameter in place.
            truncated = true;
            continue;
        }
        if room < MIN_MSG_ROOM && kept > 0 {
            kept -= 1;
            continue;
        }
        let cut = truncate_at_char(&msg, room.saturating_sub(TRUNCATED_MARK.len()));
        return assemble(&head, &sd, &format!("{cut}{TRUNCATED_MARK}"));
    }
}

fn assemble(head: &str, sd: &str, msg: &str) -> Vec<u8> {
    let mut out = String::with_capacity(head.len() + sd.len() + 1 + msg.len());
    out.push_str(head);
    out.push_str(sd);
    if !msg.is_empty() {
        out.push(' ');
        out.push_str(msg);
    }
    out.into_bytes()
}

fn structured_data(op: &str, phase: &str, params: &[(String, &str)], truncated: bool) -> String {
    let mut sd = format!(
        "[{SD_ID} op=\"{}\" phase=\"{}\"",
        escape_param_value(op),
        escape_param_value(phase)
    );
    for (k, v) in params {
        let _ = write!(sd, " {k}=\"{}\"", escape_param_value(v));
    }
    if truncated {
        let _ = write!(sd, " {TRUNCATED_PARAM}=\"true\"");
    }
    sd.push(']');
    sd
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash. Control
/// characters are written the way rsyslog writes them (`#012` for LF), so a
/// script's output cannot start a forged line in a line-based log file.
fn escape_param_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "#{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// MSG and human lines: control characters as `#ooo`, as rsyslog does on
/// receipt; also keeps terminal escape sequences off the operator's screen.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(|c| c.is_ascii_control()) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_control() {
            let _ = write!(out, "#{:03o}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// SD-NAME (RFC 5424 §6.3.3): 1–32 printable US-ASCII characters except
/// `=`, space, `]` and `"`. Anything else becomes `_`. `op` is ours: a
/// caller's `op` is renamed rather than allowed to shadow the operation id.
fn param_name(k: &str) -> String {
    let mut name: String = k
        .chars()
        .map(|c| match c {
            '!'..='~' if !matches!(c, '=' | ']' | '"') => c,
            _ => '_',
        })
        .take(32)
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    if name == "op" || name == "phase" || name == TRUNCATED_PARAM {
        name.push('_');
    }
    name
}

/// HOSTNAME, APP-NAME, MSGID: printable US-ASCII, no spaces, bounded; the
/// NILVALUE `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if f.is_empty() {
        "-".to_owned()
    } else {
        f
    }
}

/// Caps a value at `max` bytes on a character boundary, marking the cut.
fn cap_value(v: &str, max: usize) -> String {
    if v.len() <= max {
        return v.to_owned();
    }
    let cut = truncate_at_char(v, max.saturating_sub(TRUNCATED_MARK.len()));
    format!("{cut}{TRUNCATED_MARK}")
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 3339 in UTC with microseconds: `2024-02-29T23:59:59.123456Z`.
fn rfc3339_micros(t: SystemTime) -> String {
    // A clock before 1970 is a broken clock; 1970 is as good a stamp as any.
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    }

    fn header() -> Header {
        Header {
            facility: Facility::AuthPriv,
            hostname: "vm1".to_owned(),
            app_name: "quiesce".to_owned(),
            procid: "4242".to_owned(),
            operation_id: "0b9f-op".to_owned(),
        }
    }

    fn ev(level: Level, msgid: &str, phase: &str, params: &[(&str, &str)], msg: &str) -> Event {
        Event {
            at: at(1_709_251_199, 123_456),
            level,
            msgid: Some(msgid.to_owned()),
            phase: Some(phase.to_owned()),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            msg: msg.to_owned(),
        }
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(rfc3339_micros(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        // Leap day, last microsecond-ish of it.
        assert_eq!(
            rfc3339_micros(at(1_709_251_199, 123_456)),
            "2024-02-29T23:59:59.123456Z"
        );
        assert_eq!(
            rfc3339_micros(at(951_782_400, 7)),
            "2000-02-29T00:00:00.000007Z"
        );
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(
            rfc3339_micros(at(1_735_689_599, 999_999)),
            "2024-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn record_has_rfc5424_shape_with_op_and_phase_first() {
        let r = text(format_record(
            &header(),
            &ev(
                Level::Info,
                "script-exit",
                "pre",
                &[("pid", "1234"), ("exit", "0")],
                "pre-script exited 0",
            ),
        ));
        assert_eq!(
            r,
            "<86>1 2024-02-29T23:59:59.123456Z vm1 quiesce 4242 script-exit \
             [quiesce@32473 op=\"0b9f-op\" phase=\"pre\" pid=\"1234\" exit=\"0\"] pre-script exited 0"
        );
    }

    #[test]
    fn pri_is_facility_times_eight_plus_severity() {
        let mut h = header();
        for (level, pri) in [
            (Level::Error, 83),
            (Level::Warn, 84),
            (Level::Info, 86),
            (Level::Debug, 87),
            (Level::Trace, 87),
        ] {
            let r = text(format_record(&h, &ev(level, "m", "p", &[], "x")));
            assert!(r.starts_with(&format!("<{pri}>1 ")), "{r}");
        }
        h.facility = "local7".parse().unwrap();
        let r = text(format_record(&h, &ev(Level::Error, "m", "p", &[], "x")));
        assert!(r.starts_with("<187>1 "), "{r}");
    }

    #[test]
    fn facility_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("AuthPriv".parse::<Facility>().unwrap(), Facility::AuthPriv);
        assert_eq!("auth".parse::<Facility>().unwrap().code(), 4);
        assert_eq!("daemon".parse::<Facility>().unwrap().code(), 3);
        assert_eq!("local0".parse::<Facility>().unwrap().code(), 16);
        assert!(matches!(
            "kern".parse::<Facility>(),
            Err(AuditError::UnknownFacility(_))
        ));
        assert_eq!(Facility::default(), Facility::AuthPriv);
    }

    #[test]
    fn param_values_are_escaped_and_names_sanitised() {
        let r = text(format_record(
            &header(),
            &ev(
                Level::Info,
                "with space",
                "p\"h]",
                &[
                    ("a b=c]\"d", "q\"u]o\\te é"),
                    ("op", "mine"),
                    ("", "x"),
                    ("nl", "a\nb"),
                ],
                "line1\nline2\x1b[31m",
            ),
        ));
        assert!(
            r.contains(" with_space [quiesce@32473 op=\"0b9f-op\" phase=\"p\\\"h\\]\""),
            "{r}"
        );
        assert!(r.contains(" a_b_c__d=\"q\\\"u\\]o\\\\te é\""), "{r}");
        assert!(r.contains(" op_=\"mine\""), "{r}");
        assert!(r.contains(" _=\"x\""), "{r}");
        assert!(r.contains(" nl=\"a#012b\""), "{r}");
        assert!(r.ends_with("] line1#012line2#033[31m"), "{r}");
        assert_eq!(param_name(&"k".repeat(40)).len(), 32);
    }

    #[test]
    fn oversized_records_are_cut_inside_msg_and_marked() {
        let big = "é".repeat(10_000);
        let r = text(format_record(
            &header(),
            &ev(
                Level::Debug,
                "script-output",
                "pre",
                &[("stream", "stdout")],
                &big,
            ),
        ));
        assert!(r.len() <= MAX_RECORD_BYTES, "{}", r.len());
        assert!(r.contains(" stream=\"stdout\" truncated=\"true\"]"), "{r}");
        assert!(r.ends_with(TRUNCATED_MARK));
        // Many large parameters: trailing ones go, op/phase and MSG room stay.
        let v = "v".repeat(MAX_VALUE_BYTES);
        let params: Vec<(&str, &str)> = (0..8).map(|_| ("k", v.as_str())).collect();
        let r = text(format_record(
            &header(),
            &ev(Level::Info, "m", "pre", &params, &"m".repeat(500)),
        ));
        assert!(r.len() <= MAX_RECORD_BYTES, "{}", r.len());
        assert!(r.contains("op=\"0b9f-op\" phase=\"pre\""));
        assert!(r.contains("truncated=\"true\"]"));
        assert!(cap_value(&"é".repeat(3000), MAX_VALUE_BYTES).len() <= MAX_VALUE_BYTES);
    }

    fn trail_on_pair() -> (Trail, UnixDatagram) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut cfg = AuditConfig::new("op-1");
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
