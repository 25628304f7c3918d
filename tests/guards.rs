//! The guards out of reach (SPEC.md §6.4 points 4 and 6, §6.6, §8; issue
//! 20): a runner stopped with a freeze in flight, a status that never claims
//! what did not hold, holders that go after quiesce's own processes, a state
//! directory that fills up. Every edge is reproduced for real on scratch
//! loop filesystems; "not frozen" is proved by a write that completes, and
//! checked while the runner is still stopped.

mod common;
use common::wait_until;

use common::fanotify::Holder;
use common::scratchfs::ScratchFs;
use common::{signal, Run, Setup, TestCgroup};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A runner the test stopped: continued on every path, so it can end (and
/// be reaped by the test) whatever an assertion did.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        signal(pid, Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, Signal::SIGCONT);
    }
}

/// Whether a freeze thread of `pid` is in uninterruptible sleep: inside
/// FIFREEZE, waiting in freeze_super.
fn freezing(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        comm.trim() == "quiesce-freeze"
            && stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('D'))
    })
}

/// The one-letter state of `pid` (or of one of its threads) in /proc.
fn states(pid: i32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| s.rsplit(')').next()?.trim_start().chars().next())
        .collect()
}

fn is_stopped(pid: i32) -> bool {
    let s = states(pid);
    !s.is_empty() && s.iter().all(|&c| c == 'T' || c == 't')
}

/// `snapshot --json --max-freeze MAX --mount FS -- sh -c CMD`, its output
/// piped for [`finish`].
fn snapshot_sh(s: &Setup, fs: &ScratchFs, max_freeze: &str, cmd: &str) -> Child {
    s.command()
        .args(["snapshot", "--json", "--max-freeze", max_freeze, "--mount"])
        .args([fs.path(), "--", "sh", "-c", cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for the child to exit, then what it printed.
fn finish(mut child: Child, within: Duration) -> Run {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return Run::from(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("quiesce did not end within {within:?}");
}

/// Issue 20 item 1: a fanotify permission listener holds a writer in open(),
/// so the runner's FIFREEZE blocks in freeze_super; the runner is stopped
/// there; the writer is released and the FIFREEZE completes in the kernel
/// while the runner stays stopped. At the deadline (3 s + the watchdog's
/// margin) the watchdog must thaw that mount — checked while the runner is
/// still stopped. (It used to thaw only mounts marked frozen, and wait for
/// a runner that a SIGSTOP keeps alive forever.)
#[test]
fn a_runner_stopped_with_its_freeze_in_flight_is_thawed_at_the_deadline_while_still_stopped() {
    require_root!();
    let s = Setup::new("stopinfl");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let (mut holder, mut writer) = Holder::hold_a_writer(&s, &fs);
    let started = Instant::now();
    let runner = s
        .command()
        .args([
            "freeze",
            "--json",
            "--max-freeze",
            "3",
            "--mount",
            fs.path(),
            "--",
            "true",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = runner.id() as i32;
    // Its freeze thread is inside FIFREEZE, in freeze_super, waiting for
    // the held writer: uninterruptible sleep, after the window's record
    // (written right before the first FIFREEZE), and still so a moment
    // later (the freeze threads exist from the run's start and pass
    // through D on their own now and then).
    let record = s.s.path("run/state.json");
    assert!(
        wait_until(Duration::from_secs(5), || record.exists()
            && freezing(pid)
            && {
                std::thread::sleep(Duration::from_millis(10));
                freezing(pid)
            }),
        "the runner's FIFREEZE never blocked"
    );
    let stopped = Stopped::stop(pid);
    // The FIFREEZE completes in the kernel; the thread stops on its way back.
    // (The writer then writes: it ends once the mount is thawed, by whoever.)
    holder.release();
    // Deadline 3 s + margin 1 s from the window's start, and some slack.
    let thawed = wait_until(Duration::from_secs(8), || {
        fs.writable_within(Duration::from_millis(300))
    });
    assert!(
        is_stopped(pid),
        "the runner must still be stopped when the mount is checked"
    );
    assert!(
        thawed,
        "the mount was still frozen {:.1} s after the runner started, with --max-freeze 3 and the runner stopped",
        started.elapsed().as_secs_f64()
    );
    drop(stopped);
    let run = finish(runner, Duration::from_secs(30));
    let _ = writer.wait();
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["errors"][0]["code"], 122, "{v}");
    assert_eq!(v["errors"][0]["name"], "FsFreezeTimeout", "{v}");
    fs.assert_writable();
}

/// Issue 20 item 3: the runner is stopped while the snapshot command runs
/// and continued long after `--max-freeze`. The watchdog thawed at its
/// deadline, the command wrote to the mount it believed frozen: the run
/// must say FsFreezeTimeout, at most crash-consistent, exit 1 — never
/// `application` (it used to).
#[test]
fn a_window_the_watchdog_thawed_is_never_reported_application_consistent() {
    require_root!();
    let s = Setup::new("truth");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let started = s.s.path("cmd-started");
    let written = fs.mnt.join("written-during-snapshot");
    let cmd = format!(
        "touch '{}'; sleep 5; date > '{}'",
        started.display(),
        written.display()
    );
    let runner = snapshot_sh(&s, &fs, "3", &cmd);
    let pid = runner.id() as i32;
    assert!(
        wait_until(Duration::from_secs(10), || started.exists()),
        "the snapshot command never started"
    );
    let stopped = Stopped::stop(pid);
    // The command writes at 5 s: the watchdog thawed at 4 s.
    assert!(
        wait_until(Duration::from_secs(10), || written.exists()),
        "the command could not write: the mount stayed frozen past --max-freeze"
    );
    assert!(is_stopped(pid), "the runner must still be stopped");
    std::thread::sleep(Duration::from_secs(2));
    drop(stopped);
    let run = finish(runner, Duration::from_secs(30));
    let v = run.json();
    assert_ne!(v["consistency"], "application", "{v}");
    assert_ne!(v["consistency"], "filesystem", "{v}");
    assert_eq!(v["consistency"], "crash", "{v}");
    assert_eq!(v["result"], "degraded", "{v}");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let names: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"FsFreezeTimeout"), "{v}");
    let mount = &v["phases"]["freeze"]["mounts"][0];
    assert_eq!(mount["thawedByWatchdog"], true, "{v}");
    let frozen = mount["frozenMs"].as_f64().unwrap();
    assert!(
        frozen < 4000.0 + 2000.0,
        "frozenMs {frozen}: the mount was frozen until the watchdog thawed it, not until the runner came back"
    );
    assert_eq!(v["phases"]["snapshot"]["frozen"], false, "{v}");
    assert!(run.stderr.contains("FsFreezeTimeout"), "{}", run.stderr);
    fs.assert_writable();
}

const HOLDER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/helpers/hostile_holder.py"
);

fn have_python3() -> bool {
    let have = std::path::Path::new("/usr/bin/python3").exists();
    if !have {
        eprintln!("SKIPPED: needs /usr/bin/python3 for the hostile holder");
    }
    have
}

/// Makes `s`'s pre-script leave the hostile holder running in `mode`
/// (tests/helpers/hostile_holder.py), its stderr in `holder.err`; returns
/// the scratch directory it reports into.
fn hostile_pre_script(s: &Setup, mode: &str) -> String {
    let d = s.s.dir.display().to_string();
    std::fs::write(
        &s.pre,
        format!(
            "#!/bin/sh\necho pre >> '{}'\n/usr/bin/python3 {HOLDER} {mode} '{d}' >/dev/null 2>'{d}/holder.err' &\nexit 0\n",
            s.marker.display()
        ),
    )
    .unwrap();
    d
}

/// `(ppid, pgid, comm)` of `pid`, from /proc.
fn stat_of(pid: i32) -> Option<(i32, i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = s[s.find('(')? + 1..s.rfind(')')?].to_string();
    let mut rest = s[s.rfind(')')? + 2..].split(' ');
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some((ppid, pgid, comm))
}

/// Every process and thread that guards run `runner` now, as the hostile
/// holder is to aim at them, its process groups and cgroups.
fn targets_of(runner: i32) -> Value {
    let threads: Vec<i32> = std::fs::read_dir(format!("/proc/{runner}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .filter(|&t| t != runner)
        .collect();
    let mut watchdog = Vec::new();
    let mut others = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        match stat_of(pid) {
            Some((ppid, _, comm)) if ppid == runner && comm == "quiesce-watchdo" => {
                watchdog.push(pid)
            }
            Some((ppid, _, comm)) if ppid == runner && comm == "quiesce" => others.push(pid),
            _ => {}
        }
    }
    let mut groups: Vec<i32> = watchdog.iter().chain(&others).copied().collect();
    groups.push(stat_of(runner).unwrap().1);
    let cg = std::fs::read_to_string(format!("/proc/{runner}/cgroup")).unwrap();
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string();
    let root = if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let mine = format!("{root}{rel}");
    let parent = std::path::Path::new(&mine)
        .parent()
        .unwrap()
        .display()
        .to_string();
    serde_json::json!({
        "runner": runner,
        "pids": {
            "runner": [runner],
            "runner thread": threads,
            "watchdog": watchdog,
            "guard or sentinel": others,
        },
        "groups": groups,
        "cgroups": [mine, parent],
    })
}

/// Issue 20 item 2: a pre-script leaves a holder that goes after every
/// guard — the runner and each of its threads, the watchdog, the post guard,
/// the run sentinel, their process groups, `-1`, their cgroups, their
/// priorities, limits and `oom_score_adj` — by every route SPEC §8 names,
/// during the freeze window. Each route must be refused, and the holder must
/// still be able to renice, signal and end a process of its own. (Every
/// route succeeded before: a real holder could kill the watchdog and stop
/// the runner.) The probes change nothing even where they are allowed.
#[test]
fn a_holder_reaches_no_guard_by_any_route_and_still_manages_its_own_processes() {
    require_root!();
    if !have_python3() {
        return;
    }
    let s = Setup::new("hostile");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let d = hostile_pre_script(&s, "probe");
    let cmd = format!(
        "touch '{d}/cmd-started'; i=0; while [ ! -e '{d}/holder-done' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"
    );
    let runner = snapshot_sh(&s, &fs, "30", &cmd);
    let pid = runner.id() as i32;
    assert!(
        wait_until(Duration::from_secs(15), || s.s.path("cmd-started").exists()),
        "the snapshot command never started"
    );
    let targets = targets_of(pid);
    let tmp = s.s.path("targets.tmp");
    std::fs::write(&tmp, targets.to_string()).unwrap();
    std::fs::rename(&tmp, s.s.path("targets.json")).unwrap();
    let run = finish(runner, Duration::from_secs(60));
    let got: Value = serde_json::from_str(
        &std::fs::read_to_string(s.s.path("holder.json")).unwrap_or_else(|_| {
            panic!(
                "the holder wrote no result: {}\n{}",
                std::fs::read_to_string(s.s.path("holder.err")).unwrap_or_default(),
                run.stderr
            )
        }),
    )
    .unwrap();
    let got = got.as_object().unwrap();
    assert!(
        got.len() > 40,
        "too few routes tried: {got:?}\ntargets {targets}"
    );
    let reached: Vec<&String> = got
        .iter()
        .filter(|(k, v)| !k.starts_with("own") && **v == 0)
        .map(|(k, _)| k)
        .collect();
    assert!(
        reached.is_empty(),
        "the holder reached a guard by: {reached:?}\ntargets {targets}"
    );
    for own in ["own renice", "own sighup", "own child ended by SIGHUP"] {
        assert_eq!(got[own], 0, "{own}: {got:?}");
    }
    assert!(
        !targets["pids"]["watchdog"].as_array().unwrap().is_empty(),
        "no watchdog was running during the window: {targets}"
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["consistency"], "application", "{v}");
    assert_eq!(s.scripts_ran(), "pre\npost\n");
    fs.assert_writable();
}

/// Issue 20 item 2, destructively, where it cannot hurt: the whole run in a
/// private pid namespace (`unshare -pf --mount-proc`) and a cgroup the test
/// made. During the freeze window the holder writes "1" into its parent
/// cgroup's cgroup.freeze and cgroup.kill (the cgroup quiesce runs in) and
/// sends SIGSTOP then SIGKILL to -1. All must be refused: the run ends
/// application-consistent, nothing frozen, the cgroup not frozen.
#[test]
fn kill_minus_one_and_cgroup_writes_from_a_holder_change_nothing() {
    require_root!();
    if !have_python3() {
        return;
    }
    let Some(cg) = TestCgroup::new("guards") else {
        eprintln!("SKIPPED: no writable cgroup v2 hierarchy to make a test cgroup in");
        return;
    };
    let s = Setup::new("destroy");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let d = hostile_pre_script(&s, "destroy");
    let cmd = format!(
        "touch '{d}/cmd-started'; i=0; while [ ! -e '{d}/holder-done' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
    );
    let quiesce = std::iter::once(env!("CARGO_BIN_EXE_quiesce").to_string())
        .chain(
            s.global_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .chain(
            [
                "snapshot",
                "--json",
                "--max-freeze",
                "20",
                "--mount",
                fs.path(),
                "--",
                "sh",
                "-c",
            ]
            .iter()
            .map(|a| a.to_string()),
        )
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let inner = format!(
        "{quiesce} '{}' > '{d}/out.json' 2> '{d}/err.txt'; echo $? > '{d}/code'",
        cmd.replace('\'', "'\\''")
    );
    let outer = format!(
        "echo $$ > '{}/cgroup.procs' && exec unshare -pf --mount-proc sh -c '{}'",
        cg.0.display(),
        inner.replace('\'', "'\\''")
    );
    let mut wrapper = Command::new("sh").arg("-c").arg(&outer).spawn().unwrap();
    let code_file = s.s.path("code");
    let ended = wait_until(Duration::from_secs(60), || code_file.exists());
    let frozen_cgroup = cg.frozen();
    let writable = fs.writable_within(Duration::from_secs(2));
    let holder = std::fs::read_to_string(s.s.path("holder.json")).unwrap_or_default();
    let err = std::fs::read_to_string(s.s.path("err.txt")).unwrap_or_default();
    drop(cg);
    let _ = wrapper.wait();
    assert!(
        ended,
        "the run never ended (stopped or killed by the holder); holder: {holder}\n{err}"
    );
    assert!(!frozen_cgroup, "the holder froze quiesce's cgroup");
    assert!(writable, "the mount was left frozen");
    let code = std::fs::read_to_string(&code_file).unwrap();
    let out = std::fs::read_to_string(s.s.path("out.json")).unwrap();
    assert_eq!(code.trim(), "0", "{out}\n{err}\nholder: {holder}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["consistency"], "application", "{v}");
    let got: Value = serde_json::from_str(&holder).unwrap();
    eprintln!("holder: {got}");
    for route in ["kill -STOP -1", "kill -KILL -1"] {
        assert_eq!(got[route], libc::EPERM, "{route}: {got}");
    }
    for (route, errno) in got.as_object().unwrap() {
        if route.starts_with("write") {
            assert_ne!(errno, 0, "{route}: {got}");
        }
    }
    assert_eq!(got["own child ended by SIGHUP"], 0, "{got}");
    assert_eq!(s.scripts_ran(), "pre\npost\n");
}

/// Issue 20 item 4: the state directory lives on a small ext4 whose 64
/// inodes the pre-script fills (a dump next to /var/lib/quiesce). The
/// post-script must run exactly once: its record is claimed and settled
/// without creating a file, and a later `recover` runs nothing. (The claim
/// used to create a lock file, failed silently, and the record stayed, so
/// the next `recover` ran the post-script again as `runner-died`.)
#[test]
fn a_state_disk_out_of_inodes_still_runs_the_post_script_exactly_once() {
    require_root!();
    let s = Setup::new("fullstate");
    let data = ScratchFs::new(&s.s.dir, "data", "ext4");
    let st = ScratchFs::with_mkfs(&s.s.dir, "statefs", "ext4", "8M", &["-N", "64"]);
    let state = st.mnt.join("state");
    std::fs::write(
        &s.pre,
        format!(
            "#!/bin/sh\necho pre >> '{}'\ni=0\nwhile touch '{}/fill'$i 2>/dev/null; do i=$((i+1)); done\necho \"filled after $i files\"\n",
            s.marker.display(),
            st.mnt.display()
        ),
    )
    .unwrap();
    let run = Run::from(
        s.command_on_state(&state)
            .args(["snapshot", "--json", "--mount", data.path(), "--", "true"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["consistency"], "application", "{v}");
    assert!(
        v["phases"]["pre"]["attempts"][0]["stdoutTail"]
            .as_str()
            .unwrap()
            .contains("filled after"),
        "{v}"
    );
    assert!(
        std::fs::write(st.mnt.join("one-more"), "x").is_err(),
        "the state filesystem was not full"
    );
    assert_eq!(s.scripts_ran(), "pre\npost\n");
    assert_eq!(
        common::pending_records(&state),
        Vec::<String>::new(),
        "the record stayed"
    );
    let recover = Run::from(
        s.command_on_state(&state)
            .args(["recover", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(recover.code, 0, "{}", recover.stderr);
    let recovered = recover.json()["recovered"].as_array().map_or(0, Vec::len);
    assert_eq!(recovered, 0, "{}", recover.stdout);
    assert_eq!(s.scripts_ran(), "pre\npost\n", "the post-script ran twice");
}

/// Issue 20 item 4, the other way a record cannot be settled: the state
/// filesystem goes read-only while the pre-script runs. The post-script
/// runs once; the run says loudly that the record could not be removed;
/// `recover` never runs it again, and removes it once it can.
#[test]
fn a_record_that_cannot_be_removed_is_reported_and_never_run_again() {
    require_root!();
    let s = Setup::new("rostate");
    let data = ScratchFs::new(&s.s.dir, "data", "ext4");
    let st = ScratchFs::new(&s.s.dir, "statefs", "ext4");
    let state = st.mnt.join("state");
    let go = s.s.path("go");
    std::fs::write(
        &s.pre,
        format!(
            "#!/bin/sh\necho pre >> '{}'\ntouch '{}'\ni=0; while [ ! -e '{}' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n",
            s.marker.display(),
            s.s.path("pre-started").display(),
            go.display()
        ),
    )
    .unwrap();
    let child = s
        .command_on_state(&state)
        .args(["snapshot", "--json", "--mount", data.path(), "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || s
        .s
        .path("pre-started")
        .exists()));
    assert_eq!(
        common::pending_records(&state).len(),
        1,
        "no record before the pre-script"
    );
    let remount = |how: &str| {
        assert!(Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&st.mnt)
            .status()
            .unwrap()
            .success());
    };
    remount("ro");
    std::fs::write(&go, "").unwrap();
    let run = finish(child, Duration::from_secs(60));
    assert_eq!(s.scripts_ran(), "pre\npost\n");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let warned = |r: &Run| {
        r.stderr.contains("could not be removed") || r.stderr.contains("cannot be removed")
    };
    assert!(warned(&run), "not reported: {}", run.stderr);
    assert!(
        run.warnings().iter().any(|w| w.contains("removed")),
        "{}",
        run.stdout
    );
    let recover = || {
        Run::from(
            s.command_on_state(&state)
                .args(["recover", "--json"])
                .output()
                .unwrap(),
        )
    };
    let r = recover();
    assert_eq!(s.scripts_ran(), "pre\npost\n", "a settled record ran again");
    assert!(
        warned(&r),
        "recover must say why the record is still there: {}",
        r.stderr
    );
    remount("rw");
    let r = recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.scripts_ran(), "pre\npost\n");
    assert_eq!(
        common::pending_records(&state),
        Vec::<String>::new(),
        "the settled record was not removed"
    );
}

/// SPEC §6.4 point 4: a runner stopped by a cgroup freezer on its unit
/// (`systemctl freeze`, `cgroup.freeze`), not by a signal. The watchdog
/// leaves the runner's cgroup when it starts, so it is not frozen with it,
/// and thaws at the deadline while the unit is still frozen. (It used to
/// stay in the unit and freeze with it: the mount stayed frozen for as long
/// as the unit.)
#[test]
fn a_frozen_unit_cgroup_does_not_freeze_the_watchdog() {
    require_root!();
    let Some(cg) = TestCgroup::new("unitfreeze") else {
        eprintln!("SKIPPED: no writable cgroup v2 hierarchy to make a test cgroup in");
        return;
    };
    let s = Setup::new("unitfreeze");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let started = s.s.path("started");
    let mut runner = Command::new("sh");
    runner
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
            cg.0.display()
        ))
        .arg(env!("CARGO_BIN_EXE_quiesce"))
        .args(s.global_args())
        .args([
            "freeze",
            "--json",
            "--max-freeze",
            "3",
            "--mount",
            fs.path(),
            "--",
            "sh",
            "-c",
        ])
        .arg(format!("touch '{}'; sleep 30", started.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = runner.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || started.exists()),
        "the snapshot command never started"
    );
    std::fs::write(cg.0.join("cgroup.freeze"), "1").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || cg.frozen()),
        "the unit did not freeze"
    );
    let thawed = wait_until(Duration::from_secs(8), || {
        fs.writable_within(Duration::from_millis(300))
    });
    let still = cg.frozen();
    std::fs::write(cg.0.join("cgroup.freeze"), "0").unwrap();
    assert!(
        still,
        "the unit must still be frozen when the mount is checked"
    );
    assert!(thawed, "the mount stayed frozen with the runner's unit");
    let run = finish(child, Duration::from_secs(30));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["errors"][0]["code"], 122, "{}", run.stdout);
    drop(cg);
}
