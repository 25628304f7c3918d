//! The post-script guarantee at the edges a separate `pre` opens (SPEC §6.6,
//! §7, issue 26 items 2–7): a holder belongs to its operation until its
//! post-script has run or is due; one `pre`, one post-script run, however
//! many `post` and `recover` calls race; an overdue post-script runs at its
//! due time with nothing else running; a failed recovery is kept and
//! retried; recovery waits for the state directory's filesystem; what
//! escapes a holder is ended with it; and a runner killed at the narrowest
//! moments neither repeats a post-script nor runs one whose pre never
//! started. Root: scripts and state must be root-owned; cgroups.

mod common;
use common::wait_until;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{pids_with, private_args, quiesce_bin, signal, MarkerGuard, Run, Setup, TestCgroup};
use nix::sys::signal::Signal;

/// A set-up whose post-script appends `post $QUIESCE_RECOVERY` (or `none`)
/// to the marker file, after `extra` (shell run first).
struct B {
    s: Setup,
}

fn b(tag: &str) -> B {
    let b = B { s: Setup::new(tag) };
    b.post_script("");
    b
}

impl B {
    fn post_script(&self, extra: &str) {
        self.s.post_logs_recovery(extra);
    }
    fn pre_script(&self, body: &str) {
        fs::write(
            &self.s.pre,
            format!(
                "#!/bin/sh\necho pre >> {}\n{body}\n",
                self.s.marker.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&self.s.pre, fs::Permissions::from_mode(0o700)).unwrap();
    }
    fn run(&self, args: &[&str]) -> Run {
        self.s.quiesce(args)
    }
    fn spawn(&self, env: &[(&str, &str)], args: &[&str]) -> Child {
        let mut cmd = self.s.command();
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }
    /// A `pre --post-due 1` whose guard is then killed, and a moment past
    /// its due time: its post-script is overdue and nothing runs it yet.
    fn overdue_without_guard(&self) {
        assert_eq!(self.run(&["--post-due", "1", "pre"]).code, 0);
        for g in quiesce_with(&guard_of(self)) {
            signal(g, Signal::SIGKILL);
        }
        assert!(wait_until(Duration::from_secs(5), || quiesce_with(
            &guard_of(self)
        )
        .is_empty()));
        std::thread::sleep(Duration::from_millis(1200));
    }
    fn posts(&self) -> Vec<String> {
        self.s.ran_lines("post")
    }
    /// Within `within`, the post-script ran as an overdue recovery; then
    /// the record and the guard are gone, and it ran once.
    fn overdue_post_ran_once(&self, within: Duration, otherwise: &str) {
        assert!(
            wait_until(within, || self
                .posts()
                .contains(&"post post-overdue".to_string())),
            "{otherwise}: {:?}",
            self.s.scripts_ran()
        );
        assert!(wait_until(Duration::from_secs(10), || self
            .records()
            .is_empty()
            && quiesce_with(&guard_of(self)).is_empty()));
        assert_eq!(self.posts().len(), 1);
    }
    fn state(&self) -> PathBuf {
        self.s.s.path("state")
    }
    fn records(&self) -> Vec<String> {
        common::pending_records(&self.state())
    }
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// The quiesce processes whose argv names `marker` (a guard, a runner).
/// The post guard of a `pre` carries the runner's argv until it execs
/// `recover`, and that names the set-up's scratch directory too.
fn quiesce_with(marker: &str) -> Vec<i32> {
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_quiesce")).unwrap();
    pids_with(marker)
        .into_iter()
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).ok().as_deref() == Some(bin.as_path()))
        .collect()
}

/// What marks the quiesce processes of `b`'s set-up.
fn guard_of(b: &B) -> String {
    b.s.s.dir.display().to_string()
}

fn lines_with(run: &Run, needle: &str) -> usize {
    run.stderr.lines().filter(|l| l.contains(needle)).count()
}

/// Item 2: the holder of a `pre` whose `post` is still awaited is that
/// operation's until its post-script has run: a cron `snapshot` of another
/// application, and another `pre` of it, leave it alone; the `post` ends it.
#[test]
fn other_runs_leave_the_holder_of_a_pre_whose_post_is_awaited() {
    require_root!();
    let b = b("bridge-holder");
    let m = MarkerGuard::new(261);
    b.pre_script(&format!("setsid sleep {} >/dev/null 2>&1 &", m.0));
    let pre = b.run(&["pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(wait_until(Duration::from_secs(5), || !m
        .survivors()
        .is_empty()));
    let holder = m.survivors();

    // Another application on the same machine: its own config and
    // scripts, the same run and state directories.
    let other_pre =
        b.s.s
            .write("scripts/other-pre.sh", "#!/bin/sh\nexit 0\n", 0o700);
    let other_post =
        b.s.s
            .write("scripts/other-post.sh", "#!/bin/sh\nexit 0\n", 0o700);
    let mut conf = b.s.default_config();
    conf["preScriptLocation"] = other_pre.display().to_string().into();
    conf["postScriptLocation"] = other_post.display().to_string().into();
    conf["fsFreezeEnabled"] = false.into();
    let other =
        b.s.s
            .write("other.json", serde_json::to_vec(&conf).unwrap(), 0o600);
    let other_run = |args: &[&str]| {
        let mut cmd = quiesce_bin();
        cmd.arg("--config")
            .arg(&other)
            .arg("--host-config")
            .arg(&b.s.host_config)
            .args(private_args(&b.s.s.dir))
            .args(args);
        Run::from(cmd.output().unwrap())
    };
    let cron = other_run(&["snapshot", "--json", "--", "true"]);
    assert_eq!(cron.code, 0, "{}", cron.stderr);
    let other_pre_run = other_run(&["pre", "--json"]);
    assert_eq!(other_pre_run.code, 0, "{}", other_pre_run.stderr);
    assert_eq!(m.survivors(), holder, "another run ended the holder");
    for r in [&cron, &other_pre_run] {
        assert_eq!(lines_with(r, "never released"), 0, "{}", r.stderr);
    }

    let post = b.run(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    let ended: Vec<i32> = post.json()["phases"]["post"]["holdersTerminated"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_i64().unwrap() as i32).collect())
        .unwrap_or_default();
    assert_eq!(ended, holder, "{}", post.stdout);
    assert_eq!(m.survivors(), Vec::<i32>::new());
    assert_eq!(b.posts(), vec!["post none".to_string()]);
}

/// Item 3a: the `post` of a `pre` whose due time passed with its guard
/// gone runs the overdue post-script once, as `post-overdue`, and not a
/// second time as its own post phase; a later `post` runs nothing either.
#[test]
fn a_post_after_its_due_time_runs_the_post_script_once() {
    require_root!();
    let b = b("bridge-late");
    // The guard would run it at the due time; without it, the late post
    // finds it overdue.
    b.overdue_without_guard();
    let post = b.run(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert_eq!(
        b.posts(),
        vec!["post post-overdue".to_string()],
        "{}",
        post.stderr
    );
    assert_eq!(lines_with(&post, "already ran"), 1, "{}", post.stderr);
    let again = b.run(&["post", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(b.posts().len(), 1, "{}", again.stderr);
    assert!(b.records().is_empty());
}

/// Item 3b: two `post` calls for one `pre`, overlapping: the post-script
/// runs once, both say success.
#[test]
fn two_overlapping_posts_run_the_post_script_once() {
    require_root!();
    let b = b("bridge-two-posts");
    b.post_script("sleep 1");
    assert_eq!(b.run(&["pre"]).code, 0);
    let first = b.spawn(&[], &["post", "--json"]);
    let second = b.spawn(&[], &["post", "--json"]);
    let (first, second) = (finish(first), finish(second));
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        b.posts(),
        vec!["post none".to_string()],
        "{}\n{}",
        first.stderr,
        second.stderr
    );
    assert_eq!(
        lines_with(&first, "already ran") + lines_with(&second, "already ran"),
        1,
        "{}\n{}",
        first.stderr,
        second.stderr
    );
    assert!(b.records().is_empty());
}

/// Item 3c: a `post` arriving while `quiesce recover` runs the overdue
/// post-script waits for it and runs nothing again.
#[test]
fn a_post_during_the_recovery_of_its_pre_runs_nothing_again() {
    require_root!();
    let b = b("bridge-post-recover");
    b.post_script(&format!(
        "echo started >> {}; sleep 1",
        b.s.marker.display()
    ));
    b.overdue_without_guard();
    let recover = b.spawn(&[], &["recover", "--json"]);
    assert!(
        wait_until(Duration::from_secs(10), || b
            .s
            .scripts_ran()
            .contains("started")),
        "the recovery never started the post-script: {}",
        b.s.scripts_ran()
    );
    let post = b.run(&["post", "--json"]);
    let recover = finish(recover);
    assert_eq!(recover.code, 0, "{}", recover.stderr);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert_eq!(
        b.posts(),
        vec!["post post-overdue".to_string()],
        "{}\n{}",
        recover.stderr,
        post.stderr
    );
    assert!(b.records().is_empty());
}

/// A `pre` killed while its pre-script runs (a caller's timeout): its
/// guard runs the post-script at once, and the `post` its caller may still
/// send finds that it ran and runs it no second time.
#[test]
fn a_post_after_its_pre_was_killed_mid_script_runs_nothing_again() {
    require_root!();
    let b = b("bridge-killed-pre");
    b.pre_script("sleep 30");
    let pre = b.spawn(&[], &["pre", "--json"]);
    assert!(
        wait_until(Duration::from_secs(10), || b
            .s
            .scripts_ran()
            .contains("pre")),
        "the pre-script never started: {}",
        b.s.scripts_ran()
    );
    signal(pre.id() as i32, Signal::SIGKILL);
    finish(pre);
    assert!(
        wait_until(Duration::from_secs(20), || b.posts()
            == ["post runner-died".to_string()]),
        "the guard did not run the post-script: {}",
        b.s.scripts_ran()
    );
    assert!(wait_until(Duration::from_secs(10), || b
        .records()
        .is_empty()));
    let post = b.run(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(
        post.stderr.contains("already ran for operation"),
        "{}",
        post.stderr
    );
    assert_eq!(
        b.posts(),
        ["post runner-died".to_string()],
        "{}",
        post.stderr
    );
}

/// Item 4: with no `post` and nothing else running, the overdue
/// post-script runs at its due time (the `pre`'s guard stays armed until
/// then), its holder is ended, and no quiesce process is left.
#[test]
fn an_overdue_post_script_runs_at_its_due_time_by_itself() {
    require_root!();
    let b = b("bridge-due");
    let m = MarkerGuard::new(262);
    b.pre_script(&format!("setsid sleep {} >/dev/null 2>&1 &", m.0));
    let due = "2";
    let pre = b.run(&["--post-due", due, "pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(wait_until(Duration::from_secs(5), || !m
        .survivors()
        .is_empty()));
    // The run sentinel of the `pre` may take a moment to go; the guard stays.
    assert!(
        wait_until(Duration::from_secs(5), || quiesce_with(&guard_of(&b)).len()
            == 1),
        "the guard stays armed until due: {:?}",
        quiesce_with(&guard_of(&b))
    );
    assert!(
        wait_until(Duration::from_secs(20), || !b.posts().is_empty()),
        "the overdue post-script did not run by itself: {:?} records {:?}",
        b.s.scripts_ran(),
        b.records()
    );
    assert_eq!(b.posts(), vec!["post post-overdue".to_string()]);
    assert!(wait_until(Duration::from_secs(10), || m
        .survivors()
        .is_empty()
        && quiesce_with(&guard_of(&b)).is_empty()
        && b.records().is_empty()));
    // The extension's late `post` runs nothing again.
    let late = b.run(&["post", "--json"]);
    assert_eq!(late.code, 0, "{}", late.stderr);
    assert_eq!(b.posts().len(), 1, "{}", late.stderr);
}

/// Item 5a: a recovered post-script that fails (its database is down)
/// keeps its record, shown failing by `check` and the metrics, and is
/// retried with a backoff until it succeeds.
#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_recovery_keeps_its_record_and_is_retried_until_it_succeeds() {
    require_root!();
    let b = b("bridge-retry");
    let up = b.s.s.path("database-up");
    b.post_script(&format!(
        "if [ ! -e {up} ]; then echo down >> {m}; exit 1; fi",
        up = up.display(),
        m = b.s.marker.display()
    ));
    let due = "1";
    let pre = b.spawn(
        &[("QUIESCE_FAULT", "short-backoff")],
        &["--post-due", due, "pre"],
    );
    assert_eq!(finish(pre).code, 0);
    assert!(
        wait_until(Duration::from_secs(20), || b
            .s
            .scripts_ran()
            .lines()
            .filter(|l| *l == "down")
            .count()
            >= 2),
        "the failed recovery was not retried: {:?}",
        b.s.scripts_ran()
    );
    assert_eq!(b.records().len(), 1, "a failed recovery keeps its record");
    let check = b.run(&["check", "--json"]);
    let pending = &check.json()["pending"][0];
    assert!(pending["failures"].as_u64().unwrap() >= 1, "{pending}");
    assert!(
        pending["state"].as_str().unwrap().contains("failed"),
        "{pending}"
    );
    let metrics = b.s.s.mkdir("metrics", 0o755);
    let m = b.run(&["--metrics-dir", metrics.to_str().unwrap(), "check"]);
    let text = fs::read_to_string(metrics.join("quiesce.prom")).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l == "quiesce_pending_post_scripts_failing 1"),
        "{text}\n{}",
        m.stderr
    );
    fs::write(&up, "").unwrap();
    b.overdue_post_ran_once(Duration::from_secs(20), "the retry never succeeded");
}

/// Runs `sh -c script` in a private mount namespace (`unshare -m`): the
/// bind mounts it makes vanish with it.
fn in_mount_ns(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .output()
        .unwrap()
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Item 5b: `recover` never looks at (or creates) a state directory whose
/// filesystem `/etc/fstab` mounts and is not mounted yet, and refuses one
/// that is not on the filesystem it was created on: 304, nothing run, the
/// records kept for when the right one is there.
#[test]
fn recovery_waits_for_the_state_directory_filesystem() {
    require_root!();
    let b = b("bridge-statefs");
    let fs_a = common::scratchfs::ScratchFs::new(&b.s.s.dir, "statefs", "ext4");
    let state = Path::new(fs_a.path()).join("state");
    let with_state =
        |args: &[&str]| Run::from(b.s.command_on_state(&state).args(args).output().unwrap());
    let due = "1";
    assert_eq!(with_state(&["--post-due", due, "pre"]).code, 0);
    for g in quiesce_with(&guard_of(&b)) {
        signal(g, Signal::SIGKILL);
    }
    assert_eq!(common::pending_records(&state).len(), 1);
    std::thread::sleep(Duration::from_millis(1100));

    // Not mounted yet at boot: an /etc/fstab that mounts a filesystem on
    // the state directory's parent, and nothing mounted there.
    let unmounted = b.s.s.mkdir("later", 0o755);
    let later_state = unmounted.join("state");
    let fstab = b.s.s.write(
        "fstab",
        format!(
            "# test\n/dev/disk/by-label/later {} ext4 defaults 0 2\n",
            unmounted.display()
        ),
        0o644,
    );
    let command = b.s.command_on_state(&later_state);
    let argv: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| sh_quote(Path::new(a)))
        .collect();
    let out = in_mount_ns(&format!(
        "mount --bind {} /etc/fstab && {} --json recover",
        sh_quote(&fstab),
        argv.join(" ")
    ));
    let r = Run::from(out);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], 304, "{v}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("not mounted") && msg.contains(&unmounted.display().to_string()),
        "{msg}"
    );
    assert!(!later_state.exists(), "recover created the state directory");

    // Another filesystem where the state directory was: a copy of it,
    // records and all, on a second scratch filesystem.
    let fs_b = common::scratchfs::ScratchFs::new(&b.s.s.dir, "otherfs", "ext4");
    let copy = Path::new(fs_b.path()).join("state");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&state)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let r = Run::from(
        b.s.command_on_state(&copy)
            .args(["--json", "recover"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], 304, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not on the filesystem it was created on"),
        "{v}"
    );
    assert!(
        b.posts().is_empty(),
        "a post-script ran from the wrong place"
    );

    // The right one: it runs, once.
    let r = with_state(&["--json", "recover"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(b.posts(), vec!["post post-overdue".to_string()]);
}

/// The script cgroup parent quiesce uses here, if any (v2 unified, or a
/// pure v2 host): the escape tests need one.
fn script_cgroups_available() -> bool {
    [
        "/sys/fs/cgroup/unified/cgroup.procs",
        "/sys/fs/cgroup/cgroup.procs",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

/// Item 6a: a holder that starts its lock session a moment later and
/// exits: the session escaped the recorded process, not the pre-script's
/// cgroup, and is ended after the post-script, with a warning.
#[test]
fn what_escapes_a_holder_is_ended_after_the_post_script() {
    require_root!();
    if !script_cgroups_available() {
        eprintln!("SKIPPED: no cgroup hierarchy for script cgroups");
        return;
    }
    let b = b("bridge-escape");
    let m = MarkerGuard::new(263);
    let session = b.s.s.path("session-started");
    b.pre_script(&format!(
        "(sleep 0.5; setsid sleep {m} >/dev/null 2>&1 & echo > {s}) >/dev/null 2>&1 &",
        m = m.0,
        s = session.display()
    ));
    let pre = b.run(&["pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(wait_until(Duration::from_secs(5), || session.exists()
        && !m.survivors().is_empty()));
    let escaped = m.survivors();
    let post = b.run(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(
        wait_until(Duration::from_secs(5), || m.survivors().is_empty()),
        "the escaped session survived the post phase: {escaped:?}\n{}",
        post.stderr
    );
    let v = post.json();
    let ended = v["phases"]["post"]["holdersTerminated"].to_string();
    for p in &escaped {
        assert!(ended.contains(&p.to_string()), "{ended}");
    }
    assert!(
        v["warnings"].to_string().contains("cgroup still held"),
        "{}",
        v["warnings"]
    );
}

/// Item 6b: a pre-script that leaves descendants still forking (a fork
/// bomb held at pids.max) is reported, and everything in its cgroup is
/// ended after the post-script.
#[test]
fn a_pre_script_fork_bomb_is_reported_and_ended_after_the_post_script() {
    require_root!();
    if !script_cgroups_available() {
        eprintln!("SKIPPED: no cgroup hierarchy for script cgroups");
        return;
    }
    let b = b("bridge-bomb");
    let m = MarkerGuard::new(264);
    let cgroup_file = b.s.s.path("bomb.cgroup");
    b.pre_script(&format!(
        "cat /proc/self/cgroup > {c}\n(while :; do sleep {m} & done) >/dev/null 2>&1 &\nsleep 1",
        c = cgroup_file.display(),
        m = m.0
    ));
    // Whatever happens below, the bomb is ended with the test.
    let _bomb = BombGuard(cgroup_file);
    let pre = b.run(&["pre", "--json"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    let v = pre.json();
    assert!(
        v["warnings"].to_string().contains("keep forking"),
        "{}",
        v["warnings"]
    );
    let post = b.run(&["post", "--json"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(
        wait_until(Duration::from_secs(10), || m.survivors().is_empty()),
        "{} bomb processes survived the post phase",
        m.survivors().len()
    );
}

/// Ends the fork bomb of a failed test: `cgroup.kill` on the cgroup v2 its
/// pre-script recorded (it is quiesce's script cgroup, ours).
struct BombGuard(PathBuf);

impl Drop for BombGuard {
    fn drop(&mut self) {
        let Ok(text) = fs::read_to_string(&self.0) else {
            return;
        };
        let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
            return;
        };
        for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            let dir = Path::new(root).join(path.trim_start_matches('/'));
            if dir.join("cgroup.kill").exists() && path.contains("quiesce-") {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
                let _ = wait_until(Duration::from_secs(5), || {
                    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
                });
                let _ = fs::remove_dir(&dir);
                break;
            }
        }
    }
}

/// A `snapshot -- true` of `b` with no freeze and the fault point `fault`.
#[cfg(feature = "fault-injection")]
fn snapshot_with_fault(b: &B, fault: &str) -> Child {
    b.s.config_with(|c| {
        c.insert("fsFreezeEnabled".into(), false.into());
    });
    b.spawn(&[("QUIESCE_FAULT", fault)], &["snapshot", "--", "true"])
}

/// Item 7a: a runner SIGKILLed right after its post-script was reaped (the
/// moment widened by a fault point) does not have it run again: its
/// completion was recorded at the reap.
#[cfg(feature = "fault-injection")]
#[test]
fn a_runner_killed_right_after_the_post_script_does_not_run_it_again() {
    require_root!();
    let b = b("bridge-reaped");
    let mut runner = snapshot_with_fault(&b, "post-reaped-delay");
    assert!(
        wait_until(Duration::from_secs(20), || !b.posts().is_empty()),
        "the post-script never ran: {:?}",
        b.s.scripts_ran()
    );
    std::thread::sleep(Duration::from_millis(300));
    signal(runner.id() as i32, Signal::SIGKILL);
    let _ = runner.wait();
    // Whatever the guard does, it is done once no quiesce process of this
    // set-up is left; then a recovery finds nothing either.
    let dir = b.s.s.dir.display().to_string();
    assert!(wait_until(Duration::from_secs(20), || quiesce_with(&dir).is_empty()));
    let r = b.run(&["recover", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(b.posts(), vec!["post none".to_string()], "{}", r.stderr);
    assert!(b.records().is_empty());
}

/// Item 7b: a runner SIGKILLed after writing the record and before its
/// pre-script started (the moment widened by a fault point): the recovery
/// sees that the pre-script never started and runs no post-script.
#[cfg(feature = "fault-injection")]
#[test]
fn a_runner_killed_before_its_pre_script_started_runs_no_post_script() {
    require_root!();
    let b = b("bridge-unstarted");
    let mut runner = snapshot_with_fault(&b, "pre-start-delay");
    assert!(
        wait_until(Duration::from_secs(10), || !b.records().is_empty()),
        "no record was written"
    );
    signal(runner.id() as i32, Signal::SIGKILL);
    let _ = runner.wait();
    // The guard recovers at once; the record goes, nothing runs.
    assert!(
        wait_until(Duration::from_secs(20), || b.records().is_empty()),
        "the record stayed: {:?}",
        b.records()
    );
    // The guard's recovery said why (its status is the state directory's
    // last-recover.json, written as its run ends, after the record went).
    let last_file = b.state().join("last-recover.json");
    assert!(
        wait_until(Duration::from_secs(10), || last_file.is_file()),
        "the guard's recovery left no last-recover.json"
    );
    let last: serde_json::Value = serde_json::from_slice(&fs::read(&last_file).unwrap()).unwrap();
    assert!(
        last["warnings"]
            .to_string()
            .contains("before the pre-script"),
        "{last}"
    );
    let r = b.run(&["recover", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(b.s.scripts_ran(), "", "a script ran: {}", r.stderr);
}

/// A bridge `pre` runs in the extension's unit, which may be stopped
/// before the `post` is due: systemd then kills what is left in the unit's
/// cgroup. The `pre`'s post guard leaves the caller's cgroups before it
/// waits, so the post-script still runs at its due time. (The caller's
/// cgroup here is one the test made; its `cgroup.kill` is the unit's stop.)
#[test]
fn a_stopped_caller_unit_does_not_take_the_awaiting_guard_with_it() {
    require_root!();
    let Some(cg) = TestCgroup::new("bridgeunit") else {
        eprintln!("SKIPPED: no writable cgroup v2 hierarchy to make a test cgroup in");
        return;
    };
    let b = b("bridge-unit");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
            cg.0.display()
        ))
        .arg(env!("CARGO_BIN_EXE_quiesce"))
        .args(b.s.global_args())
        .args(["--post-due", "2", "pre"])
        .output()
        .unwrap();
    let pre = Run::from(out);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert_eq!(b.records().len(), 1, "no pending record: {}", pre.stderr);
    // The unit stops: everything still in its cgroup is killed.
    let procs = cg.0.join("cgroup.procs");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = fs::write(cg.0.join("cgroup.kill"), "1");
            fs::read_to_string(&procs).is_ok_and(|p| p.trim().is_empty())
        }),
        "the test cgroup did not empty"
    );
    b.overdue_post_ran_once(
        Duration::from_secs(15),
        "the post-script never ran at its due time",
    );
}
