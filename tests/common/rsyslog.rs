//! A private rsyslogd for tests ([`TestSyslog`]) and an RFC 5424 parser
//! ([`parse_5424`]) written independently of `quiesce::audit`, so the trail
//! is checked the way a compliance team's SIEM reads it.
//!
//! Needs root (the daemon's directory lives under /run, root-owned 0700) and
//! rsyslogd (`apt-get install rsyslog`; scripts/test.sh installs it).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// TestSyslog: a private rsyslogd for one test.

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

    /// Stops rsyslogd the clean way (SIGTERM): it flushes and removes its
    /// socket. Idempotent.
    pub fn stop(&mut self) {
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

    /// Kills rsyslogd with SIGKILL, the way a crash does: its socket file
    /// stays behind with nobody reading it (senders get ECONNREFUSED).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the daemon this guard started is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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

    /// Every line written so far, parsed; panics naming the line that is not
    /// RFC 5424.
    pub fn records(&self) -> Vec<Syslog5424> {
        self.lines()
            .iter()
            .map(|l| parse_5424(l).unwrap_or_else(|e| panic!("not RFC 5424: {e}")))
            .collect()
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

/// One parsed RFC 5424 record (§6): `<PRI>VERSION SP TIMESTAMP SP HOSTNAME
/// SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA [SP MSG]`.
#[derive(Debug, Clone)]
pub struct Syslog5424 {
    pub pri: u16,
    pub version: u8,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    /// (SD-ID, params in order, values unescaped)
    pub sd: Vec<(String, Vec<(String, String)>)>,
    pub msg: String,
}

impl Syslog5424 {
    /// PRI / 8.
    pub fn facility(&self) -> u16 {
        self.pri / 8
    }

    /// PRI % 8.
    pub fn severity(&self) -> u16 {
        self.pri % 8
    }

    /// A parameter of the `quiesce@32473` element.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.sd
            .iter()
            .find(|(id, _)| id == "quiesce@32473")
            .and_then(|(_, ps)| ps.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter of every element, in order.
    pub fn params(&self) -> Vec<(&str, &str)> {
        self.sd
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }
}

/// Parses one line; the error names what is wrong and quotes the line.
pub fn parse_5424(line: &str) -> Result<Syslog5424, String> {
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
pub fn timestamp_micros(ts: &str) -> i64 {
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

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}
