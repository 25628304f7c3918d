//! The journal sink (SPEC.md §9 "Where the trail lands"): native journal
//! entries on `/run/systemd/journal/socket`, the protocol of
//! systemd's "Native Journal Protocol" document (sd_journal_sendv(3)).
//!
//! One datagram is one entry: fields `NAME=value\n`, or, for a value holding
//! a newline or another control byte, `NAME\n` + the value's length as a
//! little-endian u64 + the value + `\n`. An entry too large for one datagram
//! (`EMSGSIZE`; `ENOBUFS` on some kernels) is written to a memfd, sealed
//! against every change, and the descriptor alone is sent with SCM_RIGHTS.
//!
//! Why not `systemd-journal-logger` (or `libsystemd`): both send on a
//! *blocking* socket, the former only through the `log` facade, with no way to
//! hold entries during the freeze window, stamp them with the event's time or
//! count what did not arrive; the held, counted, non-blocking delivery is the
//! trail's own (mod.rs) and the encoder is ~60 lines, so it is written here
//! where every field a SIEM receives is visible.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::syslog::{rfc3339_micros, sd_element, severity};
use super::{Event, Header};

/// journald's socket for native entries.
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Upper bound of `MESSAGE` (script output is capped long before this; the
/// journal itself takes far more, this only bounds memory per held entry).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Field names the entry sets itself; a structured-data parameter of the
/// same name gets `_PARAM` appended rather than shadowing it.
const RESERVED: [&str; 4] = ["QUIESCE_OP", "QUIESCE_PHASE", "QUIESCE_APP", "QUIESCE_TIME"];

/// The entry of `ev`: every field of SPEC.md §9, `MESSAGE` first.
pub(super) fn format_entry(h: &Header, ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + ev.msg.len());
    let msg = cap_bytes(&ev.msg, MAX_MESSAGE_BYTES);
    push_field(&mut out, "MESSAGE", msg.as_bytes());
    push_field(&mut out, "MESSAGE_ID", ev.kind.message_id().as_bytes());
    push_field(
        &mut out,
        "PRIORITY",
        severity(ev.level).to_string().as_bytes(),
    );
    push_field(
        &mut out,
        "SYSLOG_FACILITY",
        h.facility.code().to_string().as_bytes(),
    );
    push_field(&mut out, "SYSLOG_IDENTIFIER", h.app_name.as_bytes());
    push_field(&mut out, "SYSLOG_PID", h.procid.as_bytes());
    push_field(&mut out, "SYSLOG_MSGID", ev.kind.msgid().as_bytes());
    push_field(
        &mut out,
        "SYSLOG_STRUCTURED_DATA",
        sd_element(h, ev).as_bytes(),
    );
    push_field(&mut out, "QUIESCE_OP", h.operation_id.as_bytes());
    push_field(
        &mut out,
        "QUIESCE_PHASE",
        ev.phase.as_deref().unwrap_or("").as_bytes(),
    );
    push_field(&mut out, "QUIESCE_APP", h.application.as_bytes());
    // journald stamps the time of receipt; a held record happened earlier.
    push_field(&mut out, "QUIESCE_TIME", rfc3339_micros(ev.at).as_bytes());
    for (k, v) in &ev.params {
        push_field(&mut out, &field_name(k), v.as_bytes());
    }
    out
}

/// `QUIESCE_` + the parameter's name, journal-field-safe: uppercase ASCII
/// letters, digits and `_`, at most 64 bytes (journald drops other names).
pub(super) fn field_name(key: &str) -> String {
    let mut name = String::from("QUIESCE_");
    for c in key.chars() {
        name.push(match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        });
    }
    if key.is_empty() {
        name.push('_');
    }
    if RESERVED.contains(&name.as_str()) {
        name.push_str("_PARAM");
    }
    name.truncate(64);
    name
}

/// One field: `NAME=value\n`, or the length-prefixed form when the value
/// holds a byte the plain form cannot carry (journald ends a plain value at
/// the first newline; other control bytes are sent the safe way too).
fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.iter().any(|&b| b < 0x20 || b == 0x7f) {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn cap_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    let _ = write!(out, "{}", super::syslog::TRUNCATED_MARK);
    out
}

/// Whether a failed send means "too large for one datagram".
pub(super) fn too_large(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS))
}

/// The large-entry path: the entry in a memfd sealed against writing,
/// growing and shrinking (journald refuses an unsealed one), its descriptor
/// sent with SCM_RIGHTS on the same non-blocking socket. The memfd is
/// closed on return; journald holds its own reference.
pub(super) fn send_memfd(sock: &UnixDatagram, entry: &[u8]) -> io::Result<()> {
    let fd = memfd_create(
        c"quiesce-journal-entry",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(entry)?;
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    let fds = [file.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::{test_event, Facility};
    use log::Level;

    fn header() -> Header {
        Header {
            facility: Facility::AuthPriv,
            hostname: "vm1".to_owned(),
            app_name: "quiesce".to_owned(),
            procid: "4242".to_owned(),
            operation_id: "op-1".to_owned(),
            application: "ScriptRunner".to_owned(),
        }
    }

    /// Decodes the native format back into (name, value) pairs.
    fn decode(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').unwrap();
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                b = &b[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = b[nl + 9..nl + 9 + len].to_vec();
                assert_eq!(b[nl + 9 + len], b'\n');
                out.push((name, value));
                b = &b[nl + 10 + len..];
            }
        }
        out
    }

    fn get<'a>(f: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
        &f.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn an_entry_has_every_field_of_the_spec() {
        let ev = test_event(
            Level::Warn,
            "script-exit",
            "pre",
            &[("exit", "1"), ("capEff", "cap_sys_admin"), ("op", "x")],
            "pre-script exited 1",
        );
        let f = decode(&format_entry(&header(), &ev));
        assert_eq!(f[0].0, "MESSAGE");
        assert_eq!(get(&f, "MESSAGE"), b"pre-script exited 1");
        assert_eq!(get(&f, "MESSAGE_ID"), ev.kind.message_id().as_bytes());
        assert_eq!(get(&f, "PRIORITY"), b"4");
        assert_eq!(get(&f, "SYSLOG_FACILITY"), b"10");
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), b"quiesce");
        assert_eq!(get(&f, "SYSLOG_MSGID"), b"script-exit");
        assert_eq!(get(&f, "QUIESCE_OP"), b"op-1");
        assert_eq!(get(&f, "QUIESCE_PHASE"), b"pre");
        assert_eq!(get(&f, "QUIESCE_APP"), b"ScriptRunner");
        assert_eq!(get(&f, "QUIESCE_TIME"), b"2024-02-29T23:59:59.123456Z");
        assert_eq!(get(&f, "QUIESCE_EXIT"), b"1");
        assert_eq!(get(&f, "QUIESCE_CAPEFF"), b"cap_sys_admin");
        assert_eq!(get(&f, "QUIESCE_OP_PARAM"), b"x");
        assert_eq!(
            get(&f, "SYSLOG_STRUCTURED_DATA"),
            br#"[quiesce@32473 op="op-1" phase="pre" app="ScriptRunner" exit="1" capEff="cap_sys_admin" op_="x"]"#
        );
    }

    #[test]
    fn newlines_and_control_bytes_use_the_length_prefixed_form() {
        let msg = "line 1\nline 2\0\x1b[31m";
        let ev = test_event(Level::Debug, "script-output", "pre", &[("k", "a\nb")], msg);
        let bytes = format_entry(&header(), &ev);
        let f = decode(&bytes);
        assert_eq!(get(&f, "MESSAGE"), msg.as_bytes());
        assert_eq!(get(&f, "QUIESCE_K"), b"a\nb");
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        assert!(bytes.starts_with(&want));
    }

    #[test]
    fn field_names_are_journal_safe() {
        assert_eq!(field_name("timeoutSeconds"), "QUIESCE_TIMEOUTSECONDS");
        assert_eq!(field_name("a-b.c d"), "QUIESCE_A_B_C_D");
        assert_eq!(field_name("phase"), "QUIESCE_PHASE_PARAM");
        assert_eq!(field_name(""), "QUIESCE__");
        assert_eq!(field_name(&"x".repeat(100)).len(), 64);
    }
}
