//! The shipped forwarding drop-ins against the real daemons (issue 25):
//! `packaging/examples/rsyslog-quiesce.conf` in rsyslog (Debian's package,
//! with rsyslog-gnutls) and `packaging/examples/syslog-ng-quiesce.conf` in
//! syslog-ng (Debian's syslog-ng-core, unpacked with `dpkg-deb -x` by
//! scripts/test.sh: it conflicts with rsyslog). Each daemon runs inside the
//! private journald's mount namespace (tests/common/journald.rs), reads that
//! journal, and forwards over TLS with a client certificate (certificates
//! made here with `openssl`) to a collector on 127.0.0.1
//! (tests/helpers/tls_collector.py) that keeps the raw bytes. The test then
//! holds every record of a `snapshot` — a pre-script writing 64 KiB of
//! multi-line output, a post-script writing more than the trail keeps (a
//! record of twice 64 KiB) — against the journal: each arrives once, whole,
//! with its MSGID and structured data byte-identical.
//!
//! The drop-ins are used as shipped: only the collector's address and port
//! and the certificate paths (the FILL-IN items) are replaced, each exactly
//! where the file has it.
//!
//! Needs root, systemd-journald, rsyslogd with lmnsd_gtls, the unpacked
//! syslog-ng, openssl, python3 and mkfs.ext4; skipped loudly otherwise,
//! failed instead when `QUIESCE_FORWARD_TESTS=1` (scripts/test.sh sets it
//! after installing them). Freezes only a loop-mounted scratch ext4.

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::journald::{field, field_bytes, TestJournal};
use common::rsyslog::parse_5424;
use common::scratchfs::{self, ScratchFs};
use common::{Run, Setup};
use serde_json::{Map, Value};

/// Inside the journal's namespace: the certificates, the daemons' files.
const FWD: &str = "/run/fwd";
/// The pre-script's output: 1024 lines of 64 bytes, exactly 64 KiB.
const PRE_LINES: usize = 1024;
/// The post-script's: 3200 lines of 64 bytes (200 KiB), more than the
/// 64 KiB quiesce keeps at each end, so its record carries the first and
/// the last 64 KiB and the mark between them (about 128 KiB).
const POST_LINES: usize = 3200;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn strict() -> bool {
    std::env::var("QUIESCE_FORWARD_TESTS").as_deref() == Ok("1")
}

/// Where scripts/test.sh unpacks syslog-ng-core.
fn syslog_ng_root() -> PathBuf {
    std::env::var_os("QUIESCE_SYSLOG_NG_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/syslog-ng"))
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(name).is_file())
}

/// What this machine lacks for the test, if anything.
fn missing(daemon: Daemon) -> Option<String> {
    if let Err(why) = TestJournal::prerequisites() {
        return Some(why);
    }
    if !scratchfs::have_mkfs("ext4") {
        return Some("mkfs.ext4 (e2fsprogs)".into());
    }
    for (tool, package) in [
        ("openssl", "openssl"),
        ("python3", "python3"),
        ("nsenter", "util-linux"),
    ] {
        if !on_path(tool) {
            return Some(format!("{tool} ({package})"));
        }
    }
    match daemon {
        Daemon::Rsyslog(_) => {
            if !on_path("rsyslogd") {
                return Some("rsyslogd (apt-get install rsyslog)".into());
            }
            let gtls = fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .flatten()
                .any(|d| d.path().join("rsyslog/lmnsd_gtls.so").is_file());
            if !gtls {
                return Some("rsyslog's TLS driver (apt-get install rsyslog-gnutls)".into());
            }
        }
        Daemon::SyslogNg => {
            let bin = syslog_ng_root().join("usr/sbin/syslog-ng");
            if !bin.is_file() {
                return Some(format!(
                    "{} (scripts/test.sh unpacks syslog-ng-core there with dpkg-deb -x)",
                    bin.display()
                ));
            }
        }
    }
    None
}

/// Skips (or, under scripts/test.sh, fails) when something is missing.
fn skip(test: &str, daemon: Daemon) -> bool {
    let Some(what) = missing(daemon) else {
        return false;
    };
    assert!(
        !strict(),
        "{test}: needs {what}; QUIESCE_FORWARD_TESTS=1 says scripts/test.sh installed it"
    );
    eprintln!("SKIPPED {test}: needs {what}; CI runs it (scripts/test.sh)");
    true
}

// ---------------------------------------------------------------------------
// Certificates, the collector, the daemons.

/// A CA, the collector's certificate (for siem.example.net, the name the
/// drop-ins verify, and 127.0.0.1) and this host's client certificate, all
/// inside the namespace under /run/fwd/tls.
fn make_certificates(j: &TestJournal) {
    let dir = j.outside(&format!("{FWD}/tls"));
    fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(&[
        &["req", "-x509"][..],
        &key,
        &[
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        ],
        &["-subj", "/CN=quiesce test CA"],
    ]
    .concat());
    for (name, cn, san) in [
        (
            "server",
            "siem.example.net",
            "DNS:siem.example.net,IP:127.0.0.1",
        ),
        ("client", "vm.example.net", "DNS:vm.example.net"),
    ] {
        let (k, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        run(&[
            &["req"][..],
            &key,
            &["-nodes", "-keyout", &k, "-out", &csr],
            &["-subj", &format!("/CN={cn}")],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

/// The SIEM: tests/helpers/tls_collector.py on 127.0.0.1, TLS with the
/// client's certificate required; keeps each connection's bytes.
struct Collector {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Collector {
    fn start(j: &TestJournal, out: PathBuf) -> Collector {
        fs::create_dir_all(&out).unwrap();
        let tls = |f: &str| j.outside(&format!("{FWD}/tls/{f}"));
        let child = Command::new("python3")
            .arg(repo().join("tests/helpers/tls_collector.py"))
            .arg(tls("server.pem"))
            .arg(tls("server.key"))
            .arg(tls("ca.pem"))
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(out.join("collector.stderr")).unwrap())
            .spawn()
            .expect("start the collector");
        let mut c = Collector {
            child,
            out,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.out.join("port").exists() {
            assert!(
                Instant::now() < deadline,
                "the collector did not listen within 10 s: {}",
                fs::read_to_string(c.out.join("collector.stderr")).unwrap_or_default()
            );
            sleep(Duration::from_millis(20));
        }
        c.port = fs::read_to_string(c.out.join("port"))
            .unwrap()
            .parse()
            .unwrap();
        c
    }

    /// Every frame received so far, on every connection, in order.
    fn frames(&self) -> Vec<Vec<u8>> {
        let mut conns: Vec<PathBuf> = fs::read_dir(&self.out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("conn-") && !n.ends_with(".error"))
            })
            .collect();
        conns.sort_by_key(|p| {
            p.file_name().unwrap().to_str().unwrap()[5..]
                .parse::<u32>()
                .unwrap()
        });
        conns
            .iter()
            .flat_map(|p| octet_counted(&fs::read(p).unwrap(), p))
            .collect()
    }

    /// The frames of operation `op`, once its run-end has arrived.
    fn wait_for_run(&self, op: &str, daemon: &Forwarder) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let needle = format!("op=\"{op}\"");
        loop {
            let ops: Vec<Vec<u8>> = self
                .frames()
                .into_iter()
                .filter(|f| contains(f, needle.as_bytes()))
                .collect();
            if ops.iter().any(|f| contains(f, b" run-end [")) {
                return ops;
            }
            assert!(
                Instant::now() < deadline,
                "no run-end of {op} at the collector within 20 s; {} of its frames arrived\n{}\n{}",
                ops.len(),
                daemon.log(),
                self.errors()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn errors(&self) -> String {
        let mut out = String::new();
        for e in fs::read_dir(&self.out).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("error") || name.ends_with(".stderr") {
                out += &format!(
                    "collector {name}: {}\n",
                    fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
        }
        out
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// RFC 6587 octet counting, as RFC 5425 frames syslog over TLS:
/// `MSG-LEN SP SYSLOG-MSG`. Anything else (a newline-framed stream, a cut
/// frame at the end of a closed connection) fails the test, quoted.
fn octet_counted(data: &[u8], from: &Path) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let quote = || String::from_utf8_lossy(&data[i..data.len().min(i + 120)]).into_owned();
        let sp = data[i..]
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or_else(|| panic!("{}: no MSG-LEN at byte {i}: {:?}", from.display(), quote()));
        let len: usize = std::str::from_utf8(&data[i..i + sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{}: not octet-counted at byte {i}: {:?}",
                    from.display(),
                    quote()
                )
            });
        let start = i + sp + 1;
        if start + len > data.len() {
            break; // still arriving
        }
        frames.push(data[start..start + len].to_vec());
        i = start + len;
    }
    frames
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RsyslogHost {
    /// Debian and Ubuntu: /etc/rsyslog.conf does not load imjournal; the
    /// drop-in does.
    Debian,
    /// RHEL and the like: /etc/rsyslog.conf loads imjournal first; the
    /// drop-in's module() line is deleted, as its comment says.
    Rhel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Rsyslog(RsyslogHost),
    SyslogNg,
}

/// A forwarding daemon inside the journal's namespace; stopped on drop.
struct Forwarder {
    child: Child,
    log: PathBuf,
}

impl Forwarder {
    fn log(&self) -> String {
        format!(
            "daemon output:\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        common::signal(self.child.id() as i32, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with `from` replaced by `to`, which must occur exactly once: a
/// drop-in whose FILL-IN items moved fails here, not silently later.
fn fill_in(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the drop-in should have {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

/// The shipped drop-in with the collector's address, port and the test's
/// certificates filled in (and nothing else changed).
fn drop_in(daemon: Daemon, port: u16) -> String {
    let (file, fills): (&str, Vec<(&str, String)>) = match daemon {
        Daemon::Rsyslog(_) => (
            "packaging/examples/rsyslog-quiesce.conf",
            vec![
                ("target=\"siem.example.net\"", "target=\"127.0.0.1\"".into()),
                ("port=\"6514\"", format!("port=\"{port}\"")),
            ],
        ),
        Daemon::SyslogNg => (
            "packaging/examples/syslog-ng-quiesce.conf",
            vec![(
                "(\"siem.example.net\" port(6514)",
                format!("(\"127.0.0.1\" port({port})"),
            )],
        ),
    };
    let mut text = fs::read_to_string(repo().join(file)).unwrap();
    for (from, to) in fills {
        text = fill_in(&text, from, &to);
    }
    for (shipped, ours) in [
        ("/etc/ssl/quiesce/siem-ca.pem", "ca.pem"),
        ("/etc/ssl/quiesce/client-cert.pem", "client.pem"),
        ("/etc/ssl/quiesce/client-key.pem", "client.key"),
    ] {
        text = fill_in(&text, shipped, &format!("{FWD}/tls/{ours}"));
    }
    if daemon == Daemon::Rsyslog(RsyslogHost::Rhel) {
        // As the drop-in says for hosts whose rsyslog.conf loads imjournal.
        let line = text
            .lines()
            .find(|l| l.starts_with("module(load=\"imjournal\""))
            .expect("the drop-in loads imjournal")
            .to_string();
        text = fill_in(&text, &format!("{line}\n"), "");
    }
    text
}

/// The host's main rsyslog.conf, in the shape of the distribution's (its
/// system log socket off: /dev/log is the host's), including the drop-in.
fn rsyslog_main(host: RsyslogHost) -> String {
    let modules = match host {
        RsyslogHost::Debian => "module(load=\"imuxsock\" SysSock.Use=\"off\")\n".to_string(),
        RsyslogHost::Rhel => "module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             module(load=\"imjournal\" UsePid=\"system\" FileCreateMode=\"0644\" StateFile=\"imjournal.state\")\n"
            .to_string(),
    };
    format!(
        "global(workDirectory=\"{FWD}/rsyslog\")\n{modules}\
         include(file=\"{FWD}/rsyslog.d/*.conf\")\n\
         *.*;auth,authpriv.none action(type=\"omfile\" file=\"{FWD}/rsyslog/syslog\")\n\
         auth,authpriv.* action(type=\"omfile\" file=\"{FWD}/rsyslog/auth.log\")\n"
    )
}

/// What the syslog-ng drop-in tells the operator to put in place of
/// `system();` in the main configuration's journal source.
const SYSLOG_NG_SOURCE: &str = "systemd-journal(max-field-size(262144));";

/// Debian 12's stock /etc/syslog-ng/syslog-ng.conf, its relevant part (the
/// options, the s_src source, the auth log), with the edit the drop-in
/// asks for. (Its `@include "scl.conf"` is left out: neither part uses the
/// SCL, and the unpacked package has no configured include path.)
fn syslog_ng_main() -> String {
    let dropin =
        fs::read_to_string(repo().join("packaging/examples/syslog-ng-quiesce.conf")).unwrap();
    assert!(
        dropin.contains("replace  system();  with") && dropin.contains(SYSLOG_NG_SOURCE),
        "the drop-in's install steps name the source edit the test makes"
    );
    let stock = "source s_src {\n       system();\n       internal();\n};\n";
    let edited = fill_in(stock, "system();", SYSLOG_NG_SOURCE);
    format!(
        "@version: 3.38\n\
         options {{ chain_hostnames(off); flush_lines(0); use_dns(no); use_fqdn(no);\n\
           dns_cache(no); owner(\"root\"); group(\"adm\"); perm(0640);\n\
           stats_freq(0); bad_hostname(\"^gconfd$\"); }};\n\
         {edited}\
         destination d_auth {{ file(\"{FWD}/syslog-ng/auth.log\"); }};\n\
         filter f_dbg {{ level(debug); }};\n\
         filter f_auth {{ facility(auth, authpriv) and not filter(f_dbg); }};\n\
         log {{ source(s_src); filter(f_auth); destination(d_auth); }};\n\
         @include \"{FWD}/syslog-ng.d/*.conf\"\n"
    )
}

/// Writes the daemon's configuration into the namespace and starts it
/// there, in the foreground, its output to `log` (outside).
fn start_forwarder(j: &TestJournal, daemon: Daemon, port: u16, log: PathBuf) -> Forwarder {
    let write = |inside: &str, text: &str| {
        let p = j.outside(inside);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    let mut cmd = match daemon {
        Daemon::Rsyslog(host) => {
            write(&format!("{FWD}/rsyslog.conf"), &rsyslog_main(host));
            write(
                &format!("{FWD}/rsyslog.d/30-quiesce.conf"),
                &drop_in(daemon, port),
            );
            fs::create_dir_all(j.outside(&format!("{FWD}/rsyslog"))).unwrap();
            let mut c = j.inside("rsyslogd");
            c.args(["-n", "-f", &format!("{FWD}/rsyslog.conf")])
                .args(["-i", &format!("{FWD}/rsyslogd.pid")]);
            c
        }
        Daemon::SyslogNg => {
            // A systemd host, as system() would see it.
            fs::create_dir_all(j.outside("/run/systemd/system")).unwrap();
            write(&format!("{FWD}/syslog-ng.conf"), &syslog_ng_main());
            write(
                &format!("{FWD}/syslog-ng.d/quiesce.conf"),
                &drop_in(daemon, port),
            );
            let dir = format!("{FWD}/syslog-ng");
            fs::create_dir_all(j.outside(&dir)).unwrap();
            let root = syslog_ng_root();
            // The drop-in's disk buffer goes where syslog-ng keeps it by
            // default, /var/lib/syslog-ng: a tmpfs over /var/lib, in a
            // mount namespace of syslog-ng's own, keeps it off the host.
            let mut c = j.inside("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount -t tmpfs -o mode=0755 tmpfs /var/lib && \
                     mkdir -m 0700 /var/lib/syslog-ng && exec \"$0\" \"$@\"",
                )
                .arg(root.join("usr/sbin/syslog-ng"))
                .env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
                .arg(format!(
                    "--module-path={}",
                    root.join("usr/lib/syslog-ng/3.38").display()
                ))
                .args(["-F", "-f", &format!("{FWD}/syslog-ng.conf")])
                .args(["-R", &format!("{dir}/persist")])
                .args(["-c", &format!("{dir}/ctl")])
                .args(["-p", &format!("{dir}/pid")]);
            c
        }
    };
    let out = fs::File::create(&log).unwrap();
    let child = cmd
        .env("TZ", "UTC0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start the forwarder");
    Forwarder { child, log }
}

/// Sends quiesce-shaped probe entries to the journal until one arrives at
/// the collector: then the daemon reads the journal and is connected
/// (rsyslog's imjournal skips what was written before it started).
fn wait_until_forwarding(j: &TestJournal, c: &Collector, f: &mut Forwarder) {
    let sock = UnixDatagram::unbound().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        if let Ok(Some(status)) = f.child.try_wait() {
            panic!("the forwarder exited ({status}):\n{}", f.log());
        }
        let op = format!("probe-{n}");
        let entry = format!(
            "MESSAGE=probe\nPRIORITY=6\nSYSLOG_FACILITY=10\nSYSLOG_IDENTIFIER=quiesce\n\
             SYSLOG_PID=1\nSYSLOG_MSGID=probe\nQUIESCE_TIME=2026-01-01T00:00:00.000000Z\n\
             SYSLOG_STRUCTURED_DATA=[quiesce@32473 op=\"{op}\" phase=\"probe\"]\n"
        );
        let _ = sock.send_to(entry.as_bytes(), j.socket());
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            if c.frames().iter().any(|fr| contains(fr, b"op=\"probe-")) {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the collector within 20 s\n{}\n{}",
            f.log(),
            c.errors()
        );
    }
}

// ---------------------------------------------------------------------------
// The run and what must arrive.

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
}

/// `lines` lines of exactly 64 bytes each, newline included.
fn lines_of_64(tag: &str, lines: usize) -> String {
    assert!(tag.len() == 4);
    format!(
        "i=0; while [ $i -lt {lines} ]; do printf '{tag} %05d: multi-line script output, 64 bytes to a line ......\\n' $i; i=$((i+1)); done"
    )
}

/// A whole `snapshot` with the trail in the private journal: its status.
fn snapshot(s: &Setup, j: &TestJournal, mount: &str) -> Run {
    let socket = j.socket();
    let state = s.s.path("state");
    s.quiesce_with(
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--trail",
            "journal",
            "--journal-socket",
            socket.to_str().unwrap(),
        ],
        &[
            "snapshot",
            "--json",
            "--max-freeze",
            "10",
            "--mount",
            mount,
            "--",
            "sh",
            "-c",
            "echo snap",
        ],
    )
}

/// One record as the collector received it.
struct Arrived {
    msgid: String,
    /// The structured data, byte for byte.
    sd: Vec<u8>,
    msg: Vec<u8>,
    pri: u16,
    timestamp: String,
    app: String,
    procid: String,
}

/// Splits a frame by the journal entry it should be: the header fields,
/// then exactly the entry's SYSLOG_STRUCTURED_DATA, then SP and MSG.
fn arrived(frame: &[u8], sd: &[u8]) -> Option<Arrived> {
    let text = std::str::from_utf8(frame).expect("a record is UTF-8");
    let head = parse_5424(text).unwrap_or_else(|e| panic!("not RFC 5424: {e}"));
    let mut n = 0;
    let after_msgid = frame
        .iter()
        .position(|&b| {
            n += usize::from(b == b' ');
            n == 6
        })
        .map(|p| p + 1)?;
    let rest = &frame[after_msgid..];
    if !rest.starts_with(sd) || rest.get(sd.len()) != Some(&b' ') {
        return None;
    }
    Some(Arrived {
        msgid: head.msgid,
        sd: sd.to_vec(),
        msg: rest[sd.len() + 1..].to_vec(),
        pri: head.pri,
        timestamp: head.timestamp,
        app: head.app_name,
        procid: head.procid,
    })
}

/// MESSAGE as the daemon sends it: rsyslog exactly; syslog-ng's syslog()
/// ends every message with one newline.
fn expected_msg(daemon: Daemon, message: &[u8]) -> Vec<u8> {
    let mut m = message.to_vec();
    if daemon == Daemon::SyslogNg {
        m.push(b'\n');
    }
    m
}

/// Every journal entry of the run arrived once, whole, with the same MSGID,
/// structured data and text; nothing else of the run arrived.
fn assert_arrived_whole(daemon: Daemon, entries: &[Map<String, Value>], frames: &[Vec<u8>]) {
    let mut unmatched: Vec<&Vec<u8>> = frames.iter().collect();
    for e in entries {
        let sd = field_bytes(e, "SYSLOG_STRUCTURED_DATA").unwrap();
        let msgid = field(e, "SYSLOG_MSGID");
        let want = expected_msg(daemon, &field_bytes(e, "MESSAGE").unwrap());
        let at = unmatched
            .iter()
            .position(|f| arrived(f, &sd).is_some_and(|a| a.msgid == msgid && a.msg == want));
        let Some(at) = at else {
            let near: Vec<String> = unmatched
                .iter()
                .filter(|f| contains(f, format!(" {msgid} ").as_bytes()))
                .map(|f| String::from_utf8_lossy(&f[..f.len().min(600)]).into_owned())
                .collect();
            panic!(
                "{daemon:?}: the {msgid} record ({} bytes of MESSAGE) did not arrive whole and once\n\
                 SD: {}\nframes with that MSGID ({}):\n{}",
                want.len(),
                String::from_utf8_lossy(&sd),
                near.len(),
                near.join("\n---\n")
            );
        };
        let a = arrived(unmatched.remove(at), &sd).unwrap();
        let facility: u16 = field(e, "SYSLOG_FACILITY").parse().unwrap();
        let severity: u16 = field(e, "PRIORITY").parse().unwrap();
        assert_eq!(a.pri, facility * 8 + severity, "{msgid}: PRI");
        assert_eq!(a.app, "quiesce", "{msgid}: APP-NAME");
        assert_eq!(a.procid, field(e, "SYSLOG_PID"), "{msgid}: PROCID");
        assert_eq!(a.sd, sd);
        // The event's time (rsyslog: as written; syslog-ng: the same
        // instant, written +00:00 in UTC).
        let time = field(e, "QUIESCE_TIME");
        assert_eq!(a.timestamp[..26], time[..26], "{msgid}: TIMESTAMP");
    }
    assert!(
        unmatched.is_empty(),
        "{daemon:?}: {} record(s) arrived that the journal does not have (twice?):\n{}",
        unmatched.len(),
        unmatched
            .iter()
            .map(|f| String::from_utf8_lossy(&f[..f.len().min(300)]).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The whole scenario for one daemon.
fn forwards_a_snapshot_whole(test: &str, daemon: Daemon) {
    if skip(test, daemon) {
        return;
    }
    let s = Setup::new(test);
    let fs_ = ScratchFs::new(&s.s.dir, "a", "ext4");
    write_script(
        &s.pre,
        &format!(
            "{}\nprintf 'caf\\303\\251 \\tcolumns\\r\\n' >&2",
            lines_of_64("pre ", PRE_LINES)
        ),
    );
    write_script(&s.post, &lines_of_64("post", POST_LINES));
    let j = TestJournal::start();
    make_certificates(&j);
    let c = Collector::start(&j, s.s.path("collector"));
    let mut f = start_forwarder(&j, daemon, c.port, s.s.path("daemon.log"));
    wait_until_forwarding(&j, &c, &mut f);

    let run = snapshot(&s, &j, fs_.path());
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    assert_eq!(run.json()["consistency"], "application", "{ctx}");
    let op = run.json()["operationId"].as_str().unwrap().to_string();
    let entries = j.wait_for_run(&op);
    let frames = c.wait_for_run(&op, &f);
    assert_arrived_whole(daemon, &entries, &frames);

    // The records this test is about are there, and as large as said.
    let output = |phase: &str| {
        entries
            .iter()
            .find(|e| {
                field(e, "SYSLOG_MSGID") == "script-output"
                    && field(e, "QUIESCE_PHASE") == phase
                    && field(e, "QUIESCE_STREAM") == "stdout"
            })
            .map(|e| field_bytes(e, "MESSAGE").unwrap())
            .unwrap_or_else(|| panic!("no {phase}-script output in the journal"))
    };
    let pre = output("pre");
    assert_eq!(pre.len(), 64 * PRE_LINES, "the pre-script's 64 KiB");
    assert_eq!(pre.iter().filter(|&&b| b == b'\n').count(), PRE_LINES);
    let post = output("post");
    assert!(
        post.len() > 128 * 1024 && contains(&post, "bytes omitted]".as_bytes()),
        "the post-script's record carries both ends: {} bytes",
        post.len()
    );
    // Settling the run's own pending post-script is not a recovery.
    let msgids: Vec<String> = entries.iter().map(|e| field(e, "SYSLOG_MSGID")).collect();
    assert!(!msgids.iter().any(|m| m == "post-recovery"), "{msgids:?}");
    assert_eq!(
        msgids.iter().filter(|m| *m == "post-settled").count(),
        1,
        "{msgids:?}"
    );
    // The collector only ever spoke TLS with this host's certificate.
    let handshakes = fs::read_to_string(c.out.join("handshake.error")).unwrap_or_default();
    assert_eq!(handshakes, "", "TLS handshake failures at the collector");
}

#[test]
fn rsyslog_drop_in_forwards_every_record_whole_over_tls() {
    forwards_a_snapshot_whole("fwd-rsyslog", Daemon::Rsyslog(RsyslogHost::Debian));
}

/// RHEL-style: the main configuration loads imjournal before the drop-ins,
/// and the drop-in's own module() line is deleted as its comment says; its
/// maxMessageSize still applies.
#[test]
fn rsyslog_drop_in_works_where_rsyslog_conf_loads_imjournal() {
    forwards_a_snapshot_whole("fwd-rsyslog-rhel", Daemon::Rsyslog(RsyslogHost::Rhel));
}

#[test]
fn syslog_ng_drop_in_forwards_every_record_whole_over_tls() {
    forwards_a_snapshot_whole("fwd-syslog-ng", Daemon::SyslogNg);
}
