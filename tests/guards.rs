//! The guards out of reach (SPEC.md §6.4 points 4 and 6, §6.6, §8; issue
//! 20): a runner stopped with a freeze in flight, a status that never claims
//! what did not hold, holders that go after quiesce's own processes, a state
//! directory that fills up. Every edge is reproduced for real on scratch
//! loop filesystems; "not frozen" is proved by a write that completes, and
//! checked while the runner is still stopped.

mod common;

use common::fanotify::Holder;
use common::scratchfs::ScratchFs;
use common::{signal, Run, Setup};
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

/// Waits (bounded) for `cond`.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
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
    let victim = fs.mnt.join("held");
    std::fs::write(&victim, "x").unwrap();
    let _ = Command::new("sync").arg("-f").arg(&victim).status();
    let mut holder = Holder::start(&s, fs.path());
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("echo y > '{}'", victim.display()))
        .spawn()
        .unwrap();
    assert!(holder.wait_for("held"), "the writer was never held");
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
    // the held writer: uninterruptible sleep.
    assert!(
        wait_until(Duration::from_secs(5), || states(pid).contains(&'D')),
        "the runner's FIFREEZE never blocked"
    );
    let stopped = Stopped::stop(pid);
    assert!(wait_until(Duration::from_secs(2), || is_stopped(pid)) || states(pid).contains(&'D'));
    // The FIFREEZE completes in the kernel; the thread stops on its way back.
    holder.release();
    let _ = writer.wait();
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
    let runner = s
        .command()
        .args([
            "snapshot",
            "--json",
            "--max-freeze",
            "3",
            "--mount",
            fs.path(),
            "--",
            "sh",
            "-c",
        ])
        .arg(&cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let _: &Value = &v;
}
