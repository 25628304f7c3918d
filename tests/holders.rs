//! Pre-script holders and the run directory that records them (SPEC.md §7,
//! §4): the record is trusted only in a trusted directory, concurrent runs
//! keep each other's records, and a run ends only holders whose recording
//! run is over.

mod common;

use common::{chown, pids_with, MarkerGuard, Setup, NOBODY};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

/// `/proc/PID/stat` field 22, the start time a holder record carries.
fn start_time(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn holders_terminated(v: &Value) -> Vec<i64> {
    v["phases"]["post"]["holdersTerminated"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_i64().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn a_holder_record_planted_in_an_untrusted_run_dir_kills_nothing() {
    require_root!();
    let s = Setup::new("planted");
    let m = MarkerGuard::new(41);
    // An unrelated process: its pid and start time are world-readable.
    let mut victim = Command::new("sleep").arg(&m.0).spawn().unwrap();
    let pid = victim.id() as i32;
    let run_dir = s.s.mkdir("run", 0o777);
    chown(&run_dir, NOBODY);
    let planted = json!([{
        "operationId": "planted",
        "leftover": {
            "pid": pid,
            "start_time_ticks": start_time(pid),
            "cmdline": format!("sleep {}", m.0),
            "cgroups": []
        }
    }]);
    let record = run_dir.join("holders.json");
    fs::write(&record, planted.to_string()).unwrap();
    chown(&record, NOBODY);

    let run = s.quiesce(&["post", "--json"]);
    let alive = pids_with(&m.0).contains(&pid);
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "quiesce post killed a process named by a planted record"
    );
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["name"], "IncorrectPluginhostFile", "{v}");
    assert_eq!(v["errors"][0]["code"], 304, "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&run_dir.display().to_string()) && message.contains("uid 65534"),
        "the refusal names the directory and the rule: {message}"
    );
    assert_eq!(
        s.scripts_ran(),
        "",
        "nothing runs from an untrusted run dir"
    );
}

#[test]
fn a_world_writable_root_owned_run_dir_is_refused_too() {
    require_root!();
    let s = Setup::new("run-0777");
    let run_dir = s.s.mkdir("run", 0o777);
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["code"], 304, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("group- or world-writable"),
        "{v}"
    );
    assert_eq!(s.scripts_ran(), "");
}

/// Several `quiesce pre` runs at once, each leaving many holders and ending
/// at the same moment (a barrier in the scripts), so their read-modify-write
/// of the record overlaps: every holder must be recorded and so ended by
/// the post phase.
#[test]
fn concurrent_pre_runs_each_keep_their_holders_recorded() {
    require_root!();
    const RUNS: usize = 4;
    const EACH: usize = 25;
    let s = Setup::new("concurrent-pre");
    let m = MarkerGuard::new(42);
    let barrier = s.s.mkdir("barrier", 0o700);
    script(
        &s.pre,
        &format!(
            "i=0; while [ $i -lt {EACH} ]; do setsid sleep {m} >/dev/null 2>&1 & i=$((i+1)); done\n\
             touch '{b}/'$$\n\
             n=0; while [ $(ls '{b}' | wc -l) -lt {RUNS} ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done",
            m = m.0,
            b = barrier.display()
        ),
    );
    let children: Vec<_> = (0..RUNS).map(|_| s.spawn(&["pre", "--json"])).collect();
    let mut recorded = 0;
    for c in children {
        let run = common::Run::from(c.wait_with_output().unwrap());
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        recorded += run.json()["phases"]["pre"]["attempts"][0]["leftRunningPids"]
            .as_array()
            .unwrap()
            .len();
    }
    assert_eq!(recorded, RUNS * EACH, "every pre saw its holders");
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    script(&s.post, "exit 0");
    let post = s.quiesce(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}\n{}", post.stdout, post.stderr);
    assert_eq!(
        holders_terminated(&post.json()).len(),
        RUNS * EACH,
        "a record was lost: survivors {:?}",
        m.survivors()
    );
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

/// A cron `quiesce snapshot` whose pre-script left a holder (a session
/// holding a database lock) is still in its window when a bridge-mode
/// `quiesce post` runs: that post must not end the snapshot's holder; the
/// snapshot's own post phase does.
#[test]
fn a_post_run_leaves_the_holder_of_a_snapshot_still_in_progress() {
    require_root!();
    let s = Setup::new("live-holder");
    let m = MarkerGuard::new(43);
    s.config_with(|c| {
        c.insert("fsFreezeEnabled".into(), json!(false));
    });
    script(&s.pre, &format!("setsid sleep {} >/dev/null 2>&1 &", m.0));
    script(&s.post, "exit 0");
    let go = s.s.path("go");
    let waiting = s.s.path("waiting");
    let cmd = format!(
        "touch '{w}'; n=0; while [ ! -e '{g}' ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done",
        w = waiting.display(),
        g = go.display()
    );
    let snapshot = s.spawn(&["snapshot", "--json", "--", "sh", "-c", &cmd]);
    let mut n = 0;
    while !waiting.exists() && n < 3000 {
        std::thread::sleep(Duration::from_millis(10));
        n += 1;
    }
    assert!(waiting.exists(), "the snapshot command never started");
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    let holder = m.survivors();

    let post = s.quiesce(&["post", "--json"]);
    let during = m.survivors();
    fs::write(&go, "").unwrap();
    let snap = common::Run::from(snapshot.wait_with_output().unwrap());

    assert_eq!(post.code, 0, "{}\n{}", post.stdout, post.stderr);
    assert_eq!(holders_terminated(&post.json()), Vec::<i64>::new());
    assert_eq!(
        during, holder,
        "another run's post ended the snapshot's holder"
    );
    assert_eq!(snap.code, 0, "{}\n{}", snap.stdout, snap.stderr);
    let ended: Vec<i32> = holders_terminated(&snap.json())
        .into_iter()
        .map(|p| p as i32)
        .collect();
    assert_eq!(ended, holder, "the snapshot's own post ends its holder");
    assert_eq!(m.survivors(), Vec::<i32>::new());
}
