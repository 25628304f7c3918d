//! RFC 5424 for the syslog sink: the facility, the record's shape and its
//! escaping, and the non-blocking datagram socket (SPEC.md §9).

use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use log::Level;

use super::{Event, Header, TrailError, MAX_RECORD_BYTES, SD_ID};

/// Appended to a value or MSG that was cut short.
pub(super) const TRUNCATED_MARK: &str = "…[truncated]";
/// A record whose MSG, value or parameter list was cut carries this SD-PARAM.
const TRUNCATED_PARAM: &str = "truncated";
/// MSG keeps at least this much room before trailing parameters are dropped.
const MIN_MSG_ROOM: usize = 128;
pub(super) const MAX_PHASE_BYTES: usize = 64;

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
    type Err = TrailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Facility::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| TrailError::UnknownFacility(s.to_owned()))
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

/// A connected, non-blocking datagram socket. std creates it with
/// SOCK_CLOEXEC, so scripts never inherit it.
pub(super) fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.connect(path)?;
    Ok(sock)
}

pub(super) fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ECONNRESET | libc::EPIPE | libc::ENOENT)
    )
}

/// The node name of uname(2), the HOSTNAME of every record.
pub(super) fn hostname() -> String {
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
/// MAX_RECORD_BYTES long. `op` and `phase` (and `app`) always come first in
/// the SD.
pub(super) fn format_record(h: &Header, ev: &Event) -> Vec<u8> {
    let pri = u16::from(h.facility.code()) * 8 + u16::from(severity(ev.level));
    let msgid = header_field(ev.kind.msgid(), 32);
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
        let sd = structured_data(h, &phase, &params[..kept], truncated);
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

/// The whole structured-data element of `ev`, as the syslog sink would send
/// it with room to spare: the journal's `SYSLOG_STRUCTURED_DATA`, from which
/// a forwarder rebuilds the same RFC 5424 record.
pub(super) fn sd_element(h: &Header, ev: &Event) -> String {
    let phase = cap_value(ev.phase.as_deref().unwrap_or(""), MAX_PHASE_BYTES);
    let params: Vec<(String, &str)> = ev
        .params
        .iter()
        .map(|(k, v)| (param_name(k), v.as_str()))
        .collect();
    let truncated = params.iter().any(|(_, v)| v.ends_with(TRUNCATED_MARK));
    structured_data(h, &phase, &params, truncated)
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

/// `op`, `phase` and — while one of the run's applications is at work
/// (SPEC §3.1) — `app` come first.
fn structured_data(h: &Header, phase: &str, params: &[(String, &str)], truncated: bool) -> String {
    let mut sd = format!(
        "[{SD_ID} op=\"{}\" phase=\"{}\"",
        escape_param_value(&h.operation_id),
        escape_param_value(phase)
    );
    if !h.application.is_empty() {
        let _ = write!(sd, " app=\"{}\"", escape_param_value(&h.application));
    }
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
pub(super) fn escape_controls(s: &str) -> String {
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
    if name == "op" || name == "phase" || name == "app" || name == TRUNCATED_PARAM {
        name.push('_');
    }
    name
}

/// HOSTNAME, APP-NAME, MSGID: printable US-ASCII, no spaces, bounded; the
/// NILVALUE `-` when empty.
pub(super) fn header_field(s: &str, max: usize) -> String {
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
pub(super) fn cap_value(v: &str, max: usize) -> String {
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
pub fn rfc3339_micros(t: SystemTime) -> String {
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
    use crate::trail::MAX_VALUE_BYTES;
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
            application: String::new(),
        }
    }

    fn ev(level: Level, msgid: &str, phase: &str, params: &[(&str, &str)], msg: &str) -> Event {
        Event {
            at: at(1_709_251_199, 123_456),
            ..super::super::test_event(level, msgid, phase, params, msg)
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
            Err(TrailError::UnknownFacility(_))
        ));
        assert_eq!(Facility::default(), Facility::AuthPriv);
    }

    #[test]
    fn param_values_are_escaped_and_names_sanitised() {
        let r = text(format_record(
            &header(),
            &ev(
                Level::Info,
                "check",
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
            // MSGIDs come from the catalogue, whose test checks each is a
            // valid RFC 5424 MSGID; the SD values are escaped here.
            r.contains(" check [quiesce@32473 op=\"0b9f-op\" phase=\"p\\\"h\\]\""),
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
}
