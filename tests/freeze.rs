//! The freeze window and its thaw guarantee (SPEC.md §6, issue 4), on
//! scratch loop-mounted ext4, xfs and btrfs. "Not frozen" is always proved by
//! a write that completes, never by the runner's own word. Every scratch
//! filesystem is thawed and unmounted by its guard on every path.

mod common;
use common::is_frozen;

use common::fanotify::Holder;
use common::scratchfs::{have_mkfs, writable_within, ScratchFs};
use common::{signal, MarkerGuard, Run, Setup};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const PROMPT: Duration = Duration::from_secs(5);
const FROZEN_PROBE: Duration = Duration::from_millis(300);

fn freeze_args<'a>(
    mounts: &'a [&'a ScratchFs],
    extra: &[&'a str],
    cmd: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec!["freeze", "--json"];
    for m in mounts {
        a.push("--mount");
        a.push(m.path());
    }
    a.extend_from_slice(extra);
    a.push("--");
    a.extend_from_slice(cmd);
    a
}

/// A command file in the scratch directory: the snapshot command then runs
/// `sh FILE`, so the marker is in the command's process only, never in the
/// runner's own argv (which a marker search would otherwise find first).
fn cmd_file(s: &Setup, body: &str) -> String {
    let p = s.s.write(&format!("cmd-{}.sh", body.len()), body, 0o700);
    p.to_str().unwrap().to_string()
}

fn frozen_paths(v: &Value) -> Vec<String> {
    v["phases"]["freeze"]["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["path"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ext4_xfs_btrfs_frozen_during_the_command_and_thawed_after() {
    require_root!();
    let s = Setup::new("fs3");
    let mut fss = vec![ScratchFs::new(&s.s.dir, "e4", "ext4")];
    for t in ["xfs", "btrfs"] {
        if have_mkfs(t) {
            fss.push(ScratchFs::new(&s.s.dir, t, t));
        } else {
            eprintln!("SKIPPED {t}: mkfs.{t} missing (scripts/test.sh installs it)");
        }
    }
    let report = s.s.path("inside.txt");
    // Inside the window, `fsfreeze -f` must find every mount busy (frozen).
    let probe = fss
        .iter()
        .map(|f| {
            format!(
                "fsfreeze -f {} 2>&1 | grep -c busy >> {}",
                f.path(),
                report.display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let refs: Vec<&ScratchFs> = fss.iter().collect();
    let run = s.quiesce(&freeze_args(&refs, &[], &["sh", "-c", &probe]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["consistency"], "filesystem");
    assert_eq!(v["result"], "success");
    let inside = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        inside.lines().filter(|l| *l == "1").count(),
        fss.len(),
        "{inside}"
    );
    let mounts = v["phases"]["freeze"]["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), fss.len());
    for m in mounts {
        assert!(m["frozenMs"].as_f64().unwrap() > 0.0);
        assert!(["ext4", "xfs", "btrfs"].contains(&m["fsType"].as_str().unwrap()));
    }
    assert!(v["phases"]["freeze"]["windowMs"].as_f64().unwrap() > 0.0);
    for f in &fss {
        assert!(f.writable_within(PROMPT), "{} still frozen", f.path());
    }
}

#[test]
fn snapshot_command_failure_is_reported_and_thawed() {
    require_root!();
    let s = Setup::new("cmdfail");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let run = s.quiesce(&freeze_args(&[&fs], &[], &["sh", "-c", "exit 5"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["SnapshotCommandFailed"]);
    assert_eq!(run.json()["phases"]["snapshot"]["exitCode"], 5);
    assert!(fs.writable_within(PROMPT));
}

#[test]
fn max_freeze_thaws_first_then_kills_a_writer_blocked_on_the_frozen_fs() {
    require_root!();
    let s = Setup::new("deadline");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(11);
    // The command writes to the frozen filesystem: it blocks in the kernel
    // and cannot die before the thaw.
    let cmd = cmd_file(
        &s,
        &format!("sleep {} & echo x > {}/blocked; wait", m.0, fs.path()),
    );
    let run = s.quiesce(&freeze_args(&[&fs], &["--max-freeze", "1"], &["sh", &cmd]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["FsFreezeTimeout"]);
    assert_eq!(run.json()["errors"][0]["code"], 122);
    assert!(fs.writable_within(PROMPT));
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

fn signal_mid_window(sig: Signal) {
    let s = Setup::new("sig");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(20 + sig as u32);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let child = s.spawn(&freeze_args(&[&fs], &[], &["sh", &cmd]));
    assert!(
        common::wait_for_marker(&m.0, PROMPT),
        "command never started"
    );
    assert!(is_frozen(fs.path()), "not frozen while the command runs");
    signal(child.id() as i32, sig);
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 128 + sig as i32, "{}", run.stderr);
    assert!(fs.writable_within(PROMPT), "still frozen after {sig}");
    assert_eq!(m.survivors(), Vec::<i32>::new());
    assert!(!frozen_paths(&run.json()).is_empty());
}

#[test]
fn sigterm_mid_window_thaws() {
    require_root!();
    signal_mid_window(Signal::SIGTERM);
}

#[test]
fn sigint_mid_window_thaws() {
    require_root!();
    signal_mid_window(Signal::SIGINT);
}

#[test]
fn sighup_mid_window_thaws() {
    require_root!();
    signal_mid_window(Signal::SIGHUP);
}

fn watchdog_pid(s: &Setup) -> i32 {
    let state: Value =
        serde_json::from_slice(&std::fs::read(s.s.path("run/state.json")).unwrap()).unwrap();
    state["watchdogPid"]
        .as_i64()
        .expect("watchdog pid recorded") as i32
}

#[test]
fn sigkill_of_the_runner_is_covered_by_the_watchdog() {
    require_root!();
    let s = Setup::new("kill");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(30);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let mut child = s.spawn(&freeze_args(&[&fs], &[], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    assert!(is_frozen(fs.path()));
    let killed_at = Instant::now();
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    assert!(fs.writable_within(PROMPT), "the watchdog did not thaw");
    eprintln!("writable {:?} after SIGKILL", killed_at.elapsed());
    // The watchdog also killed the snapshot command's group after the thaw.
    let end = Instant::now() + PROMPT;
    while !m.survivors().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn watchdog_killed_first_then_the_runners_deadline_thaws() {
    require_root!();
    let s = Setup::new("wdkill");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(31);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let child = s.spawn(&freeze_args(&[&fs], &["--max-freeze", "2"], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    signal(watchdog_pid(&s), Signal::SIGKILL);
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["FsFreezeTimeout"]);
    assert!(
        run.warnings().iter().any(|w| w.contains("watchdog died")),
        "{:?}",
        run.warnings()
    );
    assert!(fs.writable_within(PROMPT));
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

fn both_killed_then_quiesce_thaw_recovers(fs_type: &'static str) {
    let s = Setup::new("bothkill");
    let fs = ScratchFs::new(&s.s.dir, "a", fs_type);
    let m = MarkerGuard::new(32);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let mut child = s.spawn(&freeze_args(&[&fs], &[], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    signal(watchdog_pid(&s), Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(50));
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        !fs.writable_within(FROZEN_PROBE),
        "expected the mount still frozen"
    );
    let run = s.quiesce(&["thaw", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let thawed = &run.json()["phases"]["freeze"]["thawed"];
    assert_eq!(thawed[0]["outcome"], "thawed", "{thawed}");
    assert!(
        fs.writable_within(PROMPT),
        "{fs_type} still frozen after quiesce thaw"
    );
    // Nothing recorded any more: a second thaw has nothing to do.
    let again = s.quiesce(&["thaw", "--json"]);
    assert_eq!(again.code, 0);
    assert!(again.stderr.contains("nothing recorded"));
}

#[test]
fn runner_and_watchdog_both_killed_then_quiesce_thaw_recovers() {
    require_root!();
    both_killed_then_quiesce_thaw_recovers("ext4");
}

/// btrfs: a subvolume's st_dev differs from the device mountinfo shows; the
/// recovery record must use the one its thaw compares with.
#[test]
fn both_killed_on_btrfs_then_quiesce_thaw_recovers() {
    require_root!();
    if !have_mkfs("btrfs") {
        eprintln!("SKIPPED: mkfs.btrfs missing (scripts/test.sh installs btrfs-progs)");
        return;
    }
    both_killed_then_quiesce_thaw_recovers("btrfs");
}

#[test]
fn loop_filesystem_on_another_scratch_filesystem_freezes_inner_first() {
    require_root!();
    let s = Setup::new("nested");
    let outer = ScratchFs::new(&s.s.dir, "outer", "ext4");
    let inner = ScratchFs::new(&outer.mnt, "inner", "ext4");
    // Dirty data on the inner filesystem: freezing it writes back into its
    // image on the outer one, which must not be frozen yet.
    std::fs::write(inner.mnt.join("dirty"), vec![b'd'; 4 << 20]).unwrap();
    // Named outer first on purpose: the plan must reorder.
    let run = s.quiesce(&freeze_args(
        &[&outer, &inner],
        &["--max-freeze", "20"],
        &["true"],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        frozen_paths(&run.json()),
        [inner.path().to_string(), outer.path().to_string()]
    );
    assert!(inner.writable_within(PROMPT) && outer.writable_within(PROMPT));
    drop(inner);
}

#[test]
fn bind_mount_is_frozen_once() {
    require_root!();
    let s = Setup::new("bind");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let bind = s.s.mkdir("bind", 0o700);
    assert!(Command::new("mount")
        .arg("--bind")
        .arg(&fs.mnt)
        .arg(&bind)
        .status()
        .unwrap()
        .success());
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _b = Umount(bind.clone());
    let run = s.quiesce(&[
        "freeze",
        "--json",
        "--mount",
        fs.path(),
        "--mount",
        bind.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(frozen_paths(&run.json()), [fs.path().to_string()]);
    assert!(fs.writable_within(PROMPT));
}

#[test]
fn mount_frozen_by_someone_else_is_reported_and_left_frozen() {
    require_root!();
    let s = Setup::new("prefrozen");
    let a = ScratchFs::new(&s.s.dir, "a", "ext4");
    let b = ScratchFs::new(&s.s.dir, "b", "ext4");
    assert!(Command::new("fsfreeze")
        .args(["-f", b.path()])
        .status()
        .unwrap()
        .success());
    let run = s.quiesce(&freeze_args(&[&a, &b], &[], &["true"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["FsFreezeFailed"]);
    assert_eq!(run.json()["errors"][0]["code"], 121);
    assert!(run.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("already frozen"));
    // Ours thawed, theirs left as it was, and the command never ran.
    assert!(run.json()["phases"].get("snapshot").is_none());
    assert!(a.writable_within(PROMPT));
    assert!(
        !writable_within(&b.mnt, FROZEN_PROBE),
        "quiesce thawed someone else's freeze"
    );
    assert!(Command::new("fsfreeze")
        .args(["-u", b.path()])
        .status()
        .unwrap()
        .success());
    assert!(b.writable_within(PROMPT));
}

#[test]
fn unknown_mount_is_123_and_nothing_runs() {
    require_root!();
    let s = Setup::new("nomount");
    let marker = s.s.path("cmd-ran");
    let run = s.quiesce(&[
        "freeze",
        "--json",
        "--mount",
        s.s.path("not-a-mount").to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["UnableToOpenMount"]);
    assert_eq!(run.json()["errors"][0]["code"], 123);
    assert!(!marker.exists());
}

#[test]
fn a_second_run_fails_fast_naming_the_lock_holder() {
    require_root!();
    let s = Setup::new("lock");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(33);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let first = s.spawn(&freeze_args(&[&fs], &[], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    let t = Instant::now();
    let second = s.quiesce(&freeze_args(&[&fs], &[], &["true"]));
    assert!(t.elapsed() < PROMPT);
    assert_eq!(second.code, 2, "{}", second.stderr);
    let msg = second.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains(&format!("pid {}", first.id())), "{msg}");
    signal(first.id() as i32, Signal::SIGTERM);
    let run = Run::from(first.wait_with_output().unwrap());
    assert_eq!(run.code, 143);
    assert!(fs.writable_within(PROMPT));
}

/// A bug (a panic) inside the window: exit 70, the filesystems thawed and
/// the snapshot command killed. Needs the test-only fault point, which
/// scripts/test.sh enables (`--features fault-injection`).
#[cfg(feature = "fault-injection")]
#[test]
fn panic_inside_the_window_exits_70_thawed_and_killed() {
    require_root!();
    let s = Setup::new("panic");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(34);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let out = s
        .command()
        .env("QUIESCE_FAULT", "panic-in-window")
        .args(freeze_args(&[&fs], &[], &["sh", &cmd]))
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 70, "{}", run.stderr);
    assert!(run.stderr.contains("internal error"), "{}", run.stderr);
    assert!(
        fs.writable_within(PROMPT),
        "a panic left the filesystem frozen"
    );
    let end = Instant::now() + PROMPT;
    while !m.survivors().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        m.survivors(),
        Vec::<i32>::new(),
        "a panic left the command running"
    );
}

#[test]
fn check_lists_the_planned_mounts_with_their_reason() {
    require_root!();
    let s = Setup::new("check-mounts");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let run = s.quiesce(&["check", "--json", "--mount", fs.path()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all = run.json()["mounts"].as_array().cloned().unwrap_or_default();
    // Every mount is listed with its reason; only the named one is frozen.
    assert!(all
        .iter()
        .all(|m| !m["reason"].as_str().unwrap_or("").is_empty()));
    let mounts: Vec<Value> = all.into_iter().filter(|m| m["freeze"] == true).collect();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["path"], fs.path());
    assert_eq!(mounts[0]["fsType"], "ext4");
    assert_eq!(mounts[0]["freeze"], true);
    assert!(!mounts[0]["reason"].as_str().unwrap_or("").is_empty());
    // check never freezes.
    assert!(fs.writable_within(PROMPT));
    // Discovery (no --mount) lists every mount of this machine with a
    // reason, and freezes nothing.
    let run = s.quiesce(&["check", "--json"]);
    let all = run.json()["mounts"].as_array().cloned().unwrap_or_default();
    assert!(all.len() > 1, "{all:?}");
    assert!(all
        .iter()
        .all(|m| !m["reason"].as_str().unwrap_or("").is_empty()));
    assert!(all.iter().any(|m| m["path"] == fs.path()));
}

/// The binary with this set-up's run directory, an optional fault point,
/// and stdout/stderr to files (a pipe would be held open by a thread still
/// blocked in the kernel).
fn quiesce_cmd(s: &Setup, fault: Option<&str>, args: &[&str]) -> Command {
    let mut c = s.command();
    if let Some(f) = fault {
        c.env("QUIESCE_FAULT", f);
    }
    c.args(args);
    c
}

/// The status document `quiesce --json` writes to `out_path` (bounded wait:
/// it is printed once the window gave up on a blocked call).
fn wait_status(out_path: &std::path::Path) -> Value {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(out_path).unwrap()) {
            return v;
        }
        assert!(Instant::now() < end, "no status from quiesce");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Releases the writer the fanotify holder keeps inside `open()`, so the
/// blocked FIFREEZE completes late; waits (bounded) for the writer and the
/// runner. Returns the runner's exit code and whether `fs` then takes a
/// write: whoever completes the thaw (the runner's freeze thread or the
/// watchdog) does it within moments of the late freeze. On a filesystem
/// left frozen the released writer blocks until the test's guard thaws it.
fn release_late_freeze(
    holder: &mut Holder,
    writer: &mut std::process::Child,
    runner: &mut std::process::Child,
    fs: &ScratchFs,
) -> (Option<i32>, bool) {
    holder.release();
    let _ = wait_bounded(writer, Duration::from_secs(10));
    let code = wait_bounded(runner, Duration::from_secs(30));
    if code.is_none() {
        let _ = runner.kill();
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut writable = false;
    while !writable && Instant::now() < end {
        writable = fs.writable_within(Duration::from_secs(1));
    }
    (code, writable)
}

/// Waits (bounded) for a child to exit; kills it if it does not.
fn wait_bounded(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code().or(Some(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Issue 10 item 1, for real: a writer held inside open(O_TRUNC) by an
/// unanswered fanotify permission event makes FIFREEZE block past
/// `--max-freeze`; quiesce reports FsFreezeTimeout (122). When the writer is
/// released long after every deadline, the late FIFREEZE succeeds, and the
/// filesystem must not stay frozen.
#[test]
fn freeze_completing_after_its_deadline_is_thawed() {
    require_root!();
    let s = Setup::new("late");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let (mut holder, mut writer) = Holder::hold_a_writer(&s, &fs);
    let out_path = s.s.path("late.json");
    let mut runner = quiesce_cmd(
        &s,
        None,
        &[
            "freeze",
            "--json",
            "--max-freeze",
            "3",
            "--mount",
            fs.path(),
            "--",
            "true",
        ],
    )
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(std::fs::File::create(s.s.path("late.err")).unwrap())
    .spawn()
    .unwrap();
    // The status is printed once the window gave up on the call.
    let v = wait_status(&out_path);
    assert_eq!(v["errors"][0]["code"], 122, "{v}");
    // Past every deadline of the run (the watchdog's included), then the
    // writer is released and the blocked FIFREEZE completes.
    std::thread::sleep(Duration::from_secs(3));
    let (code, writable) = release_late_freeze(&mut holder, &mut writer, &mut runner, &fs);
    assert!(writable, "the late freeze left the filesystem frozen");
    assert_eq!(code, Some(2), "runner exit");
}

/// Issue 10 item 7: another tool froze a mount (EBUSY); a signal arriving
/// right after our FIFREEZE returned EBUSY (the gap widened by a fault
/// point) must not thaw that tool's freeze.
#[cfg(feature = "fault-injection")]
#[test]
fn signal_right_after_ebusy_leaves_the_foreign_freeze_alone() {
    require_root!();
    let s = Setup::new("ebusysig");
    let b = ScratchFs::new(&s.s.dir, "b", "ext4");
    assert!(Command::new("fsfreeze")
        .args(["-f", b.path()])
        .status()
        .unwrap()
        .success());
    let mut child = quiesce_cmd(
        &s,
        Some("freeze-return-delay"),
        &["freeze", "--json", "--mount", b.path(), "--", "true"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // The window is being opened once the recovery record exists; the
    // FIFREEZE returns EBUSY at once and the worker then pauses 1 s.
    let state = s.s.path("run/state.json");
    let end = Instant::now() + PROMPT;
    while !state.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id() as i32, Signal::SIGTERM);
    let code = wait_bounded(&mut child, Duration::from_secs(20));
    let still_frozen = !writable_within(&b.mnt, FROZEN_PROBE);
    common::scratchfs::fsfreeze_unfreeze(&b.mnt);
    assert_eq!(code, Some(143));
    assert!(still_frozen, "quiesce thawed another tool's freeze");
    assert!(b.writable_within(PROMPT));
}

fn signal_mid_window_raw(sig: i32) {
    let s = Setup::new("sigmore");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(40 + sig as u32 % 50);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let child = s.spawn(&freeze_args(&[&fs], &[], &["sh", &cmd]));
    assert!(
        common::wait_for_marker(&m.0, PROMPT),
        "command never started"
    );
    assert!(is_frozen(fs.path()), "not frozen while the command runs");
    // SAFETY: kill(2) of our own child with a signal number.
    unsafe { libc::kill(child.id() as i32, sig) };
    let run = Run::from(child.wait_with_output().unwrap());
    assert!(
        fs.writable_within(PROMPT),
        "still frozen after signal {sig}"
    );
    assert_eq!(run.code, 128 + sig, "{}", run.stderr);
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

/// Issue 10: SIGXCPU (a CPU-time limit) mid-window thaws and exits 128+N.
#[test]
fn sigxcpu_mid_window_thaws() {
    require_root!();
    signal_mid_window_raw(libc::SIGXCPU);
}

/// Issue 10: a real-time signal mid-window thaws and exits 128+N.
#[test]
fn realtime_signal_mid_window_thaws() {
    require_root!();
    signal_mid_window_raw(libc::SIGRTMIN() + 2);
}

/// Runner and watchdog both SIGKILLed mid-window (the record stays).
fn leave_a_stale_record(s: &Setup, fs: &ScratchFs, m: &MarkerGuard, kill_watchdog: bool) {
    let cmd = cmd_file(s, &format!("sleep {}", m.0));
    let mut child = s.spawn(&freeze_args(&[fs], &[], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    if kill_watchdog {
        signal(watchdog_pid(s), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    assert!(s.s.path("run/state.json").exists(), "no record left");
}

/// Issue 10 item 8: the watchdog thawed after the runner's SIGKILL, the
/// record stayed; another tool froze the mount since. `quiesce thaw` must
/// leave that freeze alone: the record says this run's freeze is over.
#[test]
fn quiesce_thaw_leaves_a_mount_someone_froze_after_the_stale_record() {
    require_root!();
    let s = Setup::new("stale");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(41);
    leave_a_stale_record(&s, &fs, &m, false);
    assert!(fs.writable_within(PROMPT), "the watchdog did not thaw");
    assert!(Command::new("fsfreeze")
        .args(["-f", fs.path()])
        .status()
        .unwrap()
        .success());
    let run = s.quiesce(&["thaw", "--json"]);
    let still_frozen = !writable_within(&fs.mnt, FROZEN_PROBE);
    common::scratchfs::fsfreeze_unfreeze(&fs.mnt);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(still_frozen, "quiesce thaw thawed another tool's freeze");
    let thawed = &run.json()["phases"]["freeze"]["thawed"];
    assert!(
        thawed[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("skipped"),
        "{thawed}"
    );
}

/// Issue 10 item 8: `quiesce thaw` while another process holds the run lock
/// fails fast naming its pid and thaws nothing; once the lock is free it
/// recovers the dead runner's freeze.
#[test]
fn quiesce_thaw_fails_fast_while_the_lock_is_held() {
    require_root!();
    let s = Setup::new("thawlock");
    let fs = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = MarkerGuard::new(42);
    leave_a_stale_record(&s, &fs, &m, true);
    // A holder of the lock as the extension takes its own: lockf.
    let lock = s.s.path("run/lock");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl,sys,time\nf=open('{}','a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(60)",
            lock.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 7];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut line).unwrap();
    let run = s.quiesce(&["thaw", "--json"]);
    let still_frozen = !writable_within(&fs.mnt, FROZEN_PROBE);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let msg = run.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains(&format!("pid {}", holder.id())), "{msg}");
    assert!(still_frozen, "thawed without the lock");
    let again = s.quiesce(&["thaw", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        fs.writable_within(PROMPT),
        "not recovered once the lock was free"
    );
}

// --- issue 14: stages of several filesystems, frozen concurrently ---------

/// Independent scratch filesystems of each type (two ext4, then xfs and
/// btrfs when their mkfs is there): the plan puts them in one stage.
fn one_stage(s: &Setup) -> Vec<ScratchFs> {
    let mut fss = vec![
        ScratchFs::new(&s.s.dir, "e4a", "ext4"),
        ScratchFs::new(&s.s.dir, "e4b", "ext4"),
    ];
    for t in ["xfs", "btrfs"] {
        if have_mkfs(t) {
            fss.push(ScratchFs::new(&s.s.dir, t, t));
        } else {
            eprintln!("SKIPPED {t} in the stage: mkfs.{t} missing (scripts/test.sh installs it)");
        }
    }
    fss
}

fn all_writable(fss: &[ScratchFs]) -> Vec<String> {
    fss.iter()
        .filter(|f| !f.writable_within(PROMPT))
        .map(|f| f.path().to_string())
        .collect()
}

/// Waits until the window is being opened (the recovery record exists).
fn wait_for_record(s: &Setup) {
    let state = s.s.path("run/state.json");
    let end = Instant::now() + PROMPT;
    while !state.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        state.exists(),
        "no recovery record: the window never opened"
    );
}

/// SPEC.md §6.1: independent filesystems of every type are one stage; the
/// status gives each its stage, freeze start, duration and frozen time, and
/// `check` shows the plan as numbered stages (a `stage` on every frozen
/// mount of `--json`).
#[test]
fn a_stage_of_ext4_xfs_btrfs_is_frozen_together_and_reported_by_stage() {
    require_root!();
    let s = Setup::new("stage");
    let fss = one_stage(&s);
    let refs: Vec<&ScratchFs> = fss.iter().collect();
    let run = s.quiesce(&freeze_args(&refs, &[], &["true"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let mounts = v["phases"]["freeze"]["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), fss.len(), "{v}");
    for m in mounts {
        assert_eq!(m["stage"], 1, "{m}");
        assert!(m["freezeStartMs"].as_f64().unwrap() >= 0.0, "{m}");
        assert!(m["freezeMs"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["frozenMs"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(all_writable(&fss).is_empty());
    let mut args = vec!["check", "--json"];
    for f in &fss {
        args.extend(["--mount", f.path()]);
    }
    let run = s.quiesce(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let frozen: Vec<Value> = run.json()["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["freeze"] == true)
        .cloned()
        .collect();
    assert_eq!(frozen.len(), fss.len());
    assert!(frozen.iter().all(|m| m["stage"] == 1), "{frozen:?}");
    assert!(
        run.stderr.contains("freeze stage 1 of 1: ") && run.stderr.contains("(concurrently)"),
        "{}",
        run.stderr
    );
}

/// A loop filesystem whose image is on another planned filesystem is an
/// earlier stage than it, alongside an independent one; both stages are
/// reported and thawed.
#[test]
fn a_loop_filesystem_is_a_stage_before_the_one_holding_its_image() {
    require_root!();
    let s = Setup::new("stages2");
    let outer = ScratchFs::new(&s.s.dir, "outer", "ext4");
    let side = ScratchFs::new(&s.s.dir, "side", "ext4");
    let inner = ScratchFs::new(&outer.mnt, "inner", "ext4");
    let run = s.quiesce(&freeze_args(&[&outer, &side, &inner], &[], &["true"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let stage_of = |p: &str| {
        v["phases"]["freeze"]["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["path"] == p)
            .map(|m| m["stage"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(stage_of(inner.path()), 1, "{v}");
    assert_eq!(stage_of(side.path()), 1, "{v}");
    assert_eq!(stage_of(outer.path()), 2, "{v}");
    assert!(inner.writable_within(PROMPT) && outer.writable_within(PROMPT));
    assert!(side.writable_within(PROMPT));
    drop(inner);
}

/// EBUSY on one mount of a stage (someone ran `fsfreeze -f` on it): 121,
/// every other mount of the stage thawed, the foreign freeze left alone.
#[test]
fn ebusy_on_one_mount_of_a_stage_thaws_the_rest_and_leaves_it_alone() {
    require_root!();
    let s = Setup::new("stagebusy");
    let fss = one_stage(&s);
    let foreign = ScratchFs::new(&s.s.dir, "foreign", "ext4");
    assert!(Command::new("fsfreeze")
        .args(["-f", foreign.path()])
        .status()
        .unwrap()
        .success());
    let mut refs: Vec<&ScratchFs> = fss.iter().collect();
    refs.insert(1, &foreign);
    let run = s.quiesce(&freeze_args(&refs, &[], &["true"]));
    let still_frozen = !writable_within(&foreign.mnt, FROZEN_PROBE);
    common::scratchfs::fsfreeze_unfreeze(&foreign.mnt);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.json()["errors"][0]["code"], 121);
    assert!(run.json()["phases"].get("snapshot").is_none());
    assert!(all_writable(&fss).is_empty());
    assert!(still_frozen, "quiesce thawed another tool's freeze");
}

/// One mount of a stage is held by a fanotify listener, so its FIFREEZE
/// passes its deadline: 122, the others of the stage are thawed at once,
/// and the late call, once released, is thawed too.
#[test]
fn one_call_of_a_stage_past_its_deadline_is_122_and_everything_is_thawed() {
    require_root!();
    let s = Setup::new("stagelate");
    let fss = one_stage(&s);
    let held = &fss[0];
    let (mut holder, mut writer) = Holder::hold_a_writer(&s, held);
    let out_path = s.s.path("stagelate.json");
    let mut args = vec!["freeze", "--json", "--max-freeze", "3"];
    for f in &fss {
        args.extend(["--mount", f.path()]);
    }
    args.extend(["--", "true"]);
    let mut runner = quiesce_cmd(&s, None, &args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(s.s.path("stagelate.err")).unwrap())
        .spawn()
        .unwrap();
    let v = wait_status(&out_path);
    assert_eq!(v["errors"][0]["code"], 122, "{v}");
    // The other mounts of the stage are thawed while the held one is not.
    assert!(all_writable(&fss[1..]).is_empty());
    let (code, writable) = release_late_freeze(&mut holder, &mut writer, &mut runner, held);
    assert!(writable, "the late freeze left the filesystem frozen");
    assert_eq!(code, Some(2), "runner exit");
}

/// A signal or SIGKILL while every call of a stage has returned but none is
/// recorded yet (the gap widened by a fault point): N in-flight calls, and
/// every one of them is thawed (by its thread, or by the watchdog).
#[cfg(feature = "fault-injection")]
fn signal_mid_stage(sig: Signal) {
    let s = Setup::new("midstage");
    let fss = one_stage(&s);
    let mut args = vec!["freeze", "--json"];
    for f in &fss {
        args.extend(["--mount", f.path()]);
    }
    args.extend(["--", "true"]);
    let mut child = quiesce_cmd(&s, Some("freeze-return-delay"), &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_record(&s);
    // The calls return within a cold freeze; their threads then pause 1 s.
    std::thread::sleep(Duration::from_millis(400));
    signal(child.id() as i32, sig);
    let code = wait_bounded(&mut child, Duration::from_secs(20));
    let left = all_writable(&fss);
    for f in &fss {
        common::scratchfs::fsfreeze_unfreeze(&f.mnt);
    }
    assert!(left.is_empty(), "still frozen after {sig}: {left:?}");
    match sig {
        Signal::SIGKILL => assert_eq!(code, Some(-1)),
        _ => assert_eq!(code, Some(128 + sig as i32)),
    }
}

#[cfg(feature = "fault-injection")]
#[test]
fn sigterm_mid_stage_thaws_every_call_of_the_stage() {
    require_root!();
    signal_mid_stage(Signal::SIGTERM);
}

#[cfg(feature = "fault-injection")]
#[test]
fn sigkill_mid_stage_the_watchdog_thaws_every_call_of_the_stage() {
    require_root!();
    signal_mid_stage(Signal::SIGKILL);
}

/// SIGKILL of the runner holding a whole stage frozen: the watchdog thaws
/// every mount of it.
#[test]
fn sigkill_with_a_stage_frozen_the_watchdog_thaws_all_of_it() {
    require_root!();
    let s = Setup::new("stagekill");
    let fss = one_stage(&s);
    let m = MarkerGuard::new(61);
    let cmd = cmd_file(&s, &format!("sleep {}", m.0));
    let refs: Vec<&ScratchFs> = fss.iter().collect();
    let mut child = s.spawn(&freeze_args(&refs, &[], &["sh", &cmd]));
    assert!(common::wait_for_marker(&m.0, PROMPT));
    assert!(fss.iter().all(|f| is_frozen(f.path())), "not all frozen");
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    assert!(all_writable(&fss).is_empty(), "the watchdog did not thaw");
    let end = Instant::now() + PROMPT;
    while !m.survivors().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.survivors(), Vec::<i32>::new());
}
