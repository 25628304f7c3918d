//! quiesce as every agent's hook (SPEC.md §10, issue 22): the held freeze
//! of Google's guest agent and AWS DLM across two calls, qemu-guest-agent
//! driven for real (it freezes a scratch filesystem itself and calls the
//! hook), and VMware Tools' hook contract exactly as vmtoolsd invokes it.
//! Root: freezes, scripts root-owned. Every scratch filesystem is thawed and
//! unmounted by its guard on every path; every process a test started is
//! ended by it.

mod common;
use common::{alive, is_frozen, wait_until};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::scratchfs::ScratchFs;
use common::{end_quiesce_processes_of, pids_with, signal, MarkerGuard, Run, Setup};
use nix::sys::signal::Signal;

/// A set-up with one scratch ext4. Dropped: every quiesce process of the
/// test ended (a hold killed leaves its watchdog to thaw), then the
/// filesystem thawed and unmounted (the fields' own guards).
struct H {
    fs: ScratchFs,
    s: Setup,
}

impl Drop for H {
    fn drop(&mut self) {
        end_quiesce_processes_of(&self.s.s.dir);
        self.fs.thaw();
    }
}

fn h(tag: &str) -> H {
    let s = Setup::new(tag);
    let fs = ScratchFs::new(&s.s.dir, "fs", "ext4");
    H { fs, s }
}

impl H {
    fn hook(&self, extra: &[&str], agent_args: &[&str]) -> Run {
        let mut a = vec!["--json", "hook", "--mount", self.fs.path()];
        a.extend_from_slice(extra);
        a.extend_from_slice(agent_args);
        self.s.quiesce(&a)
    }
    fn hook_check(&self, agent: &str) -> Run {
        self.s.quiesce(&[
            "--json",
            "check",
            "--mount",
            self.fs.path(),
            "--hook",
            agent,
        ])
    }
    fn frozen(&self) -> bool {
        is_frozen(self.fs.path())
    }
    fn ran(&self) -> Vec<String> {
        self.s.scripts_ran().lines().map(str::to_string).collect()
    }
    fn run_file(&self, name: &str) -> PathBuf {
        self.s.s.path("run").join(name)
    }
    /// The pid in the hold record, while there is one.
    fn hold_pid(&self) -> Option<i32> {
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(self.run_file("hold.json")).ok()?).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }
}

fn error_names(r: &Run) -> Vec<String> {
    r.error_names()
}

// ---------------------------------------------------------------- held freeze

#[test]
fn gce_pre_returns_frozen_and_post_thaws_then_runs_the_post_script() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-held");
    let pre = t.hook(&[], &["gce", "pre", "persistent-disk-0"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(t.frozen(), "pre returned without the freeze held");
    assert_eq!(t.ran(), ["pre"], "only the pre-script ran");
    let v = pre.json();
    assert_eq!(v["hook"]["agent"], "gce");
    assert_eq!(v["hook"]["args"][1], "persistent-disk-0");
    let holder = v["hook"]["hold"]["pid"].as_i64().unwrap() as i32;
    assert!(alive(holder), "the holding process outlives the call");

    let post = t.hook(&[], &["gce", "post", "persistent-disk-0"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(!t.frozen(), "post thawed");
    t.fs.assert_writable();
    assert_eq!(t.ran(), ["pre", "post"], "post-script after the thaw");
    let v = post.json();
    assert_eq!(v["hook"]["hold"]["result"], "success");
    assert!(v["hook"]["hold"]["frozenMs"].as_f64().unwrap() > 0.0);
    assert!(!alive(holder), "the holding process is gone");
    assert!(!t.run_file("hold.json").exists());
}

#[test]
fn aws_dlm_pre_script_and_post_script_hold_and_release() {
    require_root!("freezes a scratch filesystem");
    let t = h("aws-held");
    let pre = t.hook(&[], &["aws-dlm", "pre-script"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(t.frozen());
    let post = t.hook(&[], &["aws-dlm", "post-script"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(!t.frozen());
    assert_eq!(t.ran(), ["pre", "post"]);
}

#[test]
fn post_without_a_hold_is_a_named_error_and_still_resumes_the_application() {
    require_root!("root-owned scripts");
    let t = h("gce-nohold");
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(post.code, 2, "{}", post.stderr);
    assert_eq!(error_names(&post), ["NoHeldFreeze"]);
    assert!(!t.frozen());
}

#[test]
fn a_second_pre_while_one_is_held_is_refused_and_runs_nothing() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-twice");
    assert_eq!(t.hook(&[], &["gce", "pre", "d"]).code, 0);
    let first = t.hold_pid().unwrap();
    let again = t.hook(&[], &["gce", "pre", "d"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(error_names(&again), ["FreezeAlreadyHeld"]);
    assert_eq!(t.ran(), ["pre"], "the second pre ran no script");
    assert_eq!(t.hold_pid(), Some(first), "the first hold is untouched");
    assert!(t.frozen());
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(!t.frozen());
}

#[test]
fn a_second_pre_while_the_first_is_still_running_its_scripts_is_refused() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-race");
    let started = t.s.s.path("pre-started");
    fs::write(
        &t.s.pre,
        format!(
            "#!/bin/sh\necho pre >> {}\ntouch {}\nsleep 2\n",
            t.s.marker.display(),
            started.display()
        ),
    )
    .unwrap();
    let first =
        t.s.command()
            .args(["--json", "hook", "--mount", t.fs.path(), "gce", "pre", "d"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    assert!(wait_until(Duration::from_secs(20), || started.exists()));
    let second = t.hook(&[], &["gce", "pre", "d"]);
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert_eq!(error_names(&second), ["FreezeAlreadyHeld"]);
    let first = Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(t.frozen(), "the first pre's hold is intact");
    assert_eq!(t.ran(), ["pre"], "the second pre ran nothing");
    assert_eq!(t.hook(&[], &["gce", "post", "d"]).code, 0);
    assert!(!t.frozen());
}

/// Google's agent kills only its direct child on its timeout: a `pre`
/// killed after its hold froze but before it returned takes the hold with
/// it, and its post guard runs the post-script at `--post-due`, on thawed
/// filesystems.
#[cfg(feature = "fault-injection")]
#[test]
fn a_pre_killed_before_it_hands_the_hold_over_takes_the_hold_with_it() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-abandon");
    t.s.post_logs_recovery(&format!("touch {}/post-wrote", t.fs.path()));
    let mut pre =
        t.s.command()
            .env("QUIESCE_FAULT", "hold-handover-delay")
            .args([
                "--post-due",
                "4",
                "hook",
                "--mount",
                t.fs.path(),
                "gce",
                "pre",
                "d",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || t
            .run_file("hold.frozen")
            .exists()),
        "the hold did not freeze"
    );
    assert!(t.frozen());
    let _ = pre.kill();
    let _ = pre.wait();
    assert!(
        t.fs.writable_within(Duration::from_secs(20)),
        "the abandoned hold kept the filesystem frozen"
    );
    assert!(
        wait_until(Duration::from_secs(20), || !t
            .s
            .ran_lines("post")
            .is_empty()),
        "the dead pre's post guard did not run the post-script when due"
    );
    assert_eq!(t.s.ran_lines("post"), ["post post-overdue"]);
    assert!(Path::new(t.fs.path()).join("post-wrote").exists());
}

#[test]
fn a_hold_without_post_is_thawed_at_its_deadline_and_post_says_so() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-deadline");
    let pre = t.hook(&["--max-freeze", "3"], &["gce", "pre", "d"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(t.frozen());
    // The bound is a hang guard: the deadline is 3 s.
    assert!(
        t.fs.writable_within(Duration::from_secs(20)),
        "the hold's deadline did not thaw"
    );
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(post.code, 2, "{}", post.stderr);
    assert_eq!(error_names(&post), ["HeldFreezeExpired"]);
    assert_eq!(t.ran(), ["pre", "post"], "the post-script still ran");
    assert!(!t.frozen());
}

#[test]
fn sigkill_of_the_holding_process_is_thawed_by_its_watchdog() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-kill");
    assert_eq!(t.hook(&[], &["gce", "pre", "d"]).code, 0);
    assert!(t.frozen());
    let holder = t.hold_pid().unwrap();
    signal(holder, Signal::SIGKILL);
    assert!(
        t.fs.writable_within(Duration::from_secs(20)),
        "the watchdog did not thaw"
    );
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(post.code, 2, "{}", post.stderr);
    assert_eq!(error_names(&post), ["NoHeldFreeze"]);
    assert_eq!(t.ran(), ["pre", "post"]);
    // A new pre works after the dead hold.
    assert_eq!(t.hook(&[], &["gce", "pre", "d"]).code, 0);
    assert!(t.frozen());
    assert_eq!(t.hook(&[], &["gce", "post", "d"]).code, 0);
    assert!(!t.frozen());
}

#[test]
fn a_failing_pre_script_freezes_nothing_and_rolls_back() {
    require_root!("root-owned scripts");
    let t = h("gce-prefail");
    fs::write(
        &t.s.pre,
        format!("#!/bin/sh\necho pre >> {}\nexit 3\n", t.s.marker.display()),
    )
    .unwrap();
    let pre = t.hook(&[], &["gce", "pre", "d"]);
    assert_eq!(pre.code, 2, "{}", pre.stderr);
    assert!(!t.frozen());
    assert_eq!(t.ran(), ["pre", "post"], "the rollback ran the post-script");
    assert!(t.hold_pid().is_none());
    // No later post runs it again.
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(error_names(&post), ["NoHeldFreeze"]);
    assert_eq!(t.ran(), ["pre", "post"], "the post-script ran once");
}

#[test]
fn a_freeze_that_fails_in_pre_leaves_nothing_frozen_and_rolls_back() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-freezefail");
    // Someone else's freeze: quiesce's FIFREEZE gets EBUSY and never thaws it.
    assert!(Command::new("fsfreeze")
        .args(["-f", t.fs.path()])
        .status()
        .unwrap()
        .success());
    let pre = t.hook(&[], &["gce", "pre", "d"]);
    let _ = Command::new("fsfreeze").args(["-u", t.fs.path()]).status();
    assert_eq!(pre.code, 2, "{}", pre.stderr);
    assert!(error_names(&pre).contains(&"FsFreezeFailed".to_string()));
    assert_eq!(t.ran(), ["pre", "post"]);
    assert!(t.hold_pid().is_none());
    assert!(!t.frozen());
}

#[test]
fn the_agents_pipes_are_not_held_by_the_hold() {
    require_root!("freezes a scratch filesystem");
    // Google's agent waits for every holder of the script's output pipe:
    // the hook's pre must let it go as it returns.
    let t = h("gce-pipes");
    let start = Instant::now();
    let out =
        t.s.command()
            .args(["hook", "--mount", t.fs.path(), "gce", "pre", "d"])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(t.frozen());
    assert_eq!(t.hook(&[], &["gce", "post", "d"]).code, 0);
    assert!(!t.frozen());
}

#[test]
fn the_trail_records_the_agent_and_its_arguments() {
    require_root!("root-owned scripts");
    let t = h("hook-trail");
    let sock = t.s.s.path("no-syslog.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    });
    let r = t.hook(&["--max-freeze", "5"], &["vmware", "FREEZE", "host-arg"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(t.hook(&[], &["vmware", "thaw"]).code, 0);
    let records = reader.join().unwrap();
    let hook_record = records
        .iter()
        .find(|r| r.contains("quiesce hook vmware FREEZE host-arg"))
        .unwrap_or_else(|| panic!("no hook record in {records:#?}"));
    assert!(hook_record.contains("agent=\"vmware\""), "{hook_record}");
    assert!(
        hook_record.contains("args=\"FREEZE host-arg\""),
        "{hook_record}"
    );
    assert!(records
        .iter()
        .any(|r| r.contains("quiesce hook vmware thaw")));
}

#[test]
fn bad_agent_arguments_are_usage_errors_naming_the_calls() {
    let s = Setup::new("hook-usage");
    for (args, expect) in [
        (vec!["hook", "qemu-ga", "Freeze"], "freeze or thaw"),
        (vec!["hook", "gce"], "pre or post"),
        (
            vec!["hook", "aws-dlm", "pre"],
            "pre-script, post-script or dry-run",
        ),
        (vec!["hook", "vmware", "freeze-fail"], "freezeFail"),
    ] {
        let r = s.quiesce(&args);
        assert_eq!(r.code, 64, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{args:?}: {}", r.stderr);
    }
    let r = s.quiesce(&["hook", "hyper-v", "freeze"]);
    assert_eq!(r.code, 64);
    assert_eq!(s.scripts_ran(), "");
}

#[test]
fn nothing_is_written_to_the_frozen_filesystem_while_the_hold_waits() {
    require_root!("freezes a scratch filesystem");
    // The state directory on the filesystem that is held frozen: a write
    // there by the returning pre (its last result, its metrics) would
    // block it until the deadline.
    let t = h("gce-nowrite");
    let state = Path::new(t.fs.path()).join("state");
    let run = |args: &[&str]| {
        let mut c = t.s.command_on_state(&state);
        c.args([
            "--json",
            "hook",
            "--mount",
            t.fs.path(),
            "--max-freeze",
            "60",
        ])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let returned = wait_until(Duration::from_secs(30), || {
            child.try_wait().unwrap().is_some()
        });
        if !returned {
            t.fs.thaw();
        }
        let out = child.wait_with_output().unwrap();
        assert!(returned, "the hook call blocked on the frozen filesystem");
        Run::from(out)
    };
    let pre = run(&["gce", "pre", "d"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(t.frozen());
    let post = run(&["gce", "post", "d"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert!(!t.frozen());
    assert_eq!(t.ran(), ["pre", "post"]);
    assert!(
        state.join("last-post.json").exists(),
        "post wrote its result after the thaw"
    );
}

#[test]
fn soak_of_the_held_freeze_leaves_nothing_frozen_or_running() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-soak");
    let rounds: usize = std::env::var("QUIESCE_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let expect = |extra: &[&str], args: &[&str], code: i32, round: usize| {
        let r = t.hook(extra, args);
        assert_eq!(r.code, code, "round {round}: {args:?}: {}", r.stderr);
    };
    for round in 0..rounds {
        // pre, post
        expect(&[], &["gce", "pre", "d"], 0, round);
        assert!(t.frozen());
        expect(&[], &["gce", "post", "d"], 0, round);
        assert!(!t.frozen());
        // post alone
        expect(&[], &["aws-dlm", "post-script"], 2, round);
        assert!(!t.frozen());
        // pre twice, then post
        expect(&[], &["aws-dlm", "pre-script"], 0, round);
        expect(&[], &["aws-dlm", "pre-script"], 2, round);
        expect(&[], &["aws-dlm", "post-script"], 0, round);
        assert!(!t.frozen());
        // the holder killed
        expect(&[], &["gce", "pre", "d"], 0, round);
        signal(t.hold_pid().unwrap(), Signal::SIGKILL);
        assert!(
            t.fs.writable_within(Duration::from_secs(20)),
            "round {round}"
        );
        expect(&[], &["gce", "post", "d"], 2, round);
        // the deadline (long enough for the holding run to start its
        // command on a loaded machine: a deadline that passes before the
        // hold is made fails the pre instead)
        expect(&["--max-freeze", "3"], &["gce", "pre", "d"], 0, round);
        assert!(
            t.fs.writable_within(Duration::from_secs(20)),
            "round {round}"
        );
        expect(&[], &["gce", "post", "d"], 2, round);
        assert!(!t.frozen());
    }
    let ran = t.ran();
    assert_eq!(ran.iter().filter(|l| *l == "pre").count(), 4 * rounds);
    // Every pre-script's post-script ran once; a lone post after a
    // completed operation is its late duplicate and runs none.
    assert_eq!(ran.iter().filter(|l| *l == "post").count(), 4 * rounds);
    assert!(
        wait_until(Duration::from_secs(10), || pids_with(&format!(
            "__hold-wait {}",
            t.run_file("").display()
        ))
        .is_empty()),
        "a holding process survived"
    );
}

/// `QUIESCE_BIN` for the packaged wrappers: the binary under test with the
/// test's options, whatever the wrapper passes after them.
fn bin_shim(t: &H) -> PathBuf {
    let q = |a: &std::ffi::OsStr| format!("'{}'", a.to_string_lossy());
    let mut line = vec![q(env!("CARGO_BIN_EXE_quiesce").as_ref())];
    line.extend(t.s.global_args().iter().map(|a| q(a)));
    t.s.s.write(
        "quiesce-shim",
        format!("#!/bin/sh\nexec {} \"$@\"\n", line.join(" ")),
        0o700,
    )
}

#[test]
fn the_packaged_gce_wrapper_installed_as_pre_sh_and_post_sh() {
    require_root!("freezes a scratch filesystem");
    let t = h("gce-wrapper");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/hooks/gce");
    let dir = t.s.s.mkdir("snapshots", 0o755);
    for n in ["pre.sh", "post.sh"] {
        fs::copy(&src, dir.join(n)).unwrap();
    }
    let shim = bin_shim(&t);
    // As the agent runs them: the script, the disk list as argv[1]; the
    // wrapper's own --mount comes from a copy's exec line in real use, the
    // shim's here.
    let run = |n: &str| {
        let o = Command::new(dir.join(n))
            .arg("disk-1,disk-2")
            .env("QUIESCE_BIN", &shim)
            .env("QUIESCE_TEST_MOUNT", t.fs.path())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // A hold of discovery would freeze the machine: the shim pins --mount.
    fs::write(
        &shim,
        fs::read_to_string(&shim).unwrap().replace(
            " \"$@\"",
            " \"$1\" --mount \"$QUIESCE_TEST_MOUNT\" \"$2\" \"$3\" \"$4\"",
        ),
    )
    .unwrap();
    let (code, err) = run("pre.sh");
    assert_eq!(code, Some(0), "{err}");
    assert!(t.frozen());
    let (code, err) = run("post.sh");
    assert_eq!(code, Some(0), "{err}");
    assert!(!t.frozen());
    assert_eq!(t.ran(), ["pre", "post"]);
    let o = Command::new(&src).arg("x").output().unwrap();
    assert_eq!(o.status.code(), Some(64), "called by another name");
}

// ------------------------------------------------------- qemu-guest-agent

/// A wrapper as the packages install it (`/etc/qemu/fsfreeze-hook`): one
/// line, execing quiesce with the test's options.
fn wrapper(t: &H, name: &str, globals: &[&str], hook_opts: &[&str], agent: &str) -> PathBuf {
    let q = |a: &std::ffi::OsStr| format!("'{}'", a.to_string_lossy());
    let mut line = vec![q(env!("CARGO_BIN_EXE_quiesce").as_ref())];
    line.extend(t.s.global_args().iter().map(|a| q(a)));
    line.extend(globals.iter().map(|a| q(a.as_ref())));
    line.push("hook".into());
    line.extend(["--mount".into(), q(t.fs.path().as_ref())]);
    line.extend(hook_opts.iter().map(|a| q(a.as_ref())));
    line.push(agent.into());
    t.s.s.write(
        name,
        format!("#!/bin/sh\nexec {} \"$@\"\n", line.join(" ")),
        0o700,
    )
}

/// qemu-ga, run as the issue says: on a unix socket of the test, its hook
/// the wrapper, its state in the scratch directory. Killed on drop (it is
/// never blocked on a frozen filesystem: it writes nothing while frozen).
struct Qga {
    child: std::process::Child,
    sock: PathBuf,
    /// The test's directory: every process of the namespace names it.
    dir: String,
}

fn have_qemu_ga() -> bool {
    Path::new("/usr/sbin/qemu-ga").exists()
}

macro_rules! require_qemu_ga {
    () => {
        if !have_qemu_ga() {
            eprintln!("SKIPPED: qemu-ga missing (scripts/test.sh installs qemu-guest-agent)");
            return;
        }
    };
}

/// qemu-ga's `guest-fsfreeze-thaw` issues FITHAW on every mount it sees,
/// not only those it froze: on this shared machine it would thaw other
/// tests' frozen scratch filesystems. So it runs chrooted in a private
/// mount namespace that holds only the system's directories, this test's
/// directory, its scratch filesystem and the binary under test; its
/// mountinfo (and so its freezes and thaws) is limited to them.
const QGA_ROOT: &str = r#"set -e
R="$1"; T="$2"; F="$3"; B="$4"; shift 4
mount -t tmpfs -o mode=755 qga-root "$R"
for d in usr etc proc sys dev; do mkdir -p "$R/$d"; mount --rbind "/$d" "$R/$d"; done
for l in bin sbin lib lib64; do ln -s "usr/$l" "$R/$l"; done
mkdir -p "$R/tmp" "$R/run" "$R$T" "$R$B"
mount --bind "$T" "$R$T"
mount --bind "$F" "$R$F"
mount --bind "$B" "$R$B"
exec chroot "$R" "$@"
"#;

impl Qga {
    fn start(t: &H, hook: &Path) -> Qga {
        Qga::start_with(t, Some(hook))
    }

    /// qemu-ga with `-F` naming `hook`, or without `-F` (Debian's unit).
    fn start_with(t: &H, hook: Option<&Path>) -> Qga {
        let dir = t.s.s.mkdir("qga", 0o700);
        let root = t.s.s.mkdir("qga-root", 0o755);
        let sock = dir.join("qga.sock");
        // An earlier qemu-ga's socket is not this one's readiness.
        let _ = fs::remove_file(&sock);
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_quiesce")).parent().unwrap();
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                QGA_ROOT,
                "qga-root",
            ])
            .arg(&root)
            .arg(&t.s.s.dir)
            .arg(&t.fs.mnt)
            .arg(bin_dir)
            .args(["/usr/sbin/qemu-ga", "-m", "unix-listen", "-p"])
            .arg(&sock)
            .args(hook.map(|h| format!("-F{}", h.display())))
            .arg("-t")
            .arg(&dir)
            .arg("-f")
            .arg(dir.join("qga.pid"))
            .arg("-l")
            .arg(dir.join("qga.log"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dir_s = t.s.s.dir.display().to_string();
        let q = Qga {
            child,
            sock,
            dir: dir_s,
        };
        // A hang guard: qemu-ga's namespace set-up, on a loaded machine.
        assert!(
            wait_until(Duration::from_secs(30), || q.sock.exists()),
            "qemu-ga did not start"
        );
        q
    }

    /// One command as a JSON line on the socket, its one-line answer.
    fn call(&self, execute: &str, arguments: Option<serde_json::Value>) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        assert_ne!(
            execute, "guest-fsfreeze-freeze",
            "it would freeze every filesystem of the machine"
        );
        let mut msg = serde_json::json!({ "execute": execute });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut s = std::os::unix::net::UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        writeln!(s, "{msg}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn freeze(&self, mount: &str) -> serde_json::Value {
        self.call(
            "guest-fsfreeze-freeze-list",
            Some(serde_json::json!({ "mountpoints": [mount] })),
        )
    }

    fn thaw(&self) -> serde_json::Value {
        self.call("guest-fsfreeze-thaw", None)
    }

    fn status(&self) -> String {
        self.call("guest-fsfreeze-status", None)["return"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Qga {
    /// qemu-ga and what its hook left (a deadline watcher, a post guard)
    /// ended: the namespace, and its hold on the scratch filesystem, go
    /// with them. None of them is blocked on a frozen filesystem.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in pids_with(&self.dir) {
            signal(pid, Signal::SIGKILL);
        }
    }
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

#[test]
fn qemu_ga_runs_the_pre_script_before_its_freeze_and_the_post_script_after_its_thaw() {
    require_root!("qemu-ga freezes a scratch filesystem");
    require_qemu_ga!();
    let t = h("qga-order");
    let holder = MarkerGuard::new(41);
    let m = t.fs.path().to_string();
    let marker = t.s.marker.display().to_string();
    // Each script writes on the scratch filesystem: on a frozen one it
    // would block, and time out.
    script(
        &t.s.pre,
        &format!(
            "touch {m}/pre-wrote\necho pre >> {marker}\nsleep {} >/dev/null 2>&1 &",
            holder.0
        ),
    );
    script(
        &t.s.post,
        &format!("touch {m}/post-wrote\necho post >> {marker}"),
    );
    let q = Qga::start(&t, &wrapper(&t, "fsfreeze-hook", &[], &[], "qemu-ga"));
    assert_eq!(q.status(), "thawed");

    let r = q.freeze(&m);
    assert_eq!(r["return"], 1, "{r}");
    assert_eq!(q.status(), "frozen");
    assert!(t.frozen(), "qemu-ga froze the scratch filesystem");
    assert_eq!(t.ran(), ["pre"]);
    assert!(Path::new(&m).join("pre-wrote").exists());
    assert!(
        !holder.survivors().is_empty(),
        "the holder lives from freeze to thaw"
    );

    let r = q.thaw();
    assert_eq!(r["return"], 1, "{r}");
    assert_eq!(q.status(), "thawed");
    assert!(!t.frozen());
    assert_eq!(t.ran(), ["pre", "post"]);
    assert!(
        Path::new(&m).join("post-wrote").exists(),
        "post-script after the thaw"
    );
    assert!(
        wait_until(Duration::from_secs(10), || holder.survivors().is_empty()),
        "the holder is ended after the post-script"
    );
}

#[test]
fn qemu_ga_freeze_fails_when_a_pre_script_fails_and_nothing_is_frozen() {
    require_root!("qemu-ga freezes a scratch filesystem");
    require_qemu_ga!();
    let t = h("qga-prefail");
    let marker = t.s.marker.display().to_string();
    script(&t.s.pre, &format!("echo pre >> {marker}\nexit 3"));
    let q = Qga::start(&t, &wrapper(&t, "fsfreeze-hook", &[], &[], "qemu-ga"));
    let r = q.freeze(t.fs.path());
    let desc = r["error"]["desc"].as_str().unwrap_or_default().to_string();
    assert!(desc.contains("fsfreeze hook has failed"), "{r}");
    assert_eq!(q.status(), "thawed");
    assert!(!t.frozen());
    assert_eq!(
        t.ran(),
        ["pre", "post"],
        "rolled back at once: no thaw will come"
    );
    // The host thaws after a failed freeze; the post-script does not run twice.
    let r = q.thaw();
    assert_eq!(r["return"], 0, "{r}");
    assert_eq!(t.ran(), ["pre", "post"]);
}

#[test]
fn qemu_ga_freeze_fails_within_the_timeout_of_a_hanging_pre_script() {
    require_root!("qemu-ga freezes a scratch filesystem");
    require_qemu_ga!();
    let t = h("qga-hang");
    let g = MarkerGuard::new(42);
    let marker = t.s.marker.display().to_string();
    t.s.config_with(|c| {
        c.insert("timeoutInSeconds".into(), 2.into());
    });
    script(&t.s.pre, &format!("echo pre >> {marker}\nsleep {}", g.0));
    let q = Qga::start(&t, &wrapper(&t, "fsfreeze-hook", &[], &[], "qemu-ga"));
    let start = Instant::now();
    let r = q.freeze(t.fs.path());
    assert!(r["error"].is_object(), "{r}");
    // A hang guard, not a speed target: 2 s timeout plus the kill grace.
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(q.status(), "thawed");
    assert!(!t.frozen());
    assert!(g.survivors().is_empty(), "nothing left running");
    assert_eq!(t.ran(), ["pre", "post"]);
}

#[test]
fn qemu_ga_thaw_that_never_comes_is_thawed_at_max_freeze_and_post_runs_when_due() {
    require_root!("qemu-ga freezes a scratch filesystem");
    require_qemu_ga!();
    let t = h("qga-nothaw");
    t.s.post_logs_recovery("");
    let hook = wrapper(
        &t,
        "fsfreeze-hook",
        &["--post-due", "6"],
        &["--max-freeze", "3"],
        "qemu-ga",
    );
    let q = Qga::start(&t, &hook);
    let r = q.freeze(t.fs.path());
    assert_eq!(r["return"], 1, "{r}");
    assert!(t.frozen());
    assert!(
        t.fs.writable_within(Duration::from_secs(30)),
        "--max-freeze did not thaw what qemu-ga left frozen"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !t
            .s
            .ran_lines("post")
            .is_empty()),
        "the post-script did not run at --post-due"
    );
    assert_eq!(t.s.ran_lines("post"), ["post post-overdue"]);
    // The thaw comes late: qemu-ga's thaw and the hook say it went wrong,
    // and the post-script is not run again.
    let r = q.thaw();
    let desc = r["error"]["desc"].as_str().unwrap_or_default().to_string();
    assert!(
        desc.contains("fsfreeze hook has failed with status 2"),
        "{r}"
    );
    assert_eq!(q.status(), "thawed");
    assert_eq!(t.s.ran_lines("post"), ["post post-overdue"]);
    assert!(!t.frozen());
}

#[test]
fn check_hook_qemu_ga_says_whether_the_running_agent_calls_quiesce() {
    require_root!("runs qemu-ga");
    require_qemu_ga!();
    let t = h("qga-check");
    let check = || t.hook_check("qemu-ga");
    {
        let q = Qga::start_with(&t, None);
        let pid = q.child.id();
        let r = check();
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.error_names().contains(&"AgentHookMissing".to_string()));
        assert!(
            r.stderr
                .contains(&format!("qemu-ga (pid {pid}) runs without -F")),
            "{}",
            r.stderr
        );
    }
    let hook = wrapper(&t, "fsfreeze-hook", &[], &[], "qemu-ga");
    let q = Qga::start(&t, &hook);
    let pid = q.child.id();
    let r = check();
    assert!(
        r.stderr.contains(&format!(
            "qemu-ga (pid {pid}) calls {} : quiesce's hook",
            hook.display()
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&format!("(pid {pid}) runs without -F")));
}

#[test]
fn a_held_freeze_is_not_made_where_an_application_depends_on_no_freeze() {
    require_root!("root-owned scripts");
    let t = h("gce-nofreeze");
    t.s.config_with(|c| {
        c.insert("fsFreezeEnabled".into(), false.into());
    });
    let pre = t.hook(&[], &["gce", "pre", "d"]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    assert!(!t.frozen());
    assert!(t.hold_pid().is_none());
    let post = t.hook(&[], &["gce", "post", "d"]);
    assert_eq!(post.code, 0, "{}", post.stderr);
    assert_eq!(t.ran(), ["pre", "post"]);
}

#[test]
fn check_hook_gce_and_vmware_name_what_is_missing_on_this_machine() {
    require_root!("root-owned scripts");
    let t = h("check-gce");
    if !Path::new("/usr/bin/google_guest_agent").exists() {
        let r = t.hook_check("gce");
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("Google's guest agent is not installed"));
        if !Path::new("/etc/default/instance_configs.cfg").exists() {
            assert!(r.stderr.contains("[Snapshots] enabled = true is missing"));
        }
        assert!(r
            .stderr
            .contains("/etc/google/snapshots/pre.sh is not quiesce's wrapper"));
    }
    if !Path::new("/usr/bin/vmtoolsd").exists() {
        let r = t.hook_check("vmware");
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("vmtoolsd is not installed"));
    }
    // Nothing ran, nothing froze.
    assert_eq!(t.s.scripts_ran(), "");
    assert!(!t.frozen());
}

#[test]
fn aws_dlm_dry_run_checks_and_runs_nothing() {
    require_root!("root-owned scripts");
    let t = h("aws-dry");
    let r = t.hook(&[], &["aws-dlm", "dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["hook"]["agent"], "aws-dlm");
    assert!(r
        .stderr
        .contains("a snapshot would be application-consistent"));
    assert_eq!(t.s.scripts_ran(), "");
    assert!(!t.frozen());
    fs::remove_file(&t.s.pre).unwrap();
    let r = t.hook(&[], &["aws-dlm", "dry-run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_names().contains(&"Pre-ScriptNotFound".to_string()));
}

#[test]
fn vmware_freeze_without_thaw_is_thawed_at_max_freeze() {
    require_root!("freezes a scratch filesystem");
    let t = h("vmw-deadline");
    t.s.post_logs_recovery("");
    // The deadline counts from the freeze call: long enough for the sync
    // driver's freeze below to come first on a loaded machine.
    let r = t.hook(&["--max-freeze", "3"], &["vmware", "freeze"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json()["hook"]["deadlineWatcher"].as_i64().is_some());
    // The sync driver's freeze, and no thaw.
    assert!(Command::new("fsfreeze")
        .args(["-f", t.fs.path()])
        .status()
        .unwrap()
        .success());
    assert!(
        t.fs.writable_within(Duration::from_secs(30)),
        "--max-freeze did not thaw"
    );
    let r = t.hook(&[], &["vmware", "thaw"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.error_names(), ["FsFreezeTimeout"]);
    assert_eq!(r.json()["hook"]["thawedAtDeadline"][0], t.fs.path());
    assert_eq!(t.s.ran_lines("post"), ["post none"], "the late thaw ran it");
}

#[test]
fn a_thaw_in_time_ends_the_deadline_watcher_and_thaws_nothing() {
    require_root!("freezes a scratch filesystem");
    let t = h("vmw-intime");
    let r = t.hook(&["--max-freeze", "2"], &["vmware", "freeze"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let watcher = r.json()["hook"]["deadlineWatcher"].as_i64().unwrap() as i32;
    assert!(alive(watcher));
    assert_eq!(t.hook(&[], &["vmware", "thaw"]).code, 0);
    assert!(wait_until(Duration::from_secs(5), || !alive(watcher)));
    // A freeze of someone else's after the thaw is not the agent's: left alone.
    assert!(Command::new("fsfreeze")
        .args(["-f", t.fs.path()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        t.frozen(),
        "quiesce thawed a freeze that was not the agent's"
    );
    t.fs.thaw();
}

// ------------------------------------------- the stock dispatchers' directories

/// A dispatcher's directory of scripts that log `NAME $1`, and the options
/// that take it over (no `--config`: the directory is the set).
fn dispatcher_dir(t: &H, files: &[(&str, u32, &str)]) -> (PathBuf, Vec<std::ffi::OsString>) {
    let d = t.s.s.mkdir("hook.d", 0o755);
    let log = t.s.s.path("dispatch.log");
    for (name, mode, extra) in files {
        t.s.s.write(
            &format!("hook.d/{name}"),
            format!(
                "#!/bin/sh\necho \"{name} $1\" >> {}\n{extra}\n",
                log.display()
            ),
            *mode,
        );
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        "--host-config".into(),
        t.s.host_config.clone().into(),
        "--takeover-dir".into(),
        d.clone().into(),
    ];
    args.extend(common::private_args(&t.s.s.dir));
    (d, args)
}

/// The last result of an operation, for a failure's message.
fn last(t: &H, op: &str) -> String {
    fs::read_to_string(t.s.s.path(&format!("state/last-{op}.json"))).unwrap_or_default()
}

fn dispatched(t: &H) -> Vec<String> {
    fs::read_to_string(t.s.s.path("dispatch.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn takeover_hook(t: &H, args: &[std::ffi::OsString], agent_args: &[&str]) -> Run {
    Run::from(
        common::quiesce_bin()
            .args(args)
            .args(["--json", "hook", "--mount", t.fs.path()])
            .args(agent_args)
            .output()
            .unwrap(),
    )
}

#[test]
fn qemu_gas_hook_directory_taken_over_with_the_real_agent() {
    require_root!("qemu-ga freezes a scratch filesystem");
    require_qemu_ga!();
    let t = h("takeover-qga");
    let (_, args) = dispatcher_dir(
        &t,
        &[
            ("10-db", 0o700, ""),
            ("20-app", 0o700, ""),
            ("30-off", 0o600, ""),
            ("40-db.bak", 0o700, ""),
            (".hidden", 0o700, ""),
        ],
    );
    let q = |a: &std::ffi::OsStr| format!("'{}'", a.to_string_lossy());
    let mut line = vec![q(env!("CARGO_BIN_EXE_quiesce").as_ref())];
    line.extend(args.iter().map(|a| q(a)));
    line.extend(
        ["hook", "--mount", t.fs.path(), "qemu-ga"]
            .iter()
            .map(|a| q(a.as_ref())),
    );
    let hook = t.s.s.write(
        "fsfreeze-hook",
        format!("#!/bin/sh\nexec {} \"$@\"\n", line.join(" ")),
        0o700,
    );
    let qga = Qga::start(&t, &hook);
    let r = qga.freeze(t.fs.path());
    assert_eq!(r["return"], 1, "{r}; last-pre.json: {}", last(&t, "pre"));
    assert!(t.frozen());
    assert_eq!(dispatched(&t), ["10-db freeze", "20-app freeze"]);
    let r = qga.thaw();
    assert_eq!(r["return"], 1, "{r}; last-post.json: {}", last(&t, "post"));
    assert!(!t.frozen());
    assert_eq!(
        dispatched(&t),
        ["10-db freeze", "20-app freeze", "20-app thaw", "10-db thaw"],
        "thaw in reverse, each script once, the skipped ones never"
    );
    let generated = t.s.s.path("state/takeover/10-db.json");
    let mode = fs::metadata(&generated).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_failing_script_of_a_taken_over_directory_fails_the_freeze_and_rolls_back() {
    require_root!("root-owned scripts");
    let t = h("takeover-fail");
    let (_, args) = dispatcher_dir(
        &t,
        &[
            ("10-db", 0o700, ""),
            ("20-app", 0o700, "[ \"$1\" != freeze ]"),
        ],
    );
    let r = takeover_hook(&t, &args, &["qemu-ga", "freeze"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.json()["applicationSource"]["source"], "takeover");
    assert_eq!(
        dispatched(&t),
        ["10-db freeze", "20-app freeze", "20-app thaw", "10-db thaw"],
        "the stock dispatcher would have exited 0 here"
    );
}

#[test]
fn a_taken_over_script_that_fails_the_trust_checks_runs_nothing() {
    require_root!("root-owned scripts");
    let t = h("takeover-trust");
    // 0755, as the stock directories usually hold them: quiesce's §4
    // checks want 0700; VMware's rules take every regular file.
    let (_, args) = dispatcher_dir(&t, &[("10-db", 0o700, ""), ("20-app", 0o755, "")]);
    let r = takeover_hook(&t, &args, &["vmware", "freeze"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r
        .error_names()
        .contains(&"InsufficientPermissionforPre-Script".to_string()));
    assert!(dispatched(&t).is_empty(), "nothing ran");
}

// ------------------------------------------------------------ VMware Tools

/// vmtoolsd's script operation (open-vm-tools
/// services/plugins/vmbackup/scriptOps.c), step for step: every regular
/// file of the directory, sorted, run as `/bin/sh -c '"PATH" OP ["ARG"]'`
/// (ProcMgr_ExecAsync) with vmtoolsd's environment and working directory
/// `/`; `freeze` in order, stopping at the first non-zero exit; then
/// `freezeFail` (after a failed freeze, from the script before the failed
/// one) or `thaw`, in reverse. Returns the freeze's success and each
/// script's exit codes.
struct Vmtoolsd {
    scripts: Vec<PathBuf>,
    /// The index of the last script the freeze ran (vmtoolsd's
    /// currentScript).
    current: isize,
    arg: Option<String>,
}

impl Vmtoolsd {
    fn new(dir: &Path, arg: Option<&str>) -> Vmtoolsd {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let scripts = names
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        Vmtoolsd {
            scripts,
            current: -1,
            arg: arg.map(str::to_string),
        }
    }

    fn exec(&self, path: &Path, op: &str) -> i32 {
        let cmd = match &self.arg {
            Some(a) => format!("\"{}\" {op} \"{a}\"", path.display()),
            None => format!("\"{}\" {op}", path.display()),
        };
        Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .current_dir("/")
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1)
    }

    /// `freeze`: whether every script succeeded.
    fn freeze(&mut self) -> bool {
        while ((self.current + 1) as usize) < self.scripts.len() {
            self.current += 1;
            if self.exec(&self.scripts[self.current as usize], "freeze") != 0 {
                return false;
            }
        }
        true
    }

    /// `thaw` or `freezeFail`, in reverse from the script before the
    /// current one (after a failed freeze) or the last (after a freeze).
    fn unwind(&mut self, op: &str, after_failure: bool) {
        let mut i = if after_failure {
            self.current - 1
        } else {
            self.current
        };
        while i >= 0 {
            self.exec(&self.scripts[i as usize], op);
            i -= 1;
        }
    }
}

fn vmware_dir(t: &H, failing_after: bool) -> PathBuf {
    let dir = t.s.s.mkdir("backupScripts.d", 0o700);
    let log = t.s.s.path("vmtools.log");
    t.s.s.write(
        "backupScripts.d/10-other",
        format!("#!/bin/sh\necho \"other $1\" >> {}\n", log.display()),
        0o700,
    );
    let hook = wrapper(t, "vm-wrapper", &[], &[], "vmware");
    fs::rename(&hook, dir.join("50-quiesce")).unwrap();
    if failing_after {
        t.s.s.write(
            "backupScripts.d/90-failing",
            format!(
                "#!/bin/sh\necho \"failing $1\" >> {}\n[ \"$1\" != freeze ]\n",
                log.display()
            ),
            0o700,
        );
    }
    dir
}

#[test]
fn vmware_freeze_and_thaw_as_vmtoolsd_runs_them_around_its_sync_driver() {
    require_root!("freezes a scratch filesystem");
    let t = h("vmw-thaw");
    let m = t.fs.path().to_string();
    let marker = t.s.marker.display().to_string();
    script(
        &t.s.pre,
        &format!("touch {m}/pre-wrote\necho pre >> {marker}"),
    );
    script(
        &t.s.post,
        &format!("touch {m}/post-wrote\necho post >> {marker}"),
    );
    let mut vm = Vmtoolsd::new(&vmware_dir(&t, false), Some("host-arg"));
    assert!(vm.freeze(), "every freeze script succeeded");
    assert_eq!(t.ran(), ["pre"]);
    // The sync driver's freeze and thaw (vmtoolsd's own FIFREEZE/FITHAW).
    assert!(Command::new("fsfreeze")
        .args(["-f", &m])
        .status()
        .unwrap()
        .success());
    assert!(t.frozen());
    assert!(Command::new("fsfreeze")
        .args(["-u", &m])
        .status()
        .unwrap()
        .success());
    vm.unwind("thaw", false);
    assert_eq!(t.ran(), ["pre", "post"]);
    assert!(Path::new(&m).join("post-wrote").exists());
    let log = fs::read_to_string(t.s.s.path("vmtools.log")).unwrap();
    assert_eq!(
        log, "other freeze\nother thaw\n",
        "the other scripts ran in vmtoolsd's order"
    );
}

#[test]
fn vmware_freeze_fail_of_a_later_script_rolls_back_and_reports_the_failure() {
    require_root!("root-owned scripts");
    let t = h("vmw-fail");
    let mut vm = Vmtoolsd::new(&vmware_dir(&t, true), None);
    assert!(!vm.freeze(), "the later script failed the quiesce");
    assert_eq!(t.ran(), ["pre"]);
    vm.unwind("freezeFail", true);
    assert_eq!(t.ran(), ["pre", "post"], "freezeFail ran the post-script");
    let log = fs::read_to_string(t.s.s.path("vmtools.log")).unwrap();
    assert_eq!(log, "other freeze\nfailing freeze\nother freezeFail\n");
    assert!(!t.frozen());
    // Its own exit code, as quiesce reports it: the failure.
    let r = t.hook(&[], &["vmware", "FREEZEFAIL"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.error_names().contains(&"FsFreezeFailed".to_string()));
    assert_eq!(t.ran(), ["pre", "post"], "nothing pending: not run again");
}

#[test]
fn vmware_freeze_of_a_failing_pre_script_fails_the_quiesce_and_rolls_back_itself() {
    require_root!("root-owned scripts");
    let t = h("vmw-prefail");
    let marker = t.s.marker.display().to_string();
    script(&t.s.pre, &format!("echo pre >> {marker}\nexit 4"));
    let mut vm = Vmtoolsd::new(&vmware_dir(&t, true), None);
    assert!(!vm.freeze());
    // vmtoolsd runs freezeFail only on the scripts before the failed one:
    // quiesce rolled back within its own freeze call.
    assert_eq!(t.ran(), ["pre", "post"]);
    vm.unwind("freezeFail", true);
    assert_eq!(t.ran(), ["pre", "post"]);
    let log = fs::read_to_string(t.s.s.path("vmtools.log")).unwrap();
    assert_eq!(
        log, "other freeze\nother freezeFail\n",
        "90-failing never ran"
    );
}

#[test]
fn vmware_calls_are_understood_in_any_case() {
    require_root!("root-owned scripts");
    let t = h("vmw-case");
    assert_eq!(t.hook(&[], &["vmware", "Freeze", "arg"]).code, 0);
    assert_eq!(t.hook(&[], &["vmware", "THAW", "arg"]).code, 0);
    assert_eq!(t.ran(), ["pre", "post"]);
}
