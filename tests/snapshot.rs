//! `quiesce snapshot` end to end (SPEC.md §1, §5, §9): the rows of the
//! decision table as one table (`ROWS`, like tests/check.rs), and the runs
//! that need more than one snapshot (signals, holders, the watchdog, faults)
//! as tests of their own, through the real binary, on a scratch loop-mounted
//! ext4 passed with `--mount` (never `/` or the work tree's filesystem).
//! "Not frozen" is always proved by a write that completes, never by the
//! runner's word; which scripts ran is proved by their marker file.

mod common;

use common::scratchfs::ScratchFs;
use common::{signal, MarkerGuard, Run, Setup};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

const PROMPT: Duration = Duration::from_secs(5);
const FROZEN_PROBE: Duration = Duration::from_millis(300);

/// A set-up and its scratch filesystem. Fields drop in order: the
/// filesystem is thawed and unmounted before its directory is removed.
struct T {
    fs: ScratchFs,
    s: Setup,
}

fn t(tag: &str) -> T {
    let s = Setup::new(tag);
    let fs = ScratchFs::new(&s.s.dir, "data", "ext4");
    T { fs, s }
}

impl T {
    fn args<'a>(&'a self, cmd: &'a str) -> Vec<&'a str> {
        vec![
            "snapshot",
            "--json",
            "--max-freeze",
            "10",
            "--mount",
            self.fs.path(),
            "--",
            "sh",
            "-c",
            cmd,
        ]
    }

    /// `quiesce snapshot --json --mount FS -- sh -c CMD`.
    fn snapshot(&self, cmd: &str) -> Run {
        self.s.quiesce(&self.args(cmd))
    }

    fn pre(&self, body: &str) {
        script(&self.s.pre, body);
    }

    fn post(&self, body: &str) {
        script(&self.s.post, body);
    }

    fn writable(&self) -> bool {
        self.fs.writable_within(PROMPT)
    }

    /// Freezes the scratch fs as "someone else" (not quiesce).
    fn freeze_outside(&self) {
        let st = Command::new("fsfreeze")
            .args(["-f", self.fs.path()])
            .status()
            .unwrap();
        assert!(st.success(), "fsfreeze -f {}", self.fs.path());
    }

    fn thaw_outside(&self) {
        let st = Command::new("fsfreeze")
            .args(["-u", self.fs.path()])
            .status()
            .unwrap();
        assert!(st.success(), "fsfreeze -u {}", self.fs.path());
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn script(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

/// The pre-script body that leaves "pre" in the marker, then `rest`.
fn marked(s: &Setup, which: &str, rest: &str) -> String {
    format!("echo {which} >> {}\n{rest}", s.marker.display())
}

/// Waits (bounded) until a process runs with exactly this argv.
fn wait_for_argv(argv: &[&str], timeout: Duration) -> bool {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        for pid in common::pids_with(argv[argv.len() - 1]) {
            if std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want[..])
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// What a row of the table must show.
#[derive(Clone, Copy)]
struct Want<'a> {
    code: i32,
    result: &'a str,
    consistency: &'a str,
    /// `(name, code)` of every error, in order (`None`: code is null).
    errors: &'a [(&'a str, Option<u64>)],
    /// The marker file's text: which scripts ran, in order.
    ran: &'a str,
    /// Whether `phases.freeze` is present; `None`: either.
    freeze: Option<bool>,
    snapshot: bool,
}

fn check(run: &Run, s: &Setup, w: Want) -> Value {
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, w.code, "exit code\n{ctx}");
    let v = run.json();
    assert_eq!(v["operation"], "snapshot", "{ctx}");
    assert_eq!(v["result"], w.result, "result\n{ctx}");
    assert_eq!(v["consistency"], w.consistency, "consistency\n{ctx}");
    let errors: Vec<(String, Value)> = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array\n{ctx}"))
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["code"].clone()))
        .collect();
    let want: Vec<(String, Value)> = w
        .errors
        .iter()
        .map(|(n, c)| (n.to_string(), c.map_or(Value::Null, |c| json!(c))))
        .collect();
    assert_eq!(errors, want, "errors\n{ctx}");
    assert_eq!(s.scripts_ran(), w.ran, "scripts that ran\n{ctx}");
    if let Some(freeze) = w.freeze {
        assert_eq!(
            v["phases"].get("freeze").is_some(),
            freeze,
            "phases.freeze present\n{ctx}"
        );
    }
    assert_eq!(
        v["phases"].get("snapshot").is_some(),
        w.snapshot,
        "phases.snapshot present\n{ctx}"
    );
    v
}

fn set(s: &Setup, pairs: &[(&str, Value)]) {
    s.config_with(|m| {
        for (k, v) in pairs {
            m.insert(k.to_string(), v.clone());
        }
    });
}

// Row: everything succeeds.
#[test]
fn r01_all_good_is_application_consistent_and_frozen_during_the_command() {
    require_root!();
    let t = t("snap-ok");
    let out = t.s.s.path("inside.txt");
    let cmd = format!(
        "fsfreeze -f '{mnt}' > '{out}' 2>&1; echo \"rc=$?\" >> '{out}'",
        mnt = t.fs.path(),
        out = out.display()
    );
    let run = t.snapshot(&cmd);
    let v = check(
        &run,
        &t.s,
        Want {
            code: 0,
            result: "success",
            consistency: "application",
            errors: &[],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
    );
    let inside = std::fs::read_to_string(&out).unwrap();
    assert!(
        inside.contains("Device or resource busy"),
        "the fs was not frozen while the command ran: {inside}"
    );
    assert!(!inside.contains("rc=0"), "{inside}");
    let f = &v["phases"]["freeze"];
    let mounts = f["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{f}");
    assert_eq!(mounts[0]["path"], t.fs.path());
    assert!(mounts[0]["frozenMs"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["windowMs"].as_f64().unwrap() > 0.0, "{f}");
    assert_eq!(v["phases"]["snapshot"]["exitCode"], 0);
    assert_eq!(v["phases"]["snapshot"]["frozen"], true);
    assert!(t.writable());
}

/// One row of the decision table of SPEC §5 (the rows with one snapshot
/// run each; r01, r14 and r15 follow as tests of their own).
struct Row {
    name: &'static str,
    /// Sets the row up (config, scripts, a foreign freeze) and returns the
    /// snapshot command; `m` marks the processes it starts.
    arrange: fn(&T, &MarkerGuard) -> String,
    want: Want<'static>,
    /// What else the row must show.
    then: fn(&T, &Run, &Value, &MarkerGuard),
}

/// A command that leaves a file: proves whether the snapshot command ran.
fn touch_probe(t: &T) -> String {
    format!("touch '{}'", t.s.s.path("snapshot-ran").display())
}

fn probe_did_not_run(t: &T) {
    assert!(
        !t.s.s.path("snapshot-ran").exists(),
        "the snapshot command ran"
    );
}

fn pc_fails(t: &T) {
    chmod(&t.s.post, 0o777);
}

fn pre_fails(t: &T) {
    t.pre(&marked(&t.s, "pre", "exit 3"));
}

const PC_307: &[(&str, Option<u64>)] = &[("InsufficientPermissionforPost-Script", Some(307))];
const PRE_300: &[(&str, Option<u64>)] = &[("Pre-ScriptExecutionFailed", Some(300))];
const FRZ_121: &[(&str, Option<u64>)] = &[("FsFreezeFailed", Some(121))];

const ROWS: &[Row] = &[
    // Row: pre-check fails, continueBackupOnFailure=true.
    Row {
        name: "r02_precheck_failure_continue_freezes_and_snapshots_filesystem",
        arrange: |t, _| {
            pc_fails(t);
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            errors: PC_307,
            ran: "",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, _| {
            assert_eq!(v["phases"]["snapshot"]["frozen"], true);
            assert!(v["phases"].get("pre").is_none() && v["phases"].get("post").is_none());
        },
    },
    // Row: pre-check fails, continue=true, freeze disabled → crash-consistent.
    Row {
        name: "r03_precheck_failure_continue_without_freeze_is_crash",
        arrange: |t, _| {
            set(&t.s, &[("fsFreezeEnabled", json!(false))]);
            pc_fails(t);
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "crash",
            errors: PC_307,
            ran: "",
            freeze: Some(false),
            snapshot: true,
        },
        then: |_, _, v, _| {
            assert_eq!(v["phases"]["snapshot"]["exitCode"], 0);
            assert_eq!(v["phases"]["snapshot"]["frozen"], false);
        },
    },
    // Row: pre-check fails, continue=false → nothing runs.
    Row {
        name: "r04_precheck_failure_stop_takes_no_snapshot",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(false))]);
            pc_fails(t);
            touch_probe(t)
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: PC_307,
            ran: "",
            freeze: Some(false),
            snapshot: false,
        },
        then: |t, _, _, _| probe_did_not_run(t),
    },
    // Row: config malformed → the flag is unknown, taken as true, loudly.
    Row {
        name: "r05_malformed_config_is_treated_as_continue_true",
        arrange: |t, _| {
            set(
                &t.s,
                &[
                    ("fsFreezeEnabled", json!("yes")),
                    ("continueBackupOnFailure", json!(false)),
                ],
            );
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            errors: &[("IncorrectJSONConfigFile", Some(305))],
            ran: "",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, run, v, _| {
            assert_eq!(v["phases"]["snapshot"]["frozen"], true);
            assert!(
                run.warnings()
                    .iter()
                    .any(|w| w.contains("continueBackupOnFailure")),
                "no warning about continueBackupOnFailure: {:?}",
                run.warnings()
            );
        },
    },
    // Row: pre-script fails, continue=true → filesystem-consistent fallback.
    Row {
        name: "r06_pre_failure_continue_is_filesystem_and_post_runs",
        arrange: |t, _| {
            pre_fails(t);
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            errors: PRE_300,
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, _| assert_eq!(v["phases"]["snapshot"]["frozen"], true),
    },
    // Row: pre-script times out, continue=true.
    Row {
        name: "r07_pre_timeout_continue_is_filesystem_tree_killed_post_runs",
        arrange: |t, m| {
            set(&t.s, &[("timeoutInSeconds", json!(1))]);
            t.pre(&marked(&t.s, "pre", &format!("sleep {}", m.0)));
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "filesystem",
            errors: &[("Pre-ScriptTimeout", Some(308))],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, m| {
            assert_eq!(v["phases"]["pre"]["attempts"][0]["timedOut"], true);
            assert_eq!(m.survivors(), Vec::<i32>::new());
        },
    },
    // Row: pre fails, continue=true but freeze disabled → no snapshot (like the extension).
    Row {
        name: "r08_pre_failure_continue_without_freeze_takes_no_snapshot",
        arrange: |t, _| {
            set(&t.s, &[("fsFreezeEnabled", json!(false))]);
            pre_fails(t);
            touch_probe(t)
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: PRE_300,
            ran: "pre\npost\n",
            freeze: Some(false),
            snapshot: false,
        },
        then: |t, _, _, _| probe_did_not_run(t),
    },
    // Row: pre fails, continue=false → no freeze, no snapshot, post still runs.
    Row {
        name: "r09_pre_failure_stop_no_snapshot_post_runs",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(false))]);
            pre_fails(t);
            touch_probe(t)
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: PRE_300,
            ran: "pre\npost\n",
            freeze: Some(false),
            snapshot: false,
        },
        then: |t, _, _, _| probe_did_not_run(t),
    },
    // Row: freeze fails (EBUSY: frozen by someone else), continue=true → crash.
    Row {
        name: "r10_freeze_failure_continue_snapshots_unfrozen_and_leaves_foreign_freeze",
        arrange: |t, _| {
            t.freeze_outside();
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "crash",
            errors: FRZ_121,
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |t, _, v, _| {
            assert_eq!(v["phases"]["snapshot"]["frozen"], false);
            assert_eq!(v["phases"]["snapshot"]["exitCode"], 0);
            assert!(
                !t.fs.writable_within(FROZEN_PROBE),
                "quiesce thawed a freeze it did not make"
            );
            t.thaw_outside();
        },
    },
    // Row: freeze fails, continue=false → no snapshot, post runs.
    Row {
        name: "r11_freeze_failure_stop_takes_no_snapshot_and_leaves_foreign_freeze",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(false))]);
            t.freeze_outside();
            touch_probe(t)
        },
        // The failed window is reported (no mount frozen), or absent.
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: FRZ_121,
            ran: "pre\npost\n",
            freeze: None,
            snapshot: false,
        },
        then: |t, _, v, _| {
            if let Some(f) = v["phases"].get("freeze") {
                assert_eq!(f["mounts"], json!([]), "{f}");
            }
            probe_did_not_run(t);
            assert!(
                !t.fs.writable_within(FROZEN_PROBE),
                "quiesce thawed a freeze it did not make"
            );
            t.thaw_outside();
        },
    },
    // Row: snapshot command fails → failure whatever the flag; thaw; post runs.
    Row {
        name: "r12a_snapshot_failure_is_failure_thawed_post_runs (continue=true)",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(true))]);
            "exit 5".into()
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: &[("SnapshotCommandFailed", None)],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, _| assert_eq!(v["phases"]["snapshot"]["exitCode"], 5),
    },
    Row {
        name: "r12b_snapshot_failure_is_failure_thawed_post_runs (continue=false)",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(false))]);
            "exit 5".into()
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "none",
            errors: &[("SnapshotCommandFailed", None)],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, _| assert_eq!(v["phases"]["snapshot"]["exitCode"], 5),
    },
    // Row: post-script fails, continue=true → snapshot stands, degraded.
    Row {
        name: "r13a_post_failure_continue_is_degraded_application",
        arrange: |t, _| {
            t.post(&marked(&t.s, "post", "exit 3"));
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "application",
            errors: &[("Post-ScriptExecutionFailed", Some(301))],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, _, _| {},
    },
    // Row: post-script fails, continue=false → snapshot stands, run is a failure.
    Row {
        name: "r13b_post_failure_stop_is_failure_but_application",
        arrange: |t, _| {
            set(&t.s, &[("continueBackupOnFailure", json!(false))]);
            t.post(&marked(&t.s, "post", "exit 3"));
            "true".into()
        },
        want: Want {
            code: 2,
            result: "failure",
            consistency: "application",
            errors: &[("Post-ScriptExecutionFailed", Some(301))],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, _, _| {},
    },
    // Row: post-script times out, continue=true → snapshot stands, degraded.
    Row {
        name: "r13c_post_timeout_continue_is_degraded_application",
        arrange: |t, m| {
            set(&t.s, &[("timeoutInSeconds", json!(1))]);
            t.post(&marked(&t.s, "post", &format!("sleep {}", m.0)));
            "true".into()
        },
        want: Want {
            code: 1,
            result: "degraded",
            consistency: "application",
            errors: &[("Post-ScriptTimeout", Some(309))],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
        then: |_, _, v, m| {
            assert_eq!(v["phases"]["post"]["attempts"][0]["timedOut"], true);
            assert_eq!(m.survivors(), Vec::<i32>::new());
        },
    },
];

/// Every row of the table, each on a scratch filesystem of its own; every
/// row ends with the filesystem proved writable.
#[test]
fn decision_table_rows() {
    require_root!();
    for (i, row) in ROWS.iter().enumerate() {
        let t = t(&format!("snap-row{i}"));
        let m = MarkerGuard::new(80 + i as u32);
        let cmd = (row.arrange)(&t, &m);
        let run = t.snapshot(&cmd);
        eprintln!("row {}", row.name);
        let v = check(&run, &t.s, row.want);
        (row.then)(&t, &run, &v, &m);
        assert!(t.writable(), "{}: left frozen", row.name);
    }
}

// §7: a pre-script "holder" lives across the window and is terminated after post.
#[test]
fn r14_pre_script_holder_is_terminated_after_post() {
    require_root!();
    let t = t("snap-holder");
    let m = MarkerGuard::new(74);
    let pidfile = t.s.s.path("holder.pid");
    let alive = t.s.s.path("holder-alive");
    t.pre(&marked(
        &t.s,
        "pre",
        &format!(
            "setsid sleep {} >/dev/null 2>&1 &\necho $! > '{}'",
            m.0,
            pidfile.display()
        ),
    ));
    // The holder must still be alive while the snapshot is taken.
    let cmd = format!("pgrep -f '^sleep {}$' > '{}' || true", m.0, alive.display());
    let run = t.snapshot(&cmd);
    let v = check(
        &run,
        &t.s,
        Want {
            code: 0,
            result: "success",
            consistency: "application",
            errors: &[],
            ran: "pre\npost\n",
            freeze: Some(true),
            snapshot: true,
        },
    );
    let holder: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let during = std::fs::read_to_string(&alive).unwrap_or_default();
    assert!(
        during.lines().any(|l| l.trim() == holder.to_string()),
        "holder {holder} not alive during the snapshot: {during:?}"
    );
    assert_eq!(m.survivors(), Vec::<i32>::new(), "holder survived");
    let killed: Vec<i64> = v["phases"]["post"]["holdersTerminated"]
        .as_array()
        .unwrap_or_else(|| panic!("no holdersTerminated: {}", v["phases"]["post"]))
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert!(
        killed.contains(&(holder as i64)),
        "holdersTerminated {killed:?} lacks {holder}"
    );
    assert!(t.writable());
}

// §6.4: SIGTERM while the snapshot command runs: thaw, kill, post still runs, 143.
#[test]
fn r15_sigterm_during_snapshot_thaws_kills_runs_post_exits_143() {
    require_root!();
    let t = t("snap-sigterm");
    let m = MarkerGuard::new(75);
    let mut args = t.args("");
    // Not through sh: the command is `sleep <marker>` itself.
    args.truncate(args.len() - 3);
    args.extend(["sleep", m.0.as_str()]);
    let mut child = t.s.spawn(&args);
    // The runner's argv (and its forks before exec) carry the marker too:
    // wait for the snapshot command itself, `sleep <marker>`.
    assert!(
        wait_for_argv(&["sleep", &m.0], Duration::from_secs(5)),
        "snapshot command never started"
    );
    signal(child.id() as i32, Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runner did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(143), "stderr:\n{stderr}");
    assert!(t.writable(), "left frozen after SIGTERM");
    assert_eq!(
        m.survivors(),
        Vec::<i32>::new(),
        "snapshot command survived"
    );
    assert_eq!(t.s.scripts_ran(), "pre\npost\n", "stderr:\n{stderr}");
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(v["result"], "failure", "{v}");
    // The signal came inside the window: the command ran frozen and was killed.
    let snap = &v["phases"]["snapshot"];
    assert_eq!(snap["frozen"], true, "{v}");
    assert!(!snap["killedPids"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        v["phases"]["freeze"]["mounts"][0]["path"],
        t.fs.path(),
        "{v}"
    );
    assert!(v["phases"].get("post").is_some(), "{v}");
}

/// The watchdog killed mid-window: the runner's own path still thaws, the
/// post-script still runs, and the run is not taken down by a SIGPIPE from
/// telling a dead watchdog the window is over.
#[test]
fn watchdog_killed_mid_window_post_still_runs() {
    require_root!();
    let s = Setup::new("wd-post");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let cmd = s.s.write("cmd.sh", "sleep 1\n", 0o700);
    let child = s.spawn(&[
        "snapshot",
        "--json",
        "--mount",
        fs.path(),
        "--",
        "sh",
        cmd.to_str().unwrap(),
    ]);
    // The window is open once its recovery record names the watchdog.
    let state_path = s.s.path("run/state.json");
    let end = Instant::now() + Duration::from_secs(5);
    let state: serde_json::Value = loop {
        if let Ok(b) = std::fs::read(&state_path) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                break v;
            }
        }
        assert!(Instant::now() < end, "the window never opened");
        std::thread::sleep(Duration::from_millis(5));
    };
    common::signal(
        state["watchdogPid"].as_i64().unwrap() as i32,
        nix::sys::signal::Signal::SIGKILL,
    );
    let run = common::Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["consistency"], "application");
    assert!(
        run.warnings().iter().any(|w| w.contains("watchdog died")),
        "{:?}",
        run.warnings()
    );
    assert_eq!(s.scripts_ran(), "pre\npost\n");
    assert!(fs.writable_within(Duration::from_secs(5)));
}

/// `quiesce --config … snapshot …` of this set-up with a fault point set.
fn with_fault(s: &Setup, fault: &str, args: &[&str]) -> Run {
    Run::from(
        s.command()
            .env("QUIESCE_FAULT", fault)
            .args(args)
            .output()
            .unwrap(),
    )
}

/// Issue 10 item 9: a bug (a panic) inside the window, between the pre- and
/// the post-script: the filesystem is thawed, the post-script still runs
/// (the application is resumed), and the run exits 70.
#[cfg(feature = "fault-injection")]
#[test]
fn panic_in_the_window_still_runs_the_post_script_and_exits_70() {
    require_root!();
    let t = t("snap-panic");
    let run = with_fault(&t.s, "panic-in-window", &t.args("sleep 2"));
    assert_eq!(run.code, 70, "{}", run.stderr);
    assert!(t.writable(), "a panic left the filesystem frozen");
    assert_eq!(t.s.scripts_ran(), "pre\npost\n", "{}", run.stderr);
}

/// Issue 10 item 9: the freeze thread cannot be spawned (TasksMax): no
/// panic, `FsFreezeFailed` with a message, nothing frozen, post-script runs.
#[cfg(feature = "fault-injection")]
#[test]
fn freeze_thread_spawn_failure_is_121_and_post_runs() {
    require_root!();
    let t = t("snap-spawn");
    t.s.config_with(|c| {
        c.insert("continueBackupOnFailure".into(), json!(false));
    });
    let run = with_fault(&t.s, "freeze-thread-spawn", &t.args("true"));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["code"], 121, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("freeze thread"),
        "{v}"
    );
    assert!(t.writable());
    assert_eq!(t.s.scripts_ran(), "pre\npost\n", "{}", run.stderr);
}

/// Issue 10: the watchdog must be alive and ready before the first freeze;
/// a watchdog that dies while starting means no freeze (121).
#[cfg(feature = "fault-injection")]
#[test]
fn watchdog_not_ready_means_no_freeze_and_121() {
    require_root!();
    let t = t("snap-wdready");
    t.s.config_with(|c| {
        c.insert("continueBackupOnFailure".into(), json!(false));
    });
    let marker = t.s.s.path("cmd-ran");
    let cmd = format!("touch {}", marker.display());
    let run = with_fault(&t.s, "watchdog-not-ready", &t.args(&cmd));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["code"], 121, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("watchdog"),
        "{v}"
    );
    assert!(!marker.exists(), "the snapshot ran without a watchdog");
    assert!(t.writable());
    assert_eq!(t.s.scripts_ran(), "pre\npost\n");
}

/// Issue 10: a mount unmounted between the plan and the freeze (here by
/// the pre-script) is `UnableToOpenMount` naming it; its parent filesystem
/// is never frozen in its place.
#[test]
fn mount_unmounted_by_the_pre_script_is_123_naming_it() {
    require_root!();
    let t = t("snap-umount");
    t.s.config_with(|c| {
        c.insert("continueBackupOnFailure".into(), json!(false));
    });
    t.pre(&marked(&t.s, "pre", &format!("umount {}", t.fs.path())));
    let run = t.s.quiesce(&{
        let mut a = t.args("true");
        a.insert(0, "--no-sandbox");
        a
    });
    assert_eq!(run.code, 2, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["name"], "UnableToOpenMount", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(t.fs.path()),
        "{v}"
    );
    assert_eq!(t.s.scripts_ran(), "pre\npost\n");
}
