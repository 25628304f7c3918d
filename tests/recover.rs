//! SPEC.md §6.6: the post-script runs even when the runner dies, after a
//! `pre` whose `post` never comes, and exactly once however recoveries race.
//! Root: the state directory and scripts must be root-owned; the freeze
//! tests use scratch loop filesystems.

mod common;
use common::wait_until;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::scratchfs::ScratchFs;
use common::{pids_with, signal, MarkerGuard, Run, Setup};
use nix::sys::signal::Signal;

/// A set-up with its own state directory; the post-script appends a line
/// with its QUIESCE_RECOVERY to the marker file.
struct T {
    s: Setup,
    state: PathBuf,
}

fn t(tag: &str) -> T {
    let s = Setup::new(tag);
    s.post_logs_recovery("");
    let state = s.s.path("state");
    T { s, state }
}

impl T {
    /// The set-up's command (its `--state-dir` is `self.state`).
    fn base(&self) -> Command {
        self.s.command()
    }
    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.base().args(args).output().unwrap())
    }
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.base()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
    fn posts(&self) -> Vec<String> {
        self.s.ran_lines("post")
    }
    fn records(&self) -> Vec<String> {
        common::pending_records(&self.state)
    }
    /// Waits (bounded) for `n` post lines.
    fn wait_posts(&self, n: usize, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.posts().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Pids whose argv is exactly `sleep MARKER` (the snapshot command itself).
fn sleepers(marker: &str) -> Vec<i32> {
    pids_with(marker)
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.starts_with(b"sleep\0"))
                .unwrap_or(false)
        })
        .collect()
}

/// A snapshot whose command is `sleep MARKER` on a scratch filesystem.
fn snapshot_args<'a>(fs: &'a ScratchFs, m: &'a MarkerGuard) -> Vec<&'a str> {
    vec![
        "snapshot",
        "--mount",
        fs.path(),
        "--",
        "sleep",
        m.0.as_str(),
    ]
}

/// Starts a snapshot of `fs` whose command is `sleep MARKER`, and waits
/// (bounded) until that command runs: the window is open.
fn snapshot_in_window(t: &T, fs: &ScratchFs, m: &MarkerGuard) -> std::process::Child {
    let child = t.spawn(&snapshot_args(fs, m));
    assert!(
        wait_until(Duration::from_secs(10), || !sleepers(&m.0).is_empty()),
        "snapshot command never started"
    );
    child
}

#[test]
fn sigkill_of_the_runner_mid_window_runs_the_post_script_once() {
    require_root!();
    let t = t("rec-kill");
    let fs = ScratchFs::new(&t.s.s.dir, "data", "ext4");
    let m = MarkerGuard::new(131);
    let mut child = snapshot_in_window(&t, &fs, &m);
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        t.wait_posts(1, Duration::from_secs(20)),
        "the post-script did not run after the runner was killed: {:?}",
        t.s.scripts_ran()
    );
    assert!(fs.writable_within(Duration::from_secs(10)), "left frozen");
    // Whoever ran it is done once the record is gone; nothing runs it again.
    assert!(wait_until(Duration::from_secs(20), || t
        .records()
        .is_empty()));
    let again = t.run(&["--json", "recover"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(t.posts(), vec!["post runner-died".to_string()]);
}

#[test]
fn sigkill_of_every_quiesce_process_leaves_it_to_recover_once() {
    require_root!();
    let t = t("rec-killall");
    let fs = ScratchFs::new(&t.s.s.dir, "data", "ext4");
    let m = MarkerGuard::new(132);
    let mut child = snapshot_in_window(&t, &fs, &m);
    // Runner, watchdog and post guard all carry the runner's argv: stop
    // every one of them at once, then kill them.
    let quiesce: Vec<i32> = pids_with(&m.0)
        .into_iter()
        .filter(|p| !sleepers(&m.0).contains(p))
        .collect();
    assert!(quiesce.len() >= 2, "expected runner and guard: {quiesce:?}");
    for p in &quiesce {
        signal(*p, Signal::SIGSTOP);
    }
    for p in &quiesce {
        signal(*p, Signal::SIGKILL);
    }
    let _ = child.wait();
    assert!(t.posts().is_empty(), "{:?}", t.s.scripts_ran());
    assert_eq!(t.records().len(), 1);
    let first = t.run(&["--json", "recover"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let v = first.json();
    assert_eq!(v["recovered"][0]["recovery"], "runner-died", "{v}");
    assert_eq!(v["recovered"][0]["result"], "success", "{v}");
    assert_eq!(t.posts(), vec!["post runner-died".to_string()]);
    assert!(fs.writable_within(Duration::from_secs(10)), "left frozen");
    let second = t.run(&["--json", "recover"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.json().get("recovered").is_none(),
        "{}",
        second.stdout
    );
    assert_eq!(t.posts().len(), 1);
    assert!(t.records().is_empty());
}

#[test]
fn a_pre_alone_is_left_pending_until_post_due() {
    require_root!();
    let t = t("rec-bridge");
    let pre = t.run(&["--json", "pre"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert_eq!(t.records().len(), 1);
    let early = t.run(&["--json", "recover"]);
    assert_eq!(early.code, 0, "{}", early.stderr);
    assert!(t.posts().is_empty(), "ran early: {:?}", t.s.scripts_ran());
    let check = t.run(&["--json", "check"]);
    let pending = &check.json()["pending"];
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    // A second `pre` with --post-due 1 (recorded with it): past due a
    // second later (bounded poll, no clock assert); the first stays.
    assert_eq!(t.run(&["--post-due", "1", "pre"]).code, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        t.run(&["recover"]);
        !t.posts().is_empty()
    }));
    assert_eq!(t.posts(), vec!["post post-overdue".to_string()]);
    t.run(&["recover"]);
    assert_eq!(t.posts().len(), 1);
    assert_eq!(t.records().len(), 1, "the first pre is still pending");
}

#[test]
fn a_post_call_settles_the_pending_pre() {
    require_root!();
    let t = t("rec-settle");
    assert_eq!(t.run(&["pre"]).code, 0);
    assert_eq!(t.records().len(), 1);
    let post = t.run(&["post"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(t.records().is_empty());
    t.run(&["--post-due", "1", "recover"]);
    assert_eq!(t.posts(), vec!["post none".to_string()]);
}

#[test]
fn racing_recoveries_run_the_post_script_once() {
    require_root!();
    let t = t("rec-race");
    let fs = ScratchFs::new(&t.s.s.dir, "data", "ext4");
    let m = MarkerGuard::new(133);
    // A slow post-script widens the race window.
    fs::write(
        &t.s.post,
        format!(
            "#!/bin/sh\necho \"post ${{QUIESCE_RECOVERY:-none}}\" >> {}\nsleep 0.5\n",
            t.s.marker.display()
        ),
    )
    .unwrap();
    let mut child = snapshot_in_window(&t, &fs, &m);
    // The guard (watcher), two `recover`s and the next run, all at once.
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    let racers: Vec<_> = (0..3)
        .map(|i| {
            if i == 2 {
                t.spawn(&["freeze", "--mount", fs.path(), "--", "true"])
            } else {
                t.spawn(&["recover"])
            }
        })
        .collect();
    for mut r in racers {
        let _ = r.wait();
    }
    assert!(wait_until(Duration::from_secs(20), || t
        .records()
        .is_empty()));
    assert!(t.wait_posts(1, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.posts().len(), 1, "{:?}", t.s.scripts_ran());
    assert!(fs.writable_within(Duration::from_secs(10)));
}

#[test]
fn an_untrusted_state_dir_is_refused_with_304() {
    require_root!();
    let t = t("rec-baddir");
    fs::create_dir_all(&t.state).unwrap();
    fs::set_permissions(&t.state, fs::Permissions::from_mode(0o777)).unwrap();
    let r = t.run(&["--json", "pre"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], 304, "{v}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains(&t.state.display().to_string()), "{msg}");
    assert_eq!(t.s.scripts_ran(), "", "a script ran");
    let rec = t.run(&["--json", "recover"]);
    assert_eq!(rec.json()["errors"][0]["code"], 304);
}

#[test]
fn a_tampered_record_is_reported_and_kept() {
    require_root!();
    let t = t("rec-tamper");
    assert_eq!(t.run(&["pre"]).code, 0);
    let name = t.records().pop().unwrap();
    let path = t.state.join(&name);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("post.sh", "evil.sh")).unwrap();
    let r = t.run(&["--json", "--post-due", "1", "recover"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("seal") && msg.contains(&name), "{msg}");
    assert!(t.posts().is_empty());
    assert!(path.exists(), "the record must be kept for the operator");
    // Truncated: the same.
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let r = t.run(&["--json", "--post-due", "1", "recover"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(t.posts().is_empty());
    assert!(path.exists());
}

#[test]
fn a_changed_post_script_or_a_gone_config_is_not_run() {
    require_root!();
    let t = t("rec-changed");
    assert_eq!(t.run(&["--post-due", "1", "pre"]).code, 0);
    fs::write(&t.s.post, "#!/bin/sh\necho changed >> /dev/null\n").unwrap();
    let mut r = t.run(&["--json", "recover"]);
    assert!(wait_until(Duration::from_secs(10), || {
        r = t.run(&["--json", "recover"]);
        r.code != 0
    }));
    assert_eq!(r.json()["errors"][0]["code"], 312, "{}", r.stdout);
    assert_eq!(t.records().len(), 1);
    fs::remove_file(&t.s.config).unwrap();
    let r = t.run(&["--json", "recover"]);
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("is gone") && msg.contains("remove it"),
        "{msg}"
    );
    assert_eq!(t.records().len(), 1);
}

#[test]
fn a_whole_snapshot_leaves_no_record_and_no_guard() {
    require_root!();
    let t = t("rec-normal");
    let fs = ScratchFs::new(&t.s.s.dir, "data", "ext4");
    // An unusual --post-due in the runner's argv finds its guard, if one
    // survived the run (the guard carries the runner's argv until it execs).
    let due = format!("{}", 900_000 + std::process::id() % 90_000);
    let r = t.run(&[
        "--json",
        "--post-due",
        &due,
        "snapshot",
        "--mount",
        fs.path(),
        "--",
        "true",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(t.records().is_empty());
    assert_eq!(pids_with(&due), Vec::<i32>::new(), "a guard survived");
    assert_eq!(t.posts(), vec!["post none".to_string()]);
}

/// Found by the soak: a signal to the runner while its own post-script runs
/// kills that post-script before it finishes. The record must stay pending
/// and the guard armed, so the post-script runs again, to its end, once the
/// runner is gone (QUIESCE_RECOVERY=runner-died) -- not be counted as run.
#[test]
fn a_post_script_cut_short_by_a_signal_runs_again_once_the_runner_is_gone() {
    require_root!();
    let t = t("rec-cutshort");
    let m = MarkerGuard::new(139);
    // The runner's own post-script hangs (marked) until killed; the
    // recovered one ends at once.
    fs::write(
        &t.s.post,
        format!(
            "#!/bin/sh\nif [ -z \"$QUIESCE_RECOVERY\" ]; then echo started >> {marker}; sleep {m}; fi\necho \"post ${{QUIESCE_RECOVERY:-none}}\" >> {marker}\n",
            marker = t.s.marker.display(),
            m = m.0
        ),
    )
    .unwrap();
    fs::set_permissions(&t.s.post, fs::Permissions::from_mode(0o700)).unwrap();
    t.s.config_with(|c| {
        c.insert("fsFreezeEnabled".into(), serde_json::json!(false));
    });
    let mut child = t.spawn(&["snapshot", "--", "true"]);
    assert!(
        wait_until(Duration::from_secs(10), || t
            .s
            .scripts_ran()
            .contains("started")),
        "the post-script never started: {:?}",
        t.s.scripts_ran()
    );
    signal(child.id() as i32, Signal::SIGTERM);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143));
    assert!(
        t.wait_posts(1, Duration::from_secs(20)),
        "the cut-short post-script was not run again: {:?}",
        t.s.scripts_ran()
    );
    assert!(wait_until(Duration::from_secs(20), || t
        .records()
        .is_empty()));
    assert_eq!(t.posts(), vec!["post runner-died".to_string()]);
    assert_eq!(m.survivors(), Vec::<i32>::new());
}
