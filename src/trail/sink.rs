//! The destinations of the records: a socket, connected lazily and
//! reconnected once when the daemon went away, never waited on; and the
//! human lines' stderr.

use std::io::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::delivery::SinkDelivery;
use super::fields::{Event, Header};
use super::journal;
use super::syslog::{connect, format_record, peer_gone};

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

pub(super) enum HumanSink {
    Stderr,
    #[cfg(test)]
    Memory(Vec<String>),
}

impl HumanSink {
    pub(super) fn write(&mut self, line: &str) {
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
pub(super) struct Sink {
    path: PathBuf,
    pub(super) socket: Option<UnixDatagram>,
    pub(super) report: SinkDelivery,
}

impl Sink {
    pub(super) fn new(kind: SinkKind, path: PathBuf) -> Sink {
        Sink {
            path,
            socket: None,
            report: SinkDelivery::new(kind),
        }
    }

    pub(super) fn format(&self, header: &Header, ev: &Event) -> Vec<u8> {
        match self.report.sink {
            SinkKind::Syslog => format_record(header, ev),
            SinkKind::Journal => journal::format_entry(header, ev),
        }
    }

    /// One non-blocking send, reconnecting once if the daemon went away (a
    /// restarted rsyslog or journald leaves our connected socket pointing at
    /// a dead peer).
    pub(super) fn send(&mut self, bytes: &[u8]) {
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
