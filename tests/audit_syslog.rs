//! The audit trail as a compliance team's SIEM sees it: records go through a
//! real rsyslogd (its own config, socket and output file under /run) and come
//! back out as RFC 5424 lines, which these tests parse (`TestSyslog` and the
//! parser live in tests/common/rsyslog.rs, shared with tests/trail.rs).
//!
//! Needs root (the scratch directory lives under /run, as root-owned 0700)
//! and rsyslogd (`apt-get install rsyslog`; scripts/test.sh installs it).
//! The `log` facade and the trail are process-global, so the tests here run
//! one at a time and re-initialise the trail.

mod common;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::rsyslog::{now_micros, parse_5424, timestamp_micros, Syslog5424, TestSyslog};
use log::Level;
use quiesce::trail::{self, Facility, Record, TrailConfig, TrailMode};

// ---------------------------------------------------------------------------

/// The trail is process-global: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    trail::reset_for_tests();
    g
}

fn syslog_or_skip(test: &str) -> Option<TestSyslog> {
    if let Err(why) = TestSyslog::prerequisites() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    Some(TestSyslog::start().expect("start rsyslogd"))
}

fn config(socket: &Path, op: &str) -> TrailConfig {
    let mut c = TrailConfig::new(op);
    c.socket = socket.to_owned();
    c.mode = TrailMode::Syslog;
    c.facility = Facility::AuthPriv;
    c
}

fn ours(lines: &[String]) -> Vec<Syslog5424> {
    lines
        .iter()
        .map(|l| parse_5424(l).unwrap())
        .filter(|r| r.app_name == "quiesce")
        .collect()
}

const TRICKY: &str = "a\"b]c\\d ✓ Grüße \\] \\\"";

#[test]
fn records_reach_rsyslog_as_rfc5424_with_structured_data_intact() {
    let _g = serial();
    let Some(syslog) =
        syslog_or_skip("records_reach_rsyslog_as_rfc5424_with_structured_data_intact")
    else {
        return;
    };
    let op = "7c1e0b52-8a43-4d2e-9a51-0e6f3f4b2a10";
    trail::init(config(&syslog.socket, op)).unwrap();

    log::info!(target: "audit", msgid = "run-start", phase = "run",
        config_sha256 = "9f86d081884c7d65"; "run started");
    log::info!(target: "audit", msgid = "script-start", phase = "pre",
        path = "/etc/quiesce/pre.sh", argv = TRICKY, pid = 1234; "pre-script started");
    log::debug!(target: "audit", msgid = "script-output", phase = "pre",
        stream = "stdout"; "flushing tables… done ✓");
    trail::event(
        Level::Warn,
        Record::ScriptExit,
        "pre",
        &[
            ("pid", 1234.to_string()),
            ("exit", "1".into()),
            ("duration_ms", 1.7.to_string()),
            ("bad key=\"]", "x".into()),
            ("nl", "a\nb".into()),
        ],
        "pre-script exited 1",
    );
    // A dependency's info is not audit material; its warning is.
    log::info!(target: "some_dependency", "chatter");
    log::warn!(target: "some_dependency", "something odd");
    log::error!(target: "audit", msgid = "run-end", phase = "run", code = 308; "failure: Pre-ScriptTimeout");

    syslog.wait_for("6 records", |l| l.len() >= 6);
    sleep(Duration::from_millis(200)); // nothing else (e.g. the dependency's info) trails in
    let lines = syslog.lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let recs = ours(&lines);
    assert_eq!(recs.len(), 6, "{lines:#?}");

    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for r in &recs {
        assert_eq!(r.pri / 8, 10, "facility authpriv: {r:?}");
        assert_eq!(r.version, 1);
        assert_eq!(r.app_name, "quiesce");
        assert_eq!(r.procid, std::process::id().to_string());
        assert_eq!(r.hostname, hostname.trim());
        assert_eq!(r.sd.len(), 1, "{r:?}");
        assert_eq!(r.sd[0].0, "quiesce@32473");
        let names: Vec<&str> = r.sd[0].1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..2], ["op", "phase"], "{r:?}");
        assert_eq!(r.param("op"), Some(op));
        timestamp_micros(&r.timestamp);
    }
    let msgids: Vec<&str> = recs.iter().map(|r| r.msgid.as_str()).collect();
    assert_eq!(
        msgids,
        [
            "run-start",
            "script-start",
            "script-output",
            "script-exit",
            "log",
            "run-end"
        ]
    );
    let severities: Vec<u16> = recs.iter().map(|r| r.pri % 8).collect();
    assert_eq!(severities, [6, 6, 7, 4, 4, 3]);

    assert_eq!(recs[0].param("phase"), Some("run"));
    assert_eq!(recs[0].param("config_sha256"), Some("9f86d081884c7d65"));
    assert_eq!(recs[0].msg, "run started");
    assert_eq!(
        recs[1].params()[2..],
        [
            ("path", "/etc/quiesce/pre.sh"),
            ("argv", TRICKY),
            ("pid", "1234")
        ]
    );
    assert_eq!(recs[2].msg, "flushing tables… done ✓");
    assert_eq!(
        recs[3].params()[2..],
        [
            ("pid", "1234"),
            ("exit", "1"),
            ("duration_ms", "1.7"),
            ("bad_key___", "x"),
            // Control characters are written the way rsyslog writes them.
            ("nl", "a#012b"),
        ]
    );
    assert_eq!(recs[4].param("target"), Some("some_dependency"));
    assert_eq!(recs[4].msg, "something odd");
    assert_eq!(recs[5].param("code"), Some("308"));

    let report = trail::delivery_report();
    assert_eq!(
        (report.sent, report.dropped, report.unavailable),
        (6, 0, None)
    );
}

#[test]
fn held_records_reach_syslog_only_after_release_with_event_time_stamps() {
    let _g = serial();
    let Some(syslog) =
        syslog_or_skip("held_records_reach_syslog_only_after_release_with_event_time_stamps")
    else {
        return;
    };
    let op = "held-op";
    trail::init(config(&syslog.socket, op)).unwrap();

    trail::event(
        Level::Info,
        Record::RunStart,
        "freeze",
        &[],
        "before the window",
    );
    trail::hold();
    assert!(trail::is_held());
    trail::event(
        Level::Info,
        Record::Freeze,
        "freeze",
        &[("mount", "/data".into())],
        "held 1",
    );
    trail::human("frozen /data (held line)");
    log::info!(target: "audit", msgid = "thaw", phase = "freeze", mount = "/data"; "held 2");

    // A marker sent around the trail: once rsyslogd has written it, anything
    // sent before it would be there too.
    let marker = "<86>1 - - marker - - - flush marker";
    let raw = UnixDatagram::unbound().unwrap();
    raw.send_to(marker.as_bytes(), &syslog.socket).unwrap();
    syslog.wait_for("the marker", |l| {
        l.iter().any(|l| l.ends_with("flush marker"))
    });
    sleep(Duration::from_millis(300));
    let lines = syslog.lines();
    assert!(
        !lines.iter().any(|l| l.contains("held ")),
        "held records leaked: {lines:#?}"
    );
    assert_eq!(trail::delivery_report().sent, 1);

    let released_at = now_micros();
    trail::release();
    assert!(!trail::is_held());
    trail::event(
        Level::Info,
        Record::Window,
        "freeze",
        &[],
        "after the window",
    );

    let lines = syslog.wait_for("the released records", |l| {
        l.iter().any(|l| l.ends_with("after the window"))
    });
    let msgs: Vec<String> = lines.iter().map(|l| parse_5424(l).unwrap().msg).collect();
    assert_eq!(
        msgs,
        [
            "before the window",
            "flush marker",
            "held 1",
            "held 2",
            "after the window"
        ]
    );
    let recs = ours(&lines);
    assert!(recs.iter().all(|r| r.param("op") == Some(op)));
    // Stamped when the event happened, not when it was sent.
    assert!(
        timestamp_micros(&recs[1].timestamp) < released_at,
        "{:?}",
        recs[1]
    );
    assert!(
        timestamp_micros(&recs[2].timestamp) < released_at,
        "{:?}",
        recs[2]
    );
    assert!(
        timestamp_micros(&recs[3].timestamp) >= released_at,
        "{:?}",
        recs[3]
    );
    assert_eq!(recs[2].param("mount"), Some("/data"));
    assert_eq!(trail::delivery_report().sent, 4);
}

#[test]
fn a_restarted_rsyslogd_is_reconnected_without_losing_records() {
    let _g = serial();
    let Some(mut syslog) =
        syslog_or_skip("a_restarted_rsyslogd_is_reconnected_without_losing_records")
    else {
        return;
    };
    trail::init(config(&syslog.socket, "restart-op")).unwrap();
    trail::event(Level::Info, Record::RunStart, "run", &[], "before restart");
    syslog.wait_for("the first record", |l| !l.is_empty());
    syslog.restart().unwrap();
    trail::event(Level::Info, Record::RunEnd, "run", &[], "after restart");
    let lines = syslog.wait_for("the second record", |l| l.len() >= 2);
    let msgids: Vec<String> = ours(&lines).into_iter().map(|r| r.msgid).collect();
    assert_eq!(msgids, ["run-start", "run-end"]);
    let report = trail::delivery_report();
    assert_eq!(
        (report.sent, report.dropped, report.unavailable),
        (2, 0, None)
    );
}

#[test]
fn an_oversized_record_arrives_whole_with_its_msg_cut_and_marked() {
    let _g = serial();
    let Some(syslog) =
        syslog_or_skip("an_oversized_record_arrives_whole_with_its_msg_cut_and_marked")
    else {
        return;
    };
    trail::init(config(&syslog.socket, "big-op")).unwrap();
    let output = "ü".repeat(20_000);
    log::debug!(target: "audit", msgid = "script-output", phase = "post", stream = "stderr"; "{output}");
    trail::event(Level::Info, Record::RunEnd, "post", &[], "next");
    let lines = syslog.wait_for("both records", |l| l.len() >= 2);
    let recs = ours(&lines);
    assert_eq!(recs.len(), 2, "{lines:#?}");
    assert!(
        lines[0].len() <= trail::MAX_RECORD_BYTES,
        "{}",
        lines[0].len()
    );
    assert_eq!(recs[0].param("stream"), Some("stderr"));
    assert_eq!(recs[0].param("truncated"), Some("true"));
    assert!(recs[0].msg.starts_with("üüü") && recs[0].msg.ends_with("…[truncated]"));
    assert_eq!(recs[1].msg, "next");
}

#[test]
fn no_listener_neither_fails_nor_blocks_and_is_reported() {
    let _g = serial();
    let missing = PathBuf::from(format!(
        "/run/quiesce-syslog-test.absent.{}/log.sock",
        std::process::id()
    ));
    assert!(!missing.exists());
    trail::init(config(&missing, "absent-op")).unwrap();
    let started = Instant::now();
    for i in 0..100 {
        trail::event(
            Level::Info,
            Record::ScriptProgress,
            "run",
            &[("i", i.to_string())],
            "nobody listens",
        );
    }
    trail::hold();
    log::info!(target: "audit", msgid = "freeze", phase = "freeze"; "held with nobody listening");
    trail::release();
    eprintln!(
        "101 records to an absent socket took {:?}",
        started.elapsed()
    );
    let report = trail::delivery_report();
    assert_eq!((report.sent, report.dropped), (0, 101));
    let why = report.unavailable.clone().expect("unavailable is reported");
    assert!(why.starts_with(&missing.display().to_string()), "{why}");
    assert!(
        report.warning().unwrap().contains("101 of 101"),
        "{:?}",
        report.warning()
    );

    // A socket file nobody listens on any more (a crashed daemon): refused.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the stale-socket half: needs root for a scratch dir under /run");
        return;
    }
    let dir = PathBuf::from(format!(
        "/run/quiesce-syslog-test.stale.{}",
        std::process::id()
    ));
    fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let stale = dir.join("log.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    trail::init(config(&stale, "stale-op")).unwrap();
    trail::event(Level::Info, Record::ScriptProgress, "run", &[], "refused");
    let report = trail::finish();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!((report.sent, report.dropped), (0, 1));
    let why = report.unavailable.expect("unavailable is reported");
    assert!(why.contains("refused"), "{why}");
}

#[test]
fn a_full_socket_buffer_drops_and_counts_instead_of_blocking() {
    let _g = serial();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped a_full_socket_buffer_drops_and_counts_instead_of_blocking: needs root for a scratch dir under /run");
        return;
    }
    let dir = PathBuf::from(format!(
        "/run/quiesce-syslog-test.full.{}",
        std::process::id()
    ));
    fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let path = dir.join("log.sock");
    // A daemon that has stopped reading.
    let stuck = UnixDatagram::bind(&path).unwrap();
    trail::init(config(&path, "full-op")).unwrap();
    for _ in 0..3000 {
        trail::event(
            Level::Debug,
            Record::ScriptOutput,
            "pre",
            &[],
            &"x".repeat(2000),
        );
    }
    let report = trail::finish();
    drop(stuck);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.sent + report.dropped, 3000, "{report:?}");
    assert!(report.sent > 0 && report.dropped > 0, "{report:?}");
    assert_eq!(report.unavailable, None);
}
