//! The trail of a run: its header fields, its sinks, and the hold queue
//! (SPEC.md §6.5: while held, nothing leaves the process), bounded, its
//! overflow counted and reported at the release.

use log::Level;
use std::collections::VecDeque;
use std::time::SystemTime;

#[cfg(test)]
use super::delivery::DeliveryReport;
use super::fields::{Event, Header, MAX_OPERATION_ID_BYTES};
use super::record::Record;
use super::setup::TrailConfig;
use super::sink::{HumanSink, Sink, SinkKind};
use super::syslog::{cap_value, escape_controls, header_field, hostname};

/// How many records and human lines [`hold`](super::hold) keeps; beyond
/// that they are counted and dropped. The window is seconds long; this only
/// stops a runaway producer from growing memory without bound.
pub const MAX_HELD: usize = 10_000;

pub(super) enum Pending {
    /// One record, already in the format of each sink, in sink order.
    Record(Vec<Vec<u8>>),
    Human(String),
}

pub(super) struct Trail {
    pub(super) header: Header,
    pub(super) sinks: Vec<Sink>,
    verbose: bool,
    pub(super) held: bool,
    queue: VecDeque<Pending>,
    overflow_records: u64,
    overflow_lines: u64,
    human_sink: HumanSink,
}

impl Trail {
    pub(super) fn new(config: TrailConfig, human_sink: HumanSink) -> Trail {
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

    pub(super) fn record(&mut self, ev: Event) {
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

    pub(super) fn submit(&mut self, item: Pending) {
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

    pub(super) fn release(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::fields::test_event;
    use crate::trail::TrailMode;
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;

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
