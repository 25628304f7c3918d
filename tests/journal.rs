//! The audit trail where a SIEM reads it on a systemd host (SPEC.md §9,
//! issue 15): native entries in a REAL journald, the journal catalog, the
//! last-result file and the Prometheus textfile.
//!
//! Each test starts its own systemd-journald in a private mount namespace
//! (`unshare -m`, a tmpfs over `/run` and `/var/log/journal`, so the host's
//! journal, if any, is untouched), sends to its socket through
//! `/proc/PID/root/run/systemd/journal/socket` and reads what it stored with
//! `journalctl -D /proc/PID/root/run/log/journal -o json`.
//!
//! Needs root (namespaces, trust checks, loop mounts) and systemd-journald
//! (package `systemd`; scripts/test.sh installs it); skipped loudly
//! otherwise. Freezes only a loop-mounted scratch ext4 passed with `--mount`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::journald::{field, field_bytes, is_socket, TestJournal};
use common::rsyslog::{parse_5424, timestamp_micros};
use common::scratchfs::{self, ScratchFs};
use common::{Run, Setup};
use log::Level;
use quiesce::trail::{self, Record, TrailConfig, TrailMode};
use serde_json::{Map, Value};

const SD_ID: &str = "quiesce@32473";

fn skip(test: &str, with_fs: bool) -> bool {
    if let Err(why) = TestJournal::prerequisites() {
        eprintln!("SKIPPED {test}: {why}; CI runs as root with systemd installed");
        return true;
    }
    if with_fs && !scratchfs::have_mkfs("ext4") {
        eprintln!("SKIPPED {test}: mkfs.ext4 not installed (scripts/test.sh installs e2fsprogs)");
        return true;
    }
    false
}

/// The binary with this set-up's paths and `globals` (trail, state and
/// metrics options) before `args` ([`Setup::quiesce_with`]).
fn quiesce(s: &Setup, globals: &[&str], args: &[&str]) -> Run {
    s.quiesce_with(globals, args)
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
}

fn op_of(run: &Run) -> String {
    run.json()["operationId"].as_str().unwrap().to_owned()
}

fn warnings(run: &Run) -> Vec<String> {
    run.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

/// The parameters of a SYSLOG_STRUCTURED_DATA element, parsed by the
/// independent RFC 5424 parser of tests/common/rsyslog.rs.
fn sd_params(sd: &str) -> Vec<(String, String)> {
    let rec = parse_5424(&format!("<14>1 - - - - - {sd}"))
        .unwrap_or_else(|e| panic!("SYSLOG_STRUCTURED_DATA {sd:?} is not RFC 5424 SD: {e}"));
    assert_eq!(rec.sd.len(), 1, "{sd}");
    assert_eq!(rec.sd[0].0, SD_ID, "{sd}");
    rec.sd[0].1.clone()
}

/// The journal field of a structured-data parameter (SD names `op_` and
/// `phase_` are a script's own `op`/`phase`, renamed on both sides).
fn journal_name(sd_name: &str) -> String {
    match sd_name {
        "op_" => return "QUIESCE_OP_PARAM".into(),
        "phase_" => return "QUIESCE_PHASE_PARAM".into(),
        _ => {}
    }
    let key: String = sd_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("QUIESCE_{key}")
}

/// How the RFC 5424 sink writes control characters (rsyslog's `#ooo`).
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_control() {
                format!("#{:03o}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The fields SPEC.md §9 requires of every entry of operation `op`.
fn assert_fields(e: &Map<String, Value>, op: &str) {
    let msgid = field(e, "SYSLOG_MSGID");
    let kind = Record::from_msgid(&msgid).unwrap_or_else(|| panic!("unknown SYSLOG_MSGID: {e:?}"));
    assert_eq!(field(e, "MESSAGE_ID"), kind.message_id(), "{e:?}");
    assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "quiesce", "{e:?}");
    assert_eq!(field(e, "SYSLOG_FACILITY"), "10", "authpriv: {e:?}");
    assert!(
        matches!(field(e, "PRIORITY").as_str(), "3" | "4" | "6" | "7"),
        "{e:?}"
    );
    assert_eq!(field(e, "QUIESCE_OP"), op, "{e:?}");
    for f in [
        "MESSAGE",
        "QUIESCE_PHASE",
        "QUIESCE_APP",
        "QUIESCE_TIME",
        "SYSLOG_PID",
    ] {
        assert!(e.contains_key(f), "no {f}: {e:?}");
    }
    assert_eq!(field(e, "_TRANSPORT"), "journal", "{e:?}");
    let params = sd_params(&field(e, "SYSLOG_STRUCTURED_DATA"));
    assert_eq!(params[0], ("op".to_string(), op.to_string()), "{e:?}");
    assert_eq!(
        params[1],
        ("phase".to_string(), field(e, "QUIESCE_PHASE")),
        "{e:?}"
    );
    // Every structured-data parameter is also its own journal field, with
    // the same value (the SD form writes control characters as #ooo).
    for (k, v) in &params[2..] {
        if k == "truncated" {
            continue;
        }
        let name = journal_name(k);
        assert!(e.contains_key(&name), "no {name} for SD {k}: {e:?}");
        assert_eq!(
            &escape_controls(&field(e, &name)),
            v,
            "{name} vs SD {k}: {e:?}"
        );
    }
}

fn seqnum(e: &Map<String, Value>) -> u64 {
    u64::from_str_radix(
        field(e, "__CURSOR")
            .split(';')
            .find_map(|p| p.strip_prefix("i="))
            .unwrap(),
        16,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// A small Prometheus text-format (0.0.4) parser.

/// One sample: its labels and its value.
type Sample = (Vec<(String, String)>, f64);
/// Metric family name -> (TYPE, samples).
type Families = std::collections::BTreeMap<String, (String, Vec<Sample>)>;

/// family -> (TYPE, [(labels, value)]); panics on anything that is not the
/// text format: a sample before its HELP and TYPE, a bad label, a bad value.
fn parse_prometheus(text: &str) -> Families {
    let mut fams = std::collections::BTreeMap::new();
    let mut help_seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            assert!(help_seen.insert(name.to_string()), "HELP of {name} twice");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["gauge", "counter", "untyped", "summary", "histogram"].contains(&ty),
                "TYPE {ty}"
            );
            assert!(help_seen.contains(name), "TYPE of {name} before its HELP");
            assert!(fams
                .insert(name.to_string(), (ty.to_string(), Vec::new()))
                .is_none());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (head, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (head, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        let labels = parse_labels(labels);
        let fam = fams
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample of {name} before its TYPE"));
        fam.1.push((labels, value));
    }
    fams
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {name:?} in {s:?}"
        );
        assert_eq!(chars.next(), Some('"'), "label value quote in {s:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name, value));
        match chars.next() {
            Some(',') | None => {}
            other => panic!("after a label: {other:?} in {s:?}"),
        }
    }
    out
}

fn sample(fams: &Families, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, samples) = fams.get(name).unwrap_or_else(|| panic!("no family {name}"));
    let want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|(l, _)| *l == want)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {samples:?}"))
        .1
}

// ---------------------------------------------------------------------------
// Whole runs of the binary.

/// Every record of a whole snapshot arrives as a native entry with the
/// fields of SPEC.md §9; the window's records arrive only after the thaw;
/// script output with newlines arrives intact; the last result and the
/// metrics textfile are written after the run.
#[test]
fn a_snapshot_leaves_its_whole_trail_in_the_journal_and_its_result_for_monitoring() {
    if skip("journal-snapshot", true) {
        return;
    }
    let s = Setup::new("journal-snapshot");
    let j = TestJournal::start();
    let fs_ = ScratchFs::new(&s.s.dir, "a", "ext4");
    write_script(
        &s.pre,
        &format!(
            "echo pre >> '{}'\nprintf 'first line\\nsecond line\\n'",
            s.marker.display()
        ),
    );
    write_script(&s.post, &format!("echo post >> '{}'", s.marker.display()));
    let metrics = s.s.mkdir("metrics", 0o755);
    let state = s.s.path("state");
    // Inside the window: wait (bounded) until journald has stored the
    // pre-script's exit, then copy what the journal holds. The freeze
    // records must not be in that copy: they are held until the thaw.
    let during = s.s.path("during.json");
    let when = s.s.path("during.time");
    let cmd = format!(
        "for i in $(seq 1 250); do journalctl -D '{dir}' -o json SYSLOG_IDENTIFIER=quiesce | grep -q '\"SYSLOG_MSGID\":\"script-exit\"' && break; sleep 0.02; done\n\
         journalctl -D '{dir}' -o json --all SYSLOG_IDENTIFIER=quiesce > '{during}'; date +%s%6N > '{when}'; echo snap",
        dir = j.dir().display(),
        during = during.display(),
        when = when.display()
    );
    let journal_socket = j.socket();
    let run = quiesce(
        &s,
        &[
            "--trail",
            "journal",
            "--journal-socket",
            journal_socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-dir",
            metrics.to_str().unwrap(),
        ],
        &[
            "snapshot",
            "--json",
            "--max-freeze",
            "10",
            "--mount",
            fs_.path(),
            "--",
            "sh",
            "-c",
            &cmd,
        ],
    );
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    assert_eq!(run.json()["consistency"], "application", "{ctx}");
    // (Other warnings, such as oom_score_adj in a container, are not ours.)
    assert!(
        !warnings(&run).iter().any(|w| w.starts_with("audit trail")
            || w.starts_with("metrics")
            || w.starts_with("last result")),
        "{ctx}"
    );
    let op = op_of(&run);
    let entries = j.wait_for_run(&op);

    // Every entry, every field.
    for e in &entries {
        assert_fields(e, &op);
    }
    let msgids: Vec<String> = entries.iter().map(|e| field(e, "SYSLOG_MSGID")).collect();
    let pos = |m: &str| {
        msgids
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("no {m}: {msgids:?}"))
    };
    for pair in [
        ("run-start", "check"),
        ("check", "script-start"),
        ("script-exit", "freeze"),
        ("freeze", "freeze-complete"),
        ("freeze-complete", "thaw"),
        ("thaw", "window"),
        ("window", "snapshot-exit"),
        ("snapshot-exit", "run-end"),
    ] {
        assert!(
            pos(pair.0) < pos(pair.1),
            "{} before {}: {msgids:?}",
            pair.0,
            pair.1
        );
    }
    assert_eq!(
        msgids.last().map(String::as_str),
        Some("run-end"),
        "{msgids:?}"
    );
    let by = |m: &str| {
        entries
            .iter()
            .find(|e| field(e, "SYSLOG_MSGID") == m)
            .unwrap()
    };
    assert_eq!(field(by("run-end"), "QUIESCE_RESULT"), "success");
    assert_eq!(field(by("run-end"), "QUIESCE_CONSISTENCY"), "application");
    assert_eq!(field(by("freeze"), "QUIESCE_MOUNT"), fs_.path());
    assert_eq!(
        field(by("run-start"), "QUIESCE_APP"),
        "",
        "the config is not loaded yet"
    );
    assert_eq!(
        field(by("run-end"), "QUIESCE_APP"),
        "ScriptRunner",
        "pluginName of the config"
    );
    // Output with newlines: the length-prefixed form keeps it whole.
    let out = entries
        .iter()
        .find(|e| {
            field(e, "SYSLOG_MSGID") == "script-output" && field(e, "QUIESCE_STREAM") == "stdout"
        })
        .expect("the pre-script's stdout");
    assert!(
        field(out, "MESSAGE").contains("first line\nsecond line"),
        "{out:?}"
    );

    // Held: none of the window's records were in the journal inside the
    // window, and each arrived after the thaw happened.
    let inside = fs::read_to_string(&during).unwrap();
    assert!(
        inside.contains("\"script-exit\""),
        "the copy inside the window works: {inside}"
    );
    for m in ["freeze", "freeze-complete", "thaw", "window"] {
        assert!(
            !inside.contains(&format!("\"SYSLOG_MSGID\":\"{m}\"")),
            "{m} reached the journal inside the window"
        );
    }
    // The last moment the snapshot command (inside the window) saw: every
    // record of the window reached journald after it, and still carries
    // the time it happened, before it.
    let cmd_ended: i64 = fs::read_to_string(&when).unwrap().trim().parse().unwrap();
    for m in ["freeze", "freeze-complete", "thaw", "window"] {
        let received: i64 = field(by(m), "__REALTIME_TIMESTAMP").parse().unwrap();
        assert!(
            received > cmd_ended,
            "{m} received at {received}, inside the window (command still running at {cmd_ended})"
        );
    }
    for m in ["freeze", "freeze-complete"] {
        assert!(
            timestamp_micros(&field(by(m), "QUIESCE_TIME")) < cmd_ended,
            "{m} keeps its event time"
        );
    }
    assert!(seqnum(by("script-exit")) < seqnum(by("freeze")));

    // The last result: the status document, root-only.
    let last_path = state.join("last-snapshot.json");
    let last: Value = serde_json::from_str(&fs::read_to_string(&last_path).unwrap()).unwrap();
    assert_eq!(last["operationId"], op.as_str());
    assert_eq!(last["result"], "success");
    assert_eq!(last["phases"], run.json()["phases"]);
    assert_eq!(fs::metadata(&last_path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    assert!(last["trailDelivery"]["sent"].as_u64().unwrap() >= entries.len() as u64);

    // The textfile parses and says what happened.
    let prom = fs::read_to_string(metrics.join("quiesce.prom")).unwrap();
    assert_eq!(
        fs::metadata(metrics.join("quiesce.prom")).unwrap().mode() & 0o777,
        0o644
    );
    let fams = parse_prometheus(&prom);
    let op_l = [("operation", "snapshot")];
    assert_eq!(
        sample(&fams, "quiesce_last_run_success", &op_l),
        1.0,
        "{prom}"
    );
    assert_eq!(
        sample(
            &fams,
            "quiesce_last_run_result",
            &[("operation", "snapshot"), ("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &fams,
            "quiesce_last_run_consistency",
            &[("operation", "snapshot"), ("consistency", "application")]
        ),
        1.0
    );
    assert_eq!(sample(&fams, "quiesce_last_run_errors", &op_l), 0.0);
    assert_eq!(
        sample(&fams, "quiesce_last_run_trail_records_dropped", &op_l),
        0.0
    );
    let window = run.json()["phases"]["freeze"]["windowMs"].as_f64().unwrap() / 1000.0;
    assert!((sample(&fams, "quiesce_last_freeze_window_seconds", &op_l) - window).abs() < 1e-9);
    for phase in ["pre", "freeze", "snapshot", "post"] {
        sample(
            &fams,
            "quiesce_last_phase_duration_seconds",
            &[("operation", "snapshot"), ("phase", phase)],
        );
    }
    let when = sample(&fams, "quiesce_last_run_timestamp_seconds", &op_l);
    assert!((when - last["finishedAtUnixSeconds"].as_f64().unwrap()).abs() < 1e-3);
    for (name, (ty, _)) in &fams {
        assert_eq!(ty, "gauge", "{name}");
    }

    // A later run of another operation keeps the snapshot's metrics.
    let run2 = quiesce(
        &s,
        &[
            "--trail",
            "journal",
            "--journal-socket",
            journal_socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-dir",
            metrics.to_str().unwrap(),
        ],
        &["pre", "--json"],
    );
    assert_eq!(run2.code, 0, "{}", run2.stderr);
    let fams = parse_prometheus(&fs::read_to_string(metrics.join("quiesce.prom")).unwrap());
    assert_eq!(sample(&fams, "quiesce_last_run_success", &op_l), 1.0);
    assert_eq!(
        sample(&fams, "quiesce_last_run_success", &[("operation", "pre")]),
        1.0
    );
}

/// `--trail auto` picks the journal when its socket exists; a journald
/// that stopped (socket left behind, nobody reading) costs the run nothing
/// but a warning naming the socket.
#[test]
fn a_stopped_journald_costs_the_run_nothing_but_a_warning() {
    if skip("journal-stopped", false) {
        return;
    }
    let s = Setup::new("journal-stopped");
    let mut j = TestJournal::start();
    j.stop_journald();
    assert!(
        is_socket(&j.socket()),
        "journald's socket file is left behind"
    );
    let sock = j.socket();
    let state = s.s.path("state");
    let globals = [
        "--journal-socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let run = quiesce(&s, &globals, &["pre", "--json"]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{ctx}");
    assert_eq!(run.json()["result"], "success", "{ctx}");
    assert_eq!(s.scripts_ran(), "pre\n");
    let w: Vec<String> = warnings(&run)
        .into_iter()
        .filter(|w| w.starts_with("audit trail"))
        .collect();
    assert_eq!(w.len(), 1, "one warning about the trail: {ctx}");
    assert!(
        w[0].starts_with("audit trail: ")
            && w[0].contains(" journal records not delivered (journal socket unavailable: ")
            && w[0].contains("Connection refused"),
        "{ctx}"
    );
    assert!(
        !w[0].contains("syslog"),
        "auto chose the journal only: {ctx}"
    );
    assert!(
        run.stderr.contains("journal records not delivered"),
        "{ctx}"
    );
    // The last result still records the run, and what the trail lost.
    let last: Value =
        serde_json::from_str(&fs::read_to_string(s.s.path("state/last-pre.json")).unwrap())
            .unwrap();
    assert_eq!(last["result"], "success");
    assert_eq!(last["trailDelivery"]["sent"], 0);
    assert!(last["trailDelivery"]["dropped"].as_u64().unwrap() > 0);
}

/// Bad input: a metrics directory that is a symbolic link, not owned by
/// root or writable by others gets nothing; the run warns and goes on. A
/// state directory like that is refused outright (304, naming it): it holds
/// the pending post-script records that decide what runs as root (SPEC
/// §6.6), so it is trusted like the run directory, and nothing is written.
#[test]
fn untrusted_state_and_metrics_directories_get_nothing_and_a_warning() {
    if skip("journal-baddirs", false) {
        return;
    }
    let s = Setup::new("journal-baddirs");
    let real = s.s.mkdir("real", 0o755);
    let state = s.s.mkdir("state-ok", 0o700);
    let not_root = s.s.mkdir("not-root", 0o755);
    common::chown(&not_root, common::NOBODY);
    let writable = s.s.mkdir("writable", 0o777);
    let link = s.s.symlink(&real, "link");
    let run_with = |state: &Path, metrics: &Path| {
        quiesce(
            &s,
            &[
                "--trail",
                "syslog",
                "--state-dir",
                state.to_str().unwrap(),
                "--metrics-dir",
                metrics.to_str().unwrap(),
            ],
            &["pre", "--json"],
        )
    };
    let empty = |d: &Path, ctx: &str| {
        assert_eq!(
            fs::read_dir(d).unwrap().count(),
            0,
            "{d:?} got a file: {ctx}"
        );
    };
    for metrics in [&link, &not_root, &writable] {
        let run = run_with(&state, metrics);
        let ctx = format!(
            "metrics {metrics:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        assert_eq!(run.code, 0, "{ctx}");
        assert_eq!(run.json()["result"], "success", "{ctx}");
        let prom_w = warnings(&run)
            .into_iter()
            .find(|w| w.starts_with("metrics not written to "))
            .unwrap_or_else(|| panic!("{ctx}"));
        assert!(prom_w.contains("not trusted"), "{ctx}");
        assert!(run.stderr.contains("warning: metrics not written"), "{ctx}");
        assert!(state.join("last-pre.json").is_file(), "{ctx}");
        for d in [&real, &not_root, &writable] {
            empty(d, &ctx);
        }
    }
    let ran_before = s.scripts_ran();
    // The metrics of a refused run still go to a good metrics directory.
    let metrics_ok = s.s.mkdir("metrics-ok", 0o755);
    for bad_state in [&link, &not_root, &writable] {
        let run = run_with(bad_state, &metrics_ok);
        let ctx = format!(
            "state {bad_state:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        assert_eq!(run.code, 2, "{ctx}");
        let e = &run.json()["errors"][0];
        assert_eq!(e["code"], 304, "{ctx}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(bad_state.to_str().unwrap()),
            "{ctx}"
        );
        assert_eq!(s.scripts_ran(), ran_before, "a script ran: {ctx}");
        for d in [&real, &not_root, &writable] {
            empty(d, &ctx);
        }
    }
    // A missing --metrics-dir is not created (node-exporter could not read
    // a root-only one): a warning.
    let run = quiesce(
        &s,
        &[
            "--trail",
            "syslog",
            "--state-dir",
            real.to_str().unwrap(),
            "--metrics-dir",
            s.s.path("missing").to_str().unwrap(),
        ],
        &["pre", "--json"],
    );
    assert_eq!(run.code, 0);
    assert!(
        warnings(&run)
            .iter()
            .any(|w| w.contains("missing does not exist")),
        "{}",
        run.stdout
    );
    assert!(!s.s.path("missing").exists());
    assert!(real.join("last-pre.json").is_file());
}

// ---------------------------------------------------------------------------
// The library's sink against a real journald.

/// The post guard's recovery is the compliance record of the one run that
/// went wrong: it keeps every trail and metrics option of the run it
/// guards. A `pre` given `--trail journal` and a syslog socket that listens
/// is SIGKILLed in its pre-script; the guard's `recover` ran the
/// post-script, and its records are in the journal — not on the syslog
/// socket — and its result in the run's metrics directory.
#[test]
fn the_post_guards_recovery_keeps_the_runs_trail_and_metrics() {
    if skip("journal-guard", false) {
        return;
    }
    let s = Setup::new("journal-guard");
    let j = TestJournal::start();
    s.post_logs_recovery("");
    write_script(
        &s.pre,
        &format!("echo pre >> '{}'\nsleep 60", s.marker.display()),
    );
    let metrics = s.s.mkdir("metrics", 0o755);
    let state = s.s.path("state");
    let syslog = s.s.path("listening-syslog.sock");
    let listener = UnixDatagram::bind(&syslog).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut runner = common::quiesce_bin()
        .arg("--config")
        .arg(&s.config)
        .arg("--host-config")
        .arg(&s.host_config)
        .arg("--run-dir")
        .arg(s.s.path("run"))
        .args(["--trail", "journal", "--journal-socket"])
        .arg(j.socket())
        .arg("--syslog-socket")
        .arg(&syslog)
        .arg("--state-dir")
        .arg(&state)
        .arg("--metrics-dir")
        .arg(&metrics)
        .arg("pre")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !s.scripts_ran().contains("pre") {
        assert!(started.elapsed() < Duration::from_secs(10), "no pre-script");
        sleep(Duration::from_millis(10));
    }
    // Whatever the run itself sent so far is not the question.
    while listener.recv(&mut [0u8; 65536]).is_ok() {}
    common::signal(runner.id() as i32, nix::sys::signal::Signal::SIGKILL);
    let _ = runner.wait();
    while !s.scripts_ran().contains("post runner-died") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the guard's recovery never ran the post-script: {:?}",
            s.scripts_ran()
        );
        sleep(Duration::from_millis(20));
    }
    let recovery = loop {
        let found = j
            .entries()
            .into_iter()
            .find(|e| field(e, "SYSLOG_MSGID") == "post-recovery");
        if let Some(e) = found {
            break field(&e, "QUIESCE_OP");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no post-recovery record in the journal: {:?}",
            j.entries()
                .iter()
                .map(|e| field(e, "SYSLOG_MSGID"))
                .collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(50));
    };
    let entries = j.wait_for_run(&recovery);
    let msgids: Vec<String> = entries.iter().map(|e| field(e, "SYSLOG_MSGID")).collect();
    for m in [
        "run-start",
        "post-recovery",
        "script-start",
        "script-exit",
        "run-end",
    ] {
        assert!(msgids.iter().any(|x| x == m), "no {m}: {msgids:?}");
    }
    let mut buf = [0u8; 65536];
    match listener.recv(&mut buf) {
        Ok(n) => panic!(
            "the recovery's records went to the syslog socket: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    let prom = metrics.join("quiesce.prom");
    let until = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < until {
        text = fs::read_to_string(&prom).unwrap_or_default();
        if text.contains("operation=\"recover\"") {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert!(
        text.lines()
            .any(|l| l == "quiesce_last_run_success{operation=\"recover\"} 1"),
        "the recovery's result is not in the run's metrics directory:\n{text}"
    );
    assert!(state.join("last-recover.json").is_file());
}

/// The trail is process-global: one library test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    trail::reset_for_tests();
    g
}

fn journal_config(socket: &Path, op: &str) -> TrailConfig {
    let mut c = TrailConfig::new(op);
    c.mode = TrailMode::Journal;
    c.journal_socket = socket.to_owned();
    c
}

/// Values with newlines and binary bytes take the length-prefixed form and
/// arrive byte for byte; an entry larger than a datagram goes as a sealed
/// memfd and arrives whole.
#[test]
fn binary_values_and_large_entries_arrive_intact() {
    if skip("journal-binary", false) {
        return;
    }
    let _g = serial();
    let j = TestJournal::start();
    let _ = trail::init(journal_config(&j.socket(), "op-binary"));
    let binary = "a\nb\u{1}\u{2}\u{1b}[31m\u{0}end";
    trail::event(
        Level::Info,
        Record::ScriptOutput,
        "pre",
        &[("blob", binary.to_string())],
        "multi\nline\nmessage",
    );
    // Far beyond the socket's send buffer (default wmem 208 KiB).
    let big: String = (0..600_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    trail::event(Level::Info, Record::ScriptOutput, "post", &[], &big);
    let report = trail::finish();
    assert_eq!((report.sent, report.dropped), (2, 0), "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let e: Vec<_> = j
            .entries()
            .into_iter()
            .filter(|e| field(e, "QUIESCE_OP") == "op-binary")
            .collect();
        if e.len() == 2 || Instant::now() > deadline {
            break e;
        }
        sleep(Duration::from_millis(50));
    };
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        field_bytes(&entries[0], "QUIESCE_BLOB").unwrap(),
        binary.as_bytes()
    );
    assert_eq!(field(&entries[0], "MESSAGE"), "multi\nline\nmessage");
    assert_eq!(field(&entries[1], "MESSAGE").len(), big.len());
    assert_eq!(field(&entries[1], "MESSAGE"), big);
    assert_eq!(
        field(&entries[1], "MESSAGE_ID"),
        Record::ScriptOutput.message_id()
    );
}

/// A journal socket whose reader never reads fills up: sends neither block
/// nor fail the caller; what did not fit is counted and reported.
#[test]
fn a_full_journal_socket_drops_and_counts_instead_of_blocking() {
    if !common::is_root() {
        eprintln!("SKIPPED: needs root (a socket under the root-only scratch directory)");
        return;
    }
    let _g = serial();
    let s = common::Scratch::new("journal-full");
    let sock = s.path("journal.sock");
    let _never_reads = UnixDatagram::bind(&sock).unwrap();
    let _ = trail::init(journal_config(&sock, "op-full"));
    for i in 0..3000 {
        trail::event(
            Level::Debug,
            Record::ScriptOutput,
            "pre",
            &[("i", i.to_string())],
            &"x".repeat(1000),
        );
    }
    let report = trail::finish();
    assert_eq!(report.sent + report.dropped, 3000, "{report:?}");
    assert!(report.sent > 0 && report.dropped > 0, "{report:?}");
    assert_eq!(report.unavailable, None);
    let w = report.warning().unwrap();
    assert!(
        w.starts_with(&format!(
            "audit trail: {} of 3000 journal records not delivered",
            report.dropped
        )),
        "{w}"
    );
}

// ---------------------------------------------------------------------------
// The catalog.

/// Every MESSAGE_ID the code can emit has an entry in the packaged catalog,
/// and journalctl accepts the file (in a private root: the system's catalog
/// database is untouched) and lists each id.
#[test]
fn journalctl_accepts_the_catalog_and_it_explains_every_message_id() {
    if Command::new("journalctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: journalctl not installed (apt-get install systemd; scripts/test.sh does)"
        );
        return;
    }
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/quiesce.catalog"
    ))
    .unwrap();
    let root = std::env::temp_dir().join(format!("quiesce-catalog-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("usr/lib/systemd/catalog")).unwrap();
    fs::write(root.join("usr/lib/systemd/catalog/quiesce.catalog"), &text).unwrap();
    let update = Command::new("journalctl")
        .arg(format!("--root={}", root.display()))
        .arg("--update-catalog")
        .output()
        .unwrap();
    let list = Command::new("journalctl")
        .arg(format!("--root={}", root.display()))
        .arg("--list-catalog")
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&root);
    assert!(
        update.status.success(),
        "journalctl --update-catalog: {}",
        String::from_utf8_lossy(&update.stderr)
    );
    assert!(
        update.stderr.is_empty(),
        "journalctl complained: {}",
        String::from_utf8_lossy(&update.stderr)
    );
    let listed = String::from_utf8_lossy(&list.stdout);
    for kind in Record::ALL {
        let id = kind.message_id();
        assert!(
            text.contains(&format!("\n-- {id}\n")),
            "{kind:?} ({id}) has no catalog entry"
        );
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{id} quiesce: "))),
            "{kind:?} ({id}) not in journalctl --list-catalog:\n{listed}"
        );
    }
}
