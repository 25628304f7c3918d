//! The audit trail of real runs of the binary (SPEC.md §8, §9; issue 5), as a
//! compliance team's SIEM receives it: every run sends to its own rsyslogd
//! (tests/common/rsyslog.rs), whose RFC 5424 output file is parsed and
//! checked record by record against the run's status JSON.
//!
//! Needs root (trust checks, scratch filesystems, rsyslogd's socket under
//! /run) and rsyslogd (scripts/test.sh installs it); skipped loudly otherwise.
//! Freezes only a loop-mounted scratch ext4 passed with `--mount`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::rsyslog::{parse_5424, timestamp_micros, Syslog5424, TestSyslog};
use common::scratchfs::{self, ScratchFs};
use common::{MarkerGuard, Run, Setup};
use serde_json::Value;

const SD_ID: &str = "quiesce@32473";
const AUTHPRIV: u16 = 10;
const LOCAL3: u16 = 19;
const DEBUG: u16 = 7;
const INFO: u16 = 6;
const WARNING: u16 = 4;
const ERROR: u16 = 3;

/// SPEC.md §8: the bounding-set drops every policy must make at least.
const MUST_DROP: [&str; 7] = [
    "CAP_SYS_MODULE",
    "CAP_SYS_BOOT",
    "CAP_SYS_RAWIO",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_BPF",
    "CAP_SYS_TIME",
];

/// A set-up, its own rsyslogd and, for runs that freeze, a scratch ext4.
/// Fields drop in order: the filesystem is thawed and unmounted first, then
/// the daemon is stopped, then the scratch directory goes.
struct T {
    fs: Option<ScratchFs>,
    syslog: TestSyslog,
    s: Setup,
}

/// `None` (and a loud skip) when this cannot run here.
fn t(test: &str, with_fs: bool) -> Option<T> {
    if !common::is_root() {
        eprintln!("SKIPPED {test}: needs root (trust checks, loop mounts, rsyslogd under /run); CI runs as root");
        return None;
    }
    if let Err(why) = TestSyslog::prerequisites() {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    if with_fs && !scratchfs::have_mkfs("ext4") {
        eprintln!("SKIPPED {test}: mkfs.ext4 not installed (scripts/test.sh installs e2fsprogs)");
        return None;
    }
    let s = Setup::new(test);
    let syslog = TestSyslog::start().expect("start rsyslogd");
    let fs = with_fs.then(|| ScratchFs::new(&s.s.dir, "a", "ext4"));
    Some(T { fs, syslog, s })
}

impl T {
    /// The binary with this set-up's paths and the trail going to `socket`.
    /// Built by hand rather than with `Setup::quiesce`, which already names
    /// a (non-existent) `--syslog-socket`: clap refuses the option twice.
    fn quiesce_to(&self, socket: &Path, args: &[&str]) -> Run {
        let out = common::quiesce_bin()
            .arg("--config")
            .arg(&self.s.config)
            .arg("--host-config")
            .arg(&self.s.host_config)
            .arg("--run-dir")
            .arg(self.s.s.path("run"))
            .arg("--syslog-socket")
            .arg(socket)
            .arg("--trail")
            .arg("syslog")
            .arg("--state-dir")
            .arg(self.s.s.path("state"))
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// The binary, its trail going to this test's rsyslogd.
    fn quiesce(&self, args: &[&str]) -> Run {
        self.quiesce_to(&self.syslog.socket.clone(), args)
    }

    fn mnt(&self) -> &str {
        self.fs.as_ref().expect("this test has a scratch fs").path()
    }

    /// Every record of operation `op`, once its run-end has been written.
    /// Every line on file must be an RFC 5424 record of quiesce: the daemon
    /// is private to this test.
    fn trail(&self, op: &str) -> Vec<Syslog5424> {
        let lines = self.syslog.wait_for("the run-end record", |ls| {
            ls.iter()
                .filter_map(|l| parse_5424(l).ok())
                .any(|r| r.msgid == "run-end" && r.param("op") == Some(op))
        });
        let recs: Vec<Syslog5424> = lines
            .iter()
            .map(|l| parse_5424(l).unwrap_or_else(|e| panic!("not RFC 5424: {e}")))
            .collect();
        for r in &recs {
            assert!(
                r.app_name == "quiesce" && r.param("op").is_some(),
                "a record that is not quiesce's: {r:?}"
            );
        }
        recs.into_iter()
            .filter(|r| r.param("op") == Some(op))
            .collect()
    }

    /// Every record on file, all of them of operation `op` (a run that was
    /// the only one to send to this test's daemon).
    fn only_trail(&self, op: &str) -> Vec<Syslog5424> {
        let recs = self.trail(op);
        let on_file = self.syslog.lines();
        assert_eq!(
            recs.len(),
            on_file.len(),
            "records without the status operationId {op}:\n{}",
            on_file.join("\n")
        );
        recs
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn f64_param(r: &Syslog5424, name: &str) -> f64 {
    let v = r
        .param(name)
        .unwrap_or_else(|| panic!("no {name} in {r:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}={v:?} is not a number in {r:?}"))
}

fn summary(recs: &[Syslog5424]) -> String {
    recs.iter()
        .map(|r| {
            format!(
                "<{}> {} {} phase={} {:?}",
                r.pri,
                r.timestamp,
                r.msgid,
                r.param("phase").unwrap_or("?"),
                r.msg
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What every record of one run shares: PRI facility, VERSION 1, APP-NAME,
/// one `quiesce@32473` element starting with `op` then `phase`, the same
/// PROCID, a UTC microsecond stamp, and stamps that never go backwards in
/// file order (held records keep their event time but are sent in order).
fn assert_envelope(recs: &[Syslog5424], op: &str, facility: u16) {
    assert!(!recs.is_empty());
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut last = i64::MIN;
    for r in recs {
        let ctx = || format!("{r:?}\nall:\n{}", summary(recs));
        assert_eq!(r.facility(), facility, "PRI facility: {}", ctx());
        assert_eq!(r.version, 1, "VERSION: {}", ctx());
        assert_eq!(r.app_name, "quiesce", "APP-NAME: {}", ctx());
        assert_eq!(r.hostname, hostname.trim(), "HOSTNAME: {}", ctx());
        assert_eq!(r.procid, recs[0].procid, "PROCID: {}", ctx());
        assert_eq!(r.sd.len(), 1, "one SD-ELEMENT: {}", ctx());
        assert_eq!(r.sd[0].0, SD_ID, "SD-ID: {}", ctx());
        let names: Vec<&str> = r.sd[0].1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..2], ["op", "phase"], "op, phase first: {}", ctx());
        assert_eq!(r.param("op"), Some(op), "op: {}", ctx());
        assert_ne!(r.msgid, "-", "MSGID: {}", ctx());
        let ts = timestamp_micros(&r.timestamp);
        assert!(ts >= last, "stamps go backwards: {}", ctx());
        last = ts;
    }
}

/// Indices of `want` (MSGID, phase) found in this order (other records may
/// come in between); panics with the whole trail when one is missing.
fn in_order(recs: &[Syslog5424], want: &[(&str, &str)]) -> Vec<usize> {
    let mut from = 0;
    let mut at = Vec::new();
    for (msgid, phase) in want {
        let i = recs[from..]
            .iter()
            .position(|r| r.msgid == *msgid && r.param("phase") == Some(phase))
            .unwrap_or_else(|| {
                panic!(
                    "no {msgid} (phase {phase}) after record #{from}, as {want:?} requires; the trail:\n{}",
                    summary(recs)
                )
            });
        at.push(from + i);
        from += i + 1;
    }
    at
}

fn all<'a>(recs: &'a [Syslog5424], msgid: &str, phase: &str) -> Vec<&'a Syslog5424> {
    recs.iter()
        .filter(|r| r.msgid == msgid && r.param("phase") == Some(phase))
        .collect()
}

fn one<'a>(recs: &'a [Syslog5424], msgid: &str, phase: &str) -> &'a Syslog5424 {
    let found = all(recs, msgid, phase);
    assert_eq!(
        found.len(),
        1,
        "exactly one {msgid} (phase {phase}) expected; the trail:\n{}",
        summary(recs)
    );
    found[0]
}

fn op_of(run: &Run) -> String {
    run.json()["operationId"]
        .as_str()
        .unwrap_or_else(|| panic!("no operationId: {}", run.stdout))
        .to_string()
}

fn no_delivery_warning(run: &Run) {
    let w = run.warnings();
    assert!(
        !w.iter()
            .any(|w| w.contains("audit trail") || w.contains("not delivered")),
        "the trail reports undelivered records: {w:?}\nstderr:\n{}",
        run.stderr
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// script-start of one phase against `phases.<phase>` of the status: the
/// file that ran (path, SHA-256), argv, pid, and what it really held.
fn check_script_start(r: &Syslog5424, phase: &Value, script: &Path) {
    let a = &phase["attempts"][0];
    assert_eq!(r.severity(), INFO, "{r:?}");
    assert_eq!(r.param("script"), Some(script.to_str().unwrap()), "{r:?}");
    assert_eq!(r.param("script"), phase["script"].as_str(), "{r:?}");
    let sha = r
        .param("sha256")
        .unwrap_or_else(|| panic!("no sha256: {r:?}"));
    assert_eq!(Some(sha), phase["sha256"].as_str(), "{r:?}");
    assert_eq!(sha, sha256_file(script), "not the script's digest: {r:?}");
    let argv = r.param("argv").unwrap_or_else(|| panic!("no argv: {r:?}"));
    // An unpinned #!/bin/sh script is executed by its path (SPEC §4
    // revised), then the config's two (empty) params: the record is the
    // real execve argv.
    assert_eq!(
        argv,
        format!("{:?}", [script.to_str().unwrap(), "", ""]),
        "{r:?}"
    );
    assert_eq!(r.param("how"), Some("executed by its path"), "{r:?}");
    assert_eq!(
        r.param("pid").map(str::to_owned),
        a["pid"].as_i64().map(|p| p.to_string()),
        "pid vs attempts[0].pid: {r:?}\n{phase}"
    );
    assert_eq!(r.param("attempt"), Some("1"), "{r:?}");
    assert_eq!(r.param("sandbox"), Some("policy"), "{r:?}");
    let held = &a["sandbox"];
    assert_eq!(
        r.param("capEff"),
        Some(strings(&held["capEff"]).join(",").as_str()),
        "capEff vs attempts[0].sandbox: {r:?}\n{held}"
    );
    let bnd = r
        .param("capBnd")
        .unwrap_or_else(|| panic!("no capBnd: {r:?}"));
    assert_eq!(bnd, strings(&held["capBnd"]).join(","), "{r:?}\n{held}");
    let eff = r.param("capEff").unwrap();
    for cap in MUST_DROP {
        assert!(!bnd.split(',').any(|c| c == cap), "{cap} in capBnd: {r:?}");
        assert!(!eff.split(',').any(|c| c == cap), "{cap} in capEff: {r:?}");
    }
    assert!(
        bnd.split(',').any(|c| c == "CAP_SYS_ADMIN"),
        "a root script keeps what it needs: {r:?}"
    );
    assert_eq!(r.param("noNewPrivs"), Some("true"), "{r:?}");
    assert_eq!(r.param("seccomp"), Some("2"), "{r:?}");
}

/// script-exit of one phase against `phases.<phase>.attempts[0]`.
fn check_script_exit(r: &Syslog5424, phase: &Value) {
    let a = &phase["attempts"][0];
    assert_eq!(r.severity(), INFO, "{r:?}");
    assert_eq!(
        r.param("pid").map(str::to_owned),
        a["pid"].as_i64().map(|p| p.to_string()),
        "{r:?}"
    );
    assert_eq!(r.param("exit"), Some("0"), "{r:?}");
    assert_eq!(r.param("signal"), Some("none"), "{r:?}");
    assert_eq!(r.param("timedOut"), Some("false"), "{r:?}");
    assert_eq!(r.param("killed"), Some("[]"), "{r:?}");
    let ms = f64_param(r, "durationMs");
    let status_ms = a["durationMs"].as_f64().unwrap();
    assert!(
        ms > 0.0 && (ms - status_ms).abs() <= 0.051,
        "durationMs {ms} vs status {status_ms}: {r:?}"
    );
    let left: Vec<i64> = a["leftRunningPids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert_eq!(r.param("leftRunning"), Some(format!("{left:?}").as_str()));
}

/// The output record of one phase: debug severity, the text, the stream.
fn check_output(recs: &[Syslog5424], phase: &str, text: &str) {
    let out: Vec<&Syslog5424> = all(recs, "script-output", phase)
        .into_iter()
        .filter(|r| r.param("stream") == Some("stdout"))
        .collect();
    assert_eq!(out.len(), 1, "{phase} stdout record:\n{}", summary(recs));
    let r = out[0];
    assert_eq!(r.severity(), DEBUG, "script output at debug: {r:?}");
    assert!(r.msg.contains(text), "{text:?} not in {r:?}");
    let bytes: usize = r.param("bytes").unwrap().parse().unwrap();
    assert!(bytes >= text.len(), "{r:?}");
}

// ---------------------------------------------------------------------------

/// A whole `snapshot` run: every record, in order, each field against the
/// status JSON, and the freeze window's records held until the thaw.
#[test]
fn snapshot_run_leaves_the_whole_trail_in_rfc5424() {
    let Some(t) = t("trail-snapshot", true) else {
        return;
    };
    let m = MarkerGuard::new(91);
    let pidfile = t.s.s.path("holder.pid");
    write_script(
        &t.s.pre,
        &format!(
            "echo pre >> '{}'\necho 'pre says hello'\nsetsid sleep {} >/dev/null 2>&1 &\necho $! > '{}'",
            t.s.marker.display(),
            m.0,
            pidfile.display()
        ),
    );
    write_script(
        &t.s.post,
        &format!(
            "echo post >> '{}'\necho 'post says bye'",
            t.s.marker.display()
        ),
    );
    // Inside the window: wait (bounded) until rsyslogd has written the last
    // record sent before the freeze, then copy its file and note the time.
    // The freeze record must not be in that copy: it is held until the thaw.
    let during = t.s.s.path("during.log");
    let when = t.s.s.path("during.time");
    let cmd = format!(
        "for i in $(seq 1 250); do grep -qF ' holder-recorded ' '{out}' && break; sleep 0.02; done\n\
         cp '{out}' '{during}'; date +%s%6N > '{when}'; echo snap",
        out = t.syslog.out.display(),
        during = during.display(),
        when = when.display()
    );
    let run = t.quiesce(&[
        "snapshot",
        "--json",
        "--max-freeze",
        "10",
        "--mount",
        t.mnt(),
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    let v = run.json();
    assert_eq!(v["result"], "success", "{ctx}");
    assert_eq!(v["consistency"], "application", "{ctx}");
    assert_eq!(t.s.scripts_ran(), "pre\npost\n");
    no_delivery_warning(&run);
    let op = op_of(&run);
    let recs = t.only_trail(&op);
    assert_envelope(&recs, &op, AUTHPRIV);

    let at = in_order(
        &recs,
        &[
            ("run-start", "snapshot"),
            ("check", "snapshot"),
            ("script-start", "pre"),
            ("script-exit", "pre"),
            ("holder-recorded", "pre"),
            ("freeze", "freeze"),
            ("freeze-complete", "freeze"),
            ("thaw", "freeze"),
            ("window", "freeze"),
            ("snapshot-exit", "snapshot"),
            ("script-start", "post"),
            ("script-exit", "post"),
            ("holder-terminated", "post"),
            ("run-end", "snapshot"),
        ],
    );
    assert_eq!(at[0], 0, "run-start comes first:\n{}", summary(&recs));
    assert_eq!(
        at[13],
        recs.len() - 1,
        "run-end comes last:\n{}",
        summary(&recs)
    );
    // One record per event.
    for (msgid, phase) in [
        ("run-start", "snapshot"),
        ("script-start", "pre"),
        ("script-exit", "pre"),
        ("freeze", "freeze"),
        ("thaw", "freeze"),
        ("window", "freeze"),
        ("snapshot-exit", "snapshot"),
        ("script-start", "post"),
        ("script-exit", "post"),
        ("run-end", "snapshot"),
    ] {
        one(&recs, msgid, phase);
    }
    // Settling the run's own pending post-script record is the normal end
    // of a pre/post pair, not a recovery: a SIEM rule on post-recovery
    // must not fire on every snapshot (issue 25).
    assert!(
        !recs.iter().any(|r| r.msgid == "post-recovery"),
        "a normal run sent post-recovery:\n{}",
        summary(&recs)
    );
    let settled = one(&recs, "post-settled", "snapshot");
    assert_eq!(settled.param("settled"), Some("1"), "{settled:?}");
    for r in &recs {
        let want = if r.msgid == "script-output" {
            DEBUG
        } else {
            INFO
        };
        assert_eq!(r.severity(), want, "severity: {r:?}");
    }

    // run-start: the runner itself.
    let start = &recs[0];
    assert_eq!(start.param("pid"), Some(start.procid.as_str()), "{start:?}");
    assert_eq!(start.param("version"), Some(env!("CARGO_PKG_VERSION")));
    let runner_eff = start.param("capEff").unwrap_or_default();
    assert!(
        runner_eff.split(',').any(|c| c == "CAP_SYS_ADMIN"),
        "the runner's own capabilities: {start:?}"
    );

    // The pre-check: one record per check, all passed, before any script.
    let pre = &v["phases"]["pre"];
    let post = &v["phases"]["post"];
    let checks = all(&recs, "check", "snapshot");
    let first_script = at[2];
    let items: Vec<(&str, &str)> = checks
        .iter()
        .map(|r| {
            (
                r.param("item").unwrap_or("?"),
                r.param("outcome").unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("config", "ok"),
            ("pre-script", "ok"),
            ("post-script", "ok")
        ],
        "{}",
        summary(&recs)
    );
    assert!(
        recs[..first_script]
            .iter()
            .filter(|r| r.msgid == "check")
            .count()
            == 3,
        "checks come before the pre-script:\n{}",
        summary(&recs)
    );
    assert_eq!(
        checks[0].param("sha256"),
        Some(sha256_file(&t.s.config).as_str())
    );
    for (r, phase, path) in [(checks[1], pre, &t.s.pre), (checks[2], post, &t.s.post)] {
        assert_eq!(r.param("script"), Some(path.to_str().unwrap()), "{r:?}");
        assert_eq!(r.param("sha256"), phase["sha256"].as_str(), "{r:?}");
    }

    // Scripts.
    check_script_start(one(&recs, "script-start", "pre"), pre, &t.s.pre);
    check_script_start(one(&recs, "script-start", "post"), post, &t.s.post);
    check_script_exit(one(&recs, "script-exit", "pre"), pre);
    check_script_exit(one(&recs, "script-exit", "post"), post);
    check_output(&recs, "pre", "pre says hello");
    check_output(&recs, "post", "post says bye");

    // The holder: recorded after pre, terminated after post.
    let holder: String = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let recorded = one(&recs, "holder-recorded", "pre");
    assert_eq!(recorded.param("pid"), Some(holder.as_str()), "{recorded:?}");
    // The holder is `sleep <marker>` (setsid execs it in place). Recorded
    // right as the pre-script ends, it may still be between fork and exec;
    // by the time it is terminated its command line is read again and must
    // name it.
    assert!(recorded.param("cmdline").is_some(), "{recorded:?}");
    let terminated = one(&recs, "holder-terminated", "post");
    assert_eq!(
        terminated.param("pid"),
        Some(holder.as_str()),
        "{terminated:?}"
    );
    assert!(
        terminated.param("cmdline").unwrap_or("").contains(&m.0),
        "holder-terminated must name the holder's command line: {terminated:?}"
    );
    assert!(
        post["holdersTerminated"].as_array().is_some_and(|h| h
            .iter()
            .any(|p| p.as_i64().map(|p| p.to_string()) == Some(holder.clone()))),
        "{post}"
    );
    assert_eq!(m.survivors(), Vec::<i32>::new(), "the holder survived");

    // Freeze, thaw, window, against the status and the mount itself.
    let fz = &v["phases"]["freeze"];
    let mounts = fz["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{fz}");
    let freeze = one(&recs, "freeze", "freeze");
    assert_eq!(freeze.param("mount"), Some(t.mnt()), "{freeze:?}");
    assert_eq!(freeze.param("fsType"), Some("ext4"), "{freeze:?}");
    assert!(f64_param(freeze, "durationMs") >= 0.0);
    let thaw = one(&recs, "thaw", "freeze");
    assert_eq!(thaw.param("mount"), Some(t.mnt()), "{thaw:?}");
    let dev = fs::metadata(t.mnt()).unwrap().dev();
    let maj_min = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    assert_eq!(thaw.param("device"), Some(maj_min.as_str()), "{thaw:?}");
    assert_eq!(freeze.param("device"), Some(maj_min.as_str()), "{freeze:?}");
    assert_eq!(
        thaw.param("device"),
        mounts[0]["device"].as_str(),
        "{thaw:?}"
    );
    assert_eq!(thaw.param("fsType"), Some("ext4"), "{thaw:?}");
    let frozen_ms = f64_param(thaw, "frozenMs");
    let status_frozen = mounts[0]["frozenMs"].as_f64().unwrap();
    assert!(
        frozen_ms > 0.0 && (frozen_ms - status_frozen).abs() <= 0.0006,
        "frozenMs {frozen_ms} vs status {status_frozen}"
    );
    let window = one(&recs, "window", "freeze");
    let window_ms = f64_param(window, "windowMs");
    let status_window = fz["windowMs"].as_f64().unwrap();
    assert!(
        (window_ms - status_window).abs() <= 0.0006 && window_ms >= frozen_ms,
        "windowMs {window_ms} vs status {status_window}, frozenMs {frozen_ms}"
    );
    assert_eq!(window.param("mounts"), Some("1"));

    // The snapshot command.
    let snap = one(&recs, "snapshot-exit", "snapshot");
    assert_eq!(snap.param("exit"), Some("0"), "{snap:?}");
    assert_eq!(snap.param("signal"), Some("none"), "{snap:?}");
    assert_eq!(snap.param("frozen"), Some("true"), "{snap:?}");
    assert_eq!(
        snap.param("command"),
        Some(format!("{:?}", ["sh", "-c", cmd.as_str()]).as_str()),
        "{snap:?}"
    );
    assert_eq!(
        snap.param("pid").map(str::to_owned),
        v["phases"]["snapshot"]["pid"]
            .as_i64()
            .map(|p| p.to_string()),
        "{snap:?}"
    );
    assert!(f64_param(snap, "durationMs") > 0.0);

    // The window's records were held: not on file while frozen, stamped
    // with the time of the event, written after it in order.
    let during_recs: Vec<Syslog5424> = fs::read_to_string(&during)
        .unwrap_or_else(|e| panic!("the snapshot command left no copy ({e})\n{ctx}"))
        .lines()
        .map(|l| parse_5424(l).unwrap())
        .collect();
    assert!(
        during_recs.iter().any(|r| r.msgid == "holder-recorded"),
        "rsyslogd had not written the records sent before the freeze within 5 s:\n{}",
        summary(&during_recs)
    );
    assert!(
        !during_recs
            .iter()
            .any(|r| ["freeze", "thaw", "window", "snapshot-exit"].contains(&r.msgid.as_str())),
        "records of the window reached syslog while frozen:\n{}",
        summary(&during_recs)
    );
    let mid: i64 = fs::read_to_string(&when).unwrap().trim().parse().unwrap();
    let freeze_ts = timestamp_micros(&freeze.timestamp);
    let thaw_ts = timestamp_micros(&thaw.timestamp);
    assert!(
        freeze_ts < mid && mid < thaw_ts,
        "freeze {} < inside the window {mid} < thaw {}",
        freeze.timestamp,
        thaw.timestamp
    );

    // The end.
    let end = &recs[recs.len() - 1];
    assert_eq!(end.param("result"), Some("success"), "{end:?}");
    assert_eq!(end.param("consistency"), Some("application"), "{end:?}");
    assert_eq!(end.param("errors"), Some(""), "{end:?}");
}

/// SPEC §9 "run start with config digest": the SHA-256 of the config file
/// that was read is in the trail.
#[test]
fn run_start_records_the_config_digest() {
    let Some(t) = t("trail-digest", false) else {
        return;
    };
    let run = t.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let op = op_of(&run);
    let recs = t.trail(&op);
    let digest = sha256_file(&t.s.config);
    let at = in_order(
        &recs,
        &[
            ("run-start", "pre"),
            ("check", "pre"),
            ("script-start", "pre"),
        ],
    );
    let config = recs[at[0]..at[2]]
        .iter()
        .find(|r| r.msgid == "check" && r.param("item") == Some("config"))
        .unwrap_or_else(|| panic!("no config check before the script:\n{}", summary(&recs)));
    assert_eq!(config.param("outcome"), Some("ok"), "{config:?}");
    assert_eq!(
        config.param("sha256"),
        Some(digest.as_str()),
        "the digest of the config that was read: {config:?}"
    );
}

/// A pre-check failure with continueBackupOnFailure=false: nothing runs, the
/// final record names the error with its code.
#[test]
fn failed_precheck_ends_the_trail_with_failure_and_error_codes() {
    let Some(t) = t("trail-fail", true) else {
        return;
    };
    t.s.config_with(|c| {
        c.insert("continueBackupOnFailure".into(), false.into());
    });
    set_mode(&t.s.post, 0o777);
    let run = t.quiesce(&[
        "snapshot",
        "--json",
        "--mount",
        t.mnt(),
        "--",
        "sh",
        "-c",
        "echo snap",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let v = run.json();
    assert_eq!(run.error_names(), ["InsufficientPermissionforPost-Script"]);
    assert_eq!(t.s.scripts_ran(), "");
    no_delivery_warning(&run);
    let op = op_of(&run);
    let recs = t.trail(&op);
    assert_envelope(&recs, &op, AUTHPRIV);
    in_order(&recs, &[("run-start", "snapshot"), ("run-end", "snapshot")]);
    for msgid in ["script-start", "freeze", "thaw", "window", "snapshot-exit"] {
        assert!(
            !recs.iter().any(|r| r.msgid == msgid),
            "{msgid} after a failed pre-check:\n{}",
            summary(&recs)
        );
    }
    let failed: Vec<&Syslog5424> = all(&recs, "check", "snapshot")
        .into_iter()
        .filter(|r| r.param("outcome") == Some("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", summary(&recs));
    assert_eq!(
        (failed[0].param("error"), failed[0].param("code")),
        (Some("InsufficientPermissionforPost-Script"), Some("307")),
        "{:?}",
        failed[0]
    );
    let end = one(&recs, "run-end", "snapshot");
    assert_eq!(end.severity(), ERROR, "{end:?}");
    assert_eq!(end.param("result"), Some("failure"), "{end:?}");
    assert_eq!(
        end.param("errors"),
        Some("InsufficientPermissionforPost-Script(307)"),
        "{end:?}"
    );
    assert_eq!(
        end.param("consistency"),
        v["consistency"].as_str(),
        "{end:?}"
    );
    assert_eq!(end.param("consistency"), Some("none"), "{end:?}");
}

/// SPEC §9 "one syslog record per event — … each check": every failed
/// pre-check is in the trail as it is found, not only folded into run-end.
#[test]
fn each_failed_check_has_its_own_record() {
    let Some(t) = t("trail-checks", false) else {
        return;
    };
    set_mode(&t.s.pre, 0o777);
    set_mode(&t.s.post, 0o777);
    let run = t.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.error_names(),
        [
            "InsufficientPermissionforPre-Script",
            "InsufficientPermissionforPost-Script"
        ]
    );
    let op = op_of(&run);
    let recs = t.trail(&op);
    let end = one(&recs, "run-end", "pre");
    assert_eq!(
        end.param("errors"),
        Some("InsufficientPermissionforPre-Script(306),InsufficientPermissionforPost-Script(307)")
    );
    // In pre-check order, each with its name and code, before run-end.
    let failed: Vec<&Syslog5424> = recs
        .iter()
        .filter(|r| r.msgid == "check" && r.param("outcome") == Some("failed"))
        .collect();
    let got: Vec<(Option<&str>, Option<&str>)> = failed
        .iter()
        .map(|r| (r.param("error"), r.param("code")))
        .collect();
    assert_eq!(
        got,
        [
            (Some("InsufficientPermissionforPre-Script"), Some("306")),
            (Some("InsufficientPermissionforPost-Script"), Some("307")),
        ],
        "each failed check has a record of its own:\n{}",
        summary(&recs)
    );
    for r in &failed {
        assert_eq!(r.severity(), ERROR, "{r:?}");
        assert_eq!(r.param("phase"), Some("pre"), "{r:?}");
        assert!(
            r.param("detail").is_some_and(|d| !d.is_empty()),
            "what was wrong: {r:?}"
        );
    }
    let passed: Vec<(Option<&str>, Option<&str>)> = all(&recs, "check", "pre")
        .iter()
        .filter(|r| r.param("outcome") != Some("failed"))
        .map(|r| (r.param("item"), r.param("outcome")))
        .collect();
    assert_eq!(passed, [(Some("config"), Some("ok"))], "{}", summary(&recs));
    in_order(
        &recs,
        &[("run-start", "pre"), ("check", "pre"), ("run-end", "pre")],
    );
    assert!(!recs.iter().any(|r| r.msgid == "script-start"));
}

/// `--syslog-facility local3` changes the PRI of every record.
#[test]
fn syslog_facility_option_changes_pri() {
    let Some(t) = t("trail-facility", false) else {
        return;
    };
    let run = t.quiesce(&["pre", "--json", "--syslog-facility", "local3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    no_delivery_warning(&run);
    let op = op_of(&run);
    let recs = t.trail(&op);
    assert_envelope(&recs, &op, LOCAL3);
    in_order(
        &recs,
        &[
            ("run-start", "pre"),
            ("script-start", "pre"),
            ("script-exit", "pre"),
            ("run-end", "pre"),
        ],
    );
    // An unknown facility is a usage error, before anything runs.
    let run = t.quiesce(&["pre", "--json", "--syslog-facility", "kern"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
}

/// A dead syslog daemon (crashed: socket file left, nobody reading; or gone:
/// no socket file) never fails the run, and the run says so.
#[test]
fn a_stopped_syslog_daemon_neither_fails_the_run_nor_goes_unreported() {
    let Some(mut t) = t("trail-nosyslog", false) else {
        return;
    };
    let socket: PathBuf = t.syslog.socket.clone();
    t.syslog.kill();
    assert!(!t.syslog.running());
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");
    for case in ["stale socket", "no socket"] {
        if case == "no socket" {
            fs::remove_file(&socket).unwrap();
        }
        let _ = fs::remove_file(&t.s.marker);
        let started = std::time::Instant::now();
        let run = t.quiesce_to(&socket, &["pre", "--json"]);
        let ctx = format!("{case}\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
        assert_eq!(run.code, 0, "{ctx}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{ctx}"
        );
        assert_eq!(run.json()["result"], "success", "{ctx}");
        assert_eq!(t.s.scripts_ran(), "pre\n", "{ctx}");
        let w = run.warnings();
        let trail_w: Vec<&String> = w.iter().filter(|w| w.contains("not delivered")).collect();
        assert_eq!(trail_w.len(), 1, "{ctx}");
        assert!(
            trail_w[0].contains(socket.to_str().unwrap()),
            "the warning names the socket: {ctx}"
        );
        assert!(
            run.stderr.contains("not delivered"),
            "the operator is told on stderr too: {ctx}"
        );
    }
}

/// `quiesce audit --json`: what a script really holds and the rules in force.
#[test]
fn audit_command_shows_the_sandbox_a_script_gets() {
    let Some(t) = t("trail-audit", false) else {
        return;
    };
    let run = t.quiesce(&["audit", "--json"]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    let v = run.json();
    assert_eq!(v["operation"], "audit", "{ctx}");
    no_delivery_warning(&run);
    let seen = &v["audit"]["observedScript"];
    assert_eq!(seen["noNewPrivs"], true, "{seen}");
    assert_eq!(seen["seccomp"], 2, "{seen}");
    let bnd = strings(&seen["capBnd"]);
    for cap in MUST_DROP {
        assert!(
            !bnd.iter().any(|c| c == cap),
            "{cap} in the probe's CapBnd {bnd:?}"
        );
    }
    let rules = v["audit"]["sandbox"]["seccomp"]["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no audit.sandbox.seccomp.rules: {ctx}"));
    let names: Vec<&str> = rules
        .iter()
        .map(|r| r["syscall"].as_str().unwrap())
        .collect();
    for s in ["kexec_load", "reboot", "bpf"] {
        assert!(names.contains(&s), "{s} not denied: {names:?}");
    }
    assert!(
        names.iter().filter(|s| **s == "ioctl").count() >= 2,
        "FIFREEZE and FITHAW rules: {names:?}"
    );
    for r in rules {
        assert!(
            !r["comment"].as_str().unwrap_or("").trim().is_empty(),
            "a rule without its reason: {r}"
        );
    }
    let op = op_of(&run);
    let recs = t.trail(&op);
    assert_envelope(&recs, &op, AUTHPRIV);
    in_order(&recs, &[("run-start", "audit"), ("run-end", "audit")]);
    assert_eq!(
        one(&recs, "run-end", "audit").param("result"),
        Some("success")
    );
}

/// A broken or insecure policy file stops `audit` and any run with 304.
#[test]
fn broken_or_insecure_policy_is_refused_with_304() {
    let Some(t) = t("trail-policy", false) else {
        return;
    };
    let mut policy: Value =
        serde_json::from_str(quiesce::sandbox::policy::BUILTIN_SCRIPT_POLICY).unwrap();
    policy["capabilities_drop"][0]
        .as_object_mut()
        .unwrap()
        .remove("comment");
    let broken = t.s.s.write(
        "broken-policy.json",
        serde_json::to_vec_pretty(&policy).unwrap(),
        0o644,
    );
    let open = t.s.s.write(
        "open-policy.json",
        quiesce::sandbox::policy::BUILTIN_SCRIPT_POLICY,
        0o666,
    );
    let good = t.s.s.write(
        "good-policy.json",
        quiesce::sandbox::policy::BUILTIN_SCRIPT_POLICY,
        0o644,
    );
    let run = t.quiesce(&["audit", "--json", "--policy", good.to_str().unwrap()]);
    assert_eq!(
        run.code, 0,
        "the same policy, root-owned 0644, is fine: {}",
        run.stderr
    );
    for (what, p) in [("missing comment", &broken), ("mode 0666", &open)] {
        for cmd in ["audit", "pre"] {
            let run = t.quiesce(&[cmd, "--json", "--policy", p.to_str().unwrap()]);
            let ctx = format!(
                "{cmd} with {what}\nstdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            );
            assert_eq!(run.code, 2, "{ctx}");
            let v = run.json();
            assert_eq!(v["errors"][0]["name"], "IncorrectPluginhostFile", "{ctx}");
            assert_eq!(v["errors"][0]["code"], 304, "{ctx}");
            assert_eq!(t.s.scripts_ran(), "", "a script ran: {ctx}");
            let op = op_of(&run);
            let recs = t.trail(&op);
            let end = one(&recs, "run-end", cmd);
            assert_eq!(end.param("result"), Some("failure"), "{end:?}");
            assert_eq!(
                end.param("errors"),
                Some("IncorrectPluginhostFile(304)"),
                "{end:?}"
            );
            assert!(
                !recs.iter().any(|r| r.msgid == "script-start"),
                "{ctx}\n{}",
                summary(&recs)
            );
        }
    }
}

/// `--no-sandbox` is loud: status warning, a warning record, and the script
/// really runs without no_new_privs and seccomp.
#[test]
fn no_sandbox_is_loud_in_status_and_trail() {
    let Some(t) = t("trail-nosandbox", false) else {
        return;
    };
    let run = t.quiesce(&["pre", "--json", "--no-sandbox"]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    assert!(
        run.warnings().iter().any(|w| w.contains("--no-sandbox")),
        "{ctx}"
    );
    assert!(run.stderr.contains("--no-sandbox"), "{ctx}");
    let v = run.json();
    let held = &v["phases"]["pre"]["attempts"][0]["sandbox"];
    assert_eq!(held["noNewPrivs"], false, "{ctx}");
    assert_eq!(held["seccomp"], 0, "{ctx}");
    let op = op_of(&run);
    let recs = t.trail(&op);
    assert_envelope(&recs, &op, AUTHPRIV);
    let at = in_order(
        &recs,
        &[
            ("run-start", "pre"),
            ("sandbox-disabled", "pre"),
            ("script-start", "pre"),
            ("run-end", "pre"),
        ],
    );
    let disabled = &recs[at[1]];
    assert_eq!(disabled.severity(), WARNING, "{disabled:?}");
    assert!(disabled.msg.contains("--no-sandbox"), "{disabled:?}");
    let start = &recs[at[2]];
    assert_eq!(
        start.param("sandbox"),
        Some("DISABLED (--no-sandbox)"),
        "{start:?}"
    );
    assert_eq!(start.param("noNewPrivs"), Some("false"), "{start:?}");
    assert_eq!(start.param("seccomp"), Some("0"), "{start:?}");
}

/// `-v` (SPEC §2, README): every audit record of the run is also echoed on
/// stderr as `level msgid phase: message`, in the order it was sent — and
/// without `-v` none is.
#[test]
fn verbose_echoes_every_audit_record_on_stderr() {
    let Some(t) = t("trail-verbose", false) else {
        return;
    };
    let quiet = t.quiesce(&["pre", "--json"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    let quiet_recs = t.trail(&op_of(&quiet));
    let echoed = |stderr: &str, r: &Syslog5424| {
        let line = format!("{} {}: {}", r.msgid, r.param("phase").unwrap_or("-"), r.msg);
        stderr.lines().any(|l| l.ends_with(&line))
    };
    assert!(
        !quiet_recs.iter().any(|r| echoed(&quiet.stderr, r)),
        "records echoed without -v:\n{}",
        quiet.stderr
    );

    let run = t.quiesce(&["pre", "-v", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let recs = t.trail(&op_of(&run));
    assert!(recs.len() >= 4, "{}", summary(&recs));
    let mut last = 0;
    for r in &recs {
        let line = format!("{} {}: {}", r.msgid, r.param("phase").unwrap_or("-"), r.msg);
        let at = run.stderr[last..].find(&line).unwrap_or_else(|| {
            panic!(
                "record {line:?} not echoed in order on stderr:\n{}",
                run.stderr
            )
        });
        last += at + line.len();
    }
}
