//! The audit trail as a compliance team's SIEM sees it: records go through a
//! real rsyslogd (its own config, socket and output file under /run) and come
//! back out as RFC 5424 lines, which these tests parse.
//!
//! Needs root (the scratch directory lives under /run, as root-owned 0700)
//! and rsyslogd (`apt-get install rsyslog`; scripts/test.sh installs it).
//! The `log` facade and the trail are process-global, so the tests here run
//! one at a time and re-initialise the trail.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::Level;
use quiesce::audit::{self, AuditConfig, Facility};

// ---------------------------------------------------------------------------
// TestSyslog: a private rsyslogd for one test. Self-contained so it can move
// to tests/common/ unchanged.

/// A real rsyslogd listening on `socket` (a unix datagram socket) and writing
/// every record it receives there to `out` in RFC 5424
/// (`RSYSLOG_SyslogProtocol23Format`). Killed and cleaned up on drop.
pub struct TestSyslog {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub out: PathBuf,
    rsyslogd: PathBuf,
    child: Option<Child>,
}

impl TestSyslog {
    /// Why a TestSyslog cannot run here (not root, no rsyslogd), or the
    /// rsyslogd binary to use.
    pub fn prerequisites() -> Result<PathBuf, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "needs root: it starts rsyslogd with a root-owned socket dir under /run".into(),
            );
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join("rsyslogd"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                "rsyslogd not installed (apt-get install rsyslog; scripts/test.sh does)".into()
            })
    }

    /// Starts rsyslogd in a fresh root-owned 0700 directory under /run (not
    /// /tmp: nobody else can pre-create or swap anything in it) and waits for
    /// its socket to appear.
    pub fn start() -> io::Result<TestSyslog> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let rsyslogd = Self::prerequisites().map_err(io::Error::other)?;
        let dir = PathBuf::from(format!(
            "/run/quiesce-syslog-test.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // create, not create_all: fails if anything is already there.
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        fs::DirBuilder::new().mode(0o700).create(dir.join("work"))?;
        let socket = dir.join("log.sock");
        let out = dir.join("out.log");
        // SysSock.Use="off": never touch the system's /dev/log.
        // useSpecialParser="off": the default special parser only knows the
        //   BSD local format and folds an RFC 5424 record into MSG.
        // ignoreTimestamp="off": keep the record's own (event-time) stamp;
        //   the default replaces it with the time of receipt.
        // ratelimit.interval="0": a burst of script output is not throttled.
        // The ruleset keeps rsyslogd's own messages out of out.log.
        let conf = format!(
            r#"global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" ruleset="quiesce"
      useSpecialParser="off" parseHostname="on" ignoreTimestamp="off"
      ratelimit.interval="0")
ruleset(name="quiesce") {{
    action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
            work = dir.join("work").display(),
            socket = socket.display(),
            out = out.display(),
        );
        fs::write(dir.join("rsyslog.conf"), conf)?;
        let mut s = TestSyslog {
            dir,
            socket,
            out,
            rsyslogd,
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = fs::File::create(self.dir.join("rsyslogd.stderr"))?;
        let child = Command::new(&self.rsyslogd)
            .arg("-n") // no fork: it stays our child and dies with the guard
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "rsyslogd did not create {} within 10 s; its stderr: {}",
                    self.socket.display(),
                    self.stderr()
                )));
            }
            sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // SIGTERM lets rsyslogd flush its queue and remove its socket.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops rsyslogd and starts it again on the same socket path, the way a
    /// package upgrade or `systemctl restart rsyslog` does.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let _ = fs::remove_file(&self.socket);
        self.spawn()
    }

    /// The records written so far, one per line.
    pub fn lines(&self) -> Vec<String> {
        // Lossy: a record rsyslogd cut inside a UTF-8 sequence must show up
        // as a failed assertion, not as an empty file.
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Polls `out` until `done` holds (or 10 s pass, which fails the test:
    /// a bound on a hang, not a speed requirement).
    pub fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            if Instant::now() > deadline {
                panic!(
                    "rsyslogd never wrote {what}; out.log:\n{}\nrsyslogd stderr:\n{}",
                    lines.join("\n"),
                    self.stderr()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }
}

impl Drop for TestSyslog {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// An RFC 5424 parser, independent of the code under test.

#[derive(Debug)]
struct Syslog5424 {
    pri: u16,
    version: u8,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    /// (SD-ID, params in order, values unescaped)
    sd: Vec<(String, Vec<(String, String)>)>,
    msg: String,
}

impl Syslog5424 {
    fn param(&self, name: &str) -> Option<&str> {
        self.sd
            .iter()
            .find(|(id, _)| id == "quiesce@32473")
            .and_then(|(_, ps)| ps.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v.as_str())
    }

    fn params(&self) -> Vec<(&str, &str)> {
        self.sd
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }
}

fn parse_5424(line: &str) -> Result<Syslog5424, String> {
    let err = |what: &str| format!("{what} in {line:?}");
    let rest = line.strip_prefix('<').ok_or_else(|| err("no PRI"))?;
    let (pri, rest) = rest
        .split_once('>')
        .ok_or_else(|| err("unterminated PRI"))?;
    let pri: u16 = pri.parse().map_err(|_| err("bad PRI"))?;
    let mut fields = rest.splitn(7, ' ');
    let mut next = |what: &str| fields.next().map(str::to_owned).ok_or_else(|| err(what));
    let version: u8 = next("no VERSION")?
        .parse()
        .map_err(|_| err("bad VERSION"))?;
    let timestamp = next("no TIMESTAMP")?;
    let hostname = next("no HOSTNAME")?;
    let app_name = next("no APP-NAME")?;
    let procid = next("no PROCID")?;
    let msgid = next("no MSGID")?;
    let rest = next("no STRUCTURED-DATA")?;

    let mut sd = Vec::new();
    let mut chars = rest.chars().peekable();
    if rest.starts_with('-') {
        chars.next();
    } else {
        while chars.peek() == Some(&'[') {
            chars.next();
            let mut id = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == ']' {
                    break;
                }
                id.push(c);
                chars.next();
            }
            let mut params = Vec::new();
            while chars.next_if_eq(&' ').is_some() {
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    name.push(c);
                }
                if chars.next() != Some('"') {
                    return Err(err("PARAM-VALUE not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .ok_or_else(|| err("unterminated PARAM-VALUE"))?
                    {
                        '\\' => match chars.peek() {
                            // RFC 5424 §6.3.3: only these three are escapes.
                            Some(&c @ ('"' | '\\' | ']')) => {
                                value.push(c);
                                chars.next();
                            }
                            _ => value.push('\\'),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                params.push((name, value));
            }
            if chars.next() != Some(']') {
                return Err(err("unterminated SD-ELEMENT"));
            }
            sd.push((id, params));
        }
    }
    let rest: String = chars.collect();
    let msg = match rest.strip_prefix(' ') {
        Some(m) => m.to_owned(),
        None if rest.is_empty() => String::new(),
        None => return Err(err("no SP between STRUCTURED-DATA and MSG")),
    };
    Ok(Syslog5424 {
        pri,
        version,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        sd,
        msg,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` to microseconds since the epoch (civil
/// date arithmetic written independently of the module's).
fn timestamp_micros(ts: &str) -> i64 {
    assert_eq!(ts.len(), 27, "not RFC 3339 UTC with microseconds: {ts}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
        "{ts}"
    );
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let days_before_month =
        [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(m - 1) as usize];
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
    days += days_before_month + d - 1 + i64::from(m > 2 && leap(y));
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    secs * 1_000_000 + n(20..26)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

// ---------------------------------------------------------------------------

/// The trail is process-global: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    audit::reset_for_tests();
    g
}

fn syslog_or_skip(test: &str) -> Option<TestSyslog> {
    if let Err(why) = TestSyslog::prerequisites() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    Some(TestSyslog::start().expect("start rsyslogd"))
}

fn config(socket: &Path, op: &str) -> AuditConfig {
    AuditConfig {
        socket: socket.to_owned(),
        facility: Facility::AuthPriv,
        operation_id: op.to_owned(),
        app_name: None,
        verbose: false,
    }
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
    audit::init(config(&syslog.socket, op)).unwrap();

    log::info!(target: "audit", msgid = "run-start", phase = "run",
        config_sha256 = "9f86d081884c7d65"; "run started");
    log::info!(target: "audit", msgid = "script-start", phase = "pre",
        path = "/etc/quiesce/pre.sh", argv = TRICKY, pid = 1234; "pre-script started");
    log::debug!(target: "audit", msgid = "script-output", phase = "pre",
        stream = "stdout"; "flushing tables… done ✓");
    audit::event(
        Level::Warn,
        "script-exit",
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
    log::error!(target: "audit", msgid = "result", phase = "run", code = 308; "failure: Pre-ScriptTimeout");

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
            "result"
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

    let report = audit::delivery_report();
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
    audit::init(config(&syslog.socket, op)).unwrap();

    audit::event(
        Level::Info,
        "freeze-start",
        "freeze",
        &[],
        "before the window",
    );
    audit::hold();
    assert!(audit::is_held());
    audit::event(
        Level::Info,
        "freeze",
        "freeze",
        &[("mount", "/data".into())],
        "held 1",
    );
    audit::human("frozen /data (held line)");
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
    assert_eq!(audit::delivery_report().sent, 1);

    let released_at = now_micros();
    audit::release();
    assert!(!audit::is_held());
    audit::event(Level::Info, "window", "freeze", &[], "after the window");

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
    assert_eq!(audit::delivery_report().sent, 4);
}

#[test]
fn a_restarted_rsyslogd_is_reconnected_without_losing_records() {
    let _g = serial();
    let Some(mut syslog) =
        syslog_or_skip("a_restarted_rsyslogd_is_reconnected_without_losing_records")
    else {
        return;
    };
    audit::init(config(&syslog.socket, "restart-op")).unwrap();
    audit::event(Level::Info, "one", "run", &[], "before restart");
    syslog.wait_for("the first record", |l| !l.is_empty());
    syslog.restart().unwrap();
    audit::event(Level::Info, "two", "run", &[], "after restart");
    let lines = syslog.wait_for("the second record", |l| l.len() >= 2);
    let msgids: Vec<String> = ours(&lines).into_iter().map(|r| r.msgid).collect();
    assert_eq!(msgids, ["one", "two"]);
    let report = audit::delivery_report();
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
    audit::init(config(&syslog.socket, "big-op")).unwrap();
    let output = "ü".repeat(20_000);
    log::debug!(target: "audit", msgid = "script-output", phase = "post", stream = "stderr"; "{output}");
    audit::event(Level::Info, "after", "post", &[], "next");
    let lines = syslog.wait_for("both records", |l| l.len() >= 2);
    let recs = ours(&lines);
    assert_eq!(recs.len(), 2, "{lines:#?}");
    assert!(
        lines[0].len() <= audit::MAX_RECORD_BYTES,
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
    audit::init(config(&missing, "absent-op")).unwrap();
    let started = Instant::now();
    for i in 0..100 {
        audit::event(
            Level::Info,
            "tick",
            "run",
            &[("i", i.to_string())],
            "nobody listens",
        );
    }
    audit::hold();
    log::info!(target: "audit", msgid = "held", phase = "freeze"; "held with nobody listening");
    audit::release();
    eprintln!(
        "101 records to an absent socket took {:?}",
        started.elapsed()
    );
    let report = audit::delivery_report();
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
    audit::init(config(&stale, "stale-op")).unwrap();
    audit::event(Level::Info, "tick", "run", &[], "refused");
    let report = audit::finish();
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
    audit::init(config(&path, "full-op")).unwrap();
    for _ in 0..3000 {
        audit::event(Level::Debug, "script-output", "pre", &[], &"x".repeat(2000));
    }
    let report = audit::finish();
    drop(stuck);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.sent + report.dropped, 3000, "{report:?}");
    assert!(report.sent > 0 && report.dropped > 0, "{report:?}");
    assert_eq!(report.unavailable, None);
}
