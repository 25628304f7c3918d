//! `quiesce hook gce` through Google's real guest agent (issue 22): Debian
//! 12's `google-guest-agent` (20211116), unpacked with `dpkg-deb -x` by
//! scripts/test.sh into target/google-guest-agent (never installed: it
//! would start services), runs in a private mount and network namespace,
//! chrooted into a root of the test's making, and connects to a stand-in
//! for Google's snapshot service on 127.0.0.1 (tests/helpers/
//! gce_snapshot_service.py: the gRPC `cloud.vmm.SnapshotService` of the
//! agent's own proto, tests/helpers/snapshot_service.proto). The stand-in
//! asks for the pre and the post snapshot as the host does; the agent runs
//! `/etc/google/snapshots/pre.sh` and `post.sh` — there, copies of the
//! packaged wrapper (packaging/hooks/gce) with the test's options on their
//! exec line — and reports back. The test asserts what the service
//! receives (the agent's answer codes) and, while the agent's report is
//! still unanswered, what is frozen and what runs: a pre and post around
//! a held freeze, a failing pre-script, a pre-script that leaves a process
//! behind (and, for contrast, the agent alone with such a script), and the
//! agent's own timeout killing quiesce's `pre` mid-script and between the
//! hold's freeze and its hand-over.
//!
//! What the agent touches stays inside the namespace: its `/etc` is an
//! overlay on a tmpfs (its config, `/etc/default/instance_configs.cfg`,
//! and the scripts' directory exist only there), `/usr` and `/sys` are
//! read-only (it writes `none` into every `/sys/block/*/queue/scheduler`
//! at start, whatever its config says), and the network has only `lo`:
//! the metadata server is unreachable, so it never runs its account,
//! network, clock or OS Login managers (they run only on metadata), and
//! `network_enabled = false` skips the first-boot actions (instance id,
//! host keys, boto.cfg). Each test checks that the machine's files and
//! scheduler settings it could have changed did not change.
//!
//! Needs root, the unpacked agent, Debian's python3 with python3-grpcio
//! and python3-grpc-tools, unshare, chroot, ip and mkfs.ext4: skipped
//! loudly otherwise, failed instead under `QUIESCE_GCE_AGENT_TESTS=1`
//! (scripts/test.sh sets it after installing them). Freezes only a
//! loop-mounted scratch ext4, thawed on every path.

mod common;
use common::{alive, entry_names, is_frozen, wait_until};

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::scratchfs::{self, ScratchFs};
use common::{pids_with, signal, MarkerGuard, Setup};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Debian's python: the one python3-grpcio and python3-grpc-tools are for.
const PYTHON: &str = "/usr/bin/python3";
/// The stand-in's port, inside the test's own network namespace.
const PORT: &str = "8081";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn strict() -> bool {
    std::env::var("QUIESCE_GCE_AGENT_TESTS").as_deref() == Ok("1")
}

/// Where scripts/test.sh unpacks google-guest-agent.
fn agent_root() -> PathBuf {
    std::env::var_os("QUIESCE_GCE_AGENT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/google-guest-agent"))
}

fn agent_bin() -> PathBuf {
    agent_root().join("usr/bin/google_guest_agent")
}

/// What this machine lacks for the test, if anything.
fn missing() -> Option<String> {
    if !agent_bin().is_file() {
        return Some(format!(
            "{} (scripts/test.sh unpacks google-guest-agent there with dpkg-deb -x)",
            agent_bin().display()
        ));
    }
    let grpc = Command::new(PYTHON)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !grpc {
        return Some(format!(
            "{PYTHON} with grpc and grpc_tools (apt-get install python3-grpcio python3-grpc-tools)"
        ));
    }
    for (tool, package) in [
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/sbin/chroot", "coreutils"),
        ("/usr/sbin/ip", "iproute2"),
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} ({package})"));
        }
    }
    if !scratchfs::have_mkfs("ext4") {
        return Some("mkfs.ext4 (e2fsprogs)".into());
    }
    None
}

/// Skips (or, under scripts/test.sh, fails) when something is missing.
fn skip(test: &str) -> bool {
    let Some(what) = missing() else {
        return false;
    };
    assert!(
        !strict(),
        "{test}: needs {what}; QUIESCE_GCE_AGENT_TESTS=1 says scripts/test.sh unpacked it"
    );
    eprintln!("SKIPPED {test}: needs {what}; CI runs it (scripts/test.sh)");
    true
}

macro_rules! require_agent {
    ($test:expr) => {
        require_root!("runs Google's agent in namespaces and freezes a scratch filesystem");
        if skip($test) {
            return;
        }
    };
}

/// The agent's root: a tmpfs with the system's `/usr` (read-only), `/dev`,
/// `/proc`, `/sys` (read-only, its cgroup mounts as they are), an overlay
/// of `/etc` on the tmpfs, the test's directory, its scratch filesystem,
/// the binary under test and the unpacked agent (read-only) at their own
/// paths; the agent's config and scripts' directory in its `/etc`. Then
/// `lo` up, and the rest of the command line chrooted there.
const AGENT_NS: &str = r#"set -e
R="$1"; T="$2"; F="$3"; B="$4"; A="$5"; shift 5
ip link set lo up
mount -t tmpfs -o mode=755 gce-agent-root "$R"
for d in usr dev proc sys; do
    mkdir "$R/$d"
    mount --rbind "/$d" "$R/$d"
done
mount -o remount,bind,ro "$R/usr"
mount -o remount,bind,ro "$R/sys"
mkdir -p "$R/.etc/upper" "$R/.etc/work" "$R/etc"
mount -t overlay gce-agent-etc -o "lowerdir=/etc,upperdir=$R/.etc/upper,workdir=$R/.etc/work" "$R/etc"
for l in bin sbin lib lib64; do ln -s "usr/$l" "$R/$l"; done
mkdir -p "$R/tmp" "$R/var/tmp" "$R/run" "$R/root" "$R/home" "$R$T" "$R$F" "$R$B" "$R$A"
chmod 1777 "$R/tmp" "$R/var/tmp"
mount --bind "$T" "$R$T"
mount --bind "$F" "$R$F"
mount --bind "$B" "$R$B"
mount --bind "$A" "$R$A"
mount -o remount,bind,ro "$R$A"
mkdir -p "$R/etc/default" "$R/etc/google/snapshots"
cp "$T/instance_configs.cfg" "$R/etc/default/instance_configs.cfg"
mount --bind "$T/snapshots" "$R/etc/google/snapshots"
exec chroot "$R" "$@"
"#;

/// The agent's `/etc/default/instance_configs.cfg`: the snapshot listener
/// on the stand-in, everything else it can turn off turned off.
const AGENT_CONFIG: &str = "[Snapshots]
enabled = true
snapshot_service_ip = 127.0.0.1
snapshot_service_port = 8081
timeout_in_seconds = 60

[InstanceSetup]
network_enabled = false
optimize_local_ssd = false
set_multiqueue = false
set_host_keys = false
set_boto_config = false

[Daemons]
accounts_daemon = false
clock_skew_daemon = false
network_daemon = false

[MetadataScripts]
startup = false
shutdown = false
";

/// What the agent could change on the machine if it got out: compared
/// before and after.
fn machine_state() -> Vec<(String, String)> {
    let mut state: Vec<(String, String)> = [
        "/etc/default/instance_configs.cfg",
        "/etc/google",
        "/etc/google_instance_id",
        "/etc/boto.cfg",
        "/etc/sudoers.d/google_sudoers",
    ]
    .iter()
    .map(|p| (p.to_string(), Path::new(p).exists().to_string()))
    .collect();
    // Not the loop devices: other tests attach and detach them meanwhile
    // (and the agent's "none" is their default anyway).
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("loop") {
            continue;
        }
        let p = e.path().join("queue/scheduler");
        state.push((
            p.display().to_string(),
            fs::read_to_string(&p).unwrap_or_default(),
        ));
    }
    state
}

/// The stand-in service and the agent it started, in their namespace.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pid: i32,
    log: PathBuf,
}

/// A response the service received.
#[derive(Debug)]
struct Answer {
    agent_return_code: String,
    scripts_return_code: i64,
    seconds: f64,
}

impl Agent {
    fn next_line(&self, within: Duration) -> Value {
        let line = self.lines.recv_timeout(within).unwrap_or_else(|_| {
            panic!(
                "the stand-in service said nothing in {within:?}; agent log:\n{}",
                self.log()
            )
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service asks for `op` (`pre` or `post`) and waits up to
    /// `within` for the agent's report, which stays unanswered until
    /// [`Agent::ack`].
    fn ask(&mut self, op: &str, id: u32, disks: &str, within: Duration) -> Option<Answer> {
        self.request("", op, id, disks, within)
    }

    /// [`Agent::ask`] without asking again: the response to an earlier
    /// request that had not come in time.
    fn wait_for(&mut self, op: &str, id: u32, within: Duration) -> Option<Answer> {
        self.request("await ", op, id, "-", within)
    }

    fn request(
        &mut self,
        how: &str,
        op: &str,
        id: u32,
        disks: &str,
        within: Duration,
    ) -> Option<Answer> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{how}{op} {id} {disks} {}", within.as_secs()).unwrap();
        stdin.flush().unwrap();
        let v = self.next_line(within + Duration::from_secs(30));
        let r = &v["response"];
        if r.is_null() {
            return None;
        }
        let want = if op == "pre" {
            "PRE_SNAPSHOT"
        } else {
            "POST_SNAPSHOT"
        };
        assert_eq!(r["operation_id"], id, "{v}");
        assert_eq!(r["type"], want, "{v}");
        Some(Answer {
            agent_return_code: r["agent_return_code"].as_str().unwrap().to_string(),
            scripts_return_code: r["scripts_return_code"].as_i64().unwrap(),
            seconds: r["seconds"].as_f64().unwrap(),
        })
    }

    /// The service answers the agent's report.
    fn ack(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "ack").unwrap();
        stdin.flush().unwrap();
    }

    fn stop(&mut self) {
        // EOF: the stand-in ends the agent (by its pid) and itself.
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if alive(self.pid) {
            signal(self.pid, Signal::SIGKILL);
        }
    }
}

/// One test's set-up: the applications (one, of [`Setup`]), a scratch
/// ext4, the scripts' directory with the wrappers, the agent. Dropped:
/// the agent and the stand-in ended, the filesystem thawed, every process
/// of the test's namespace ended (a holder, a hold, a post guard), thawed
/// again, unmounted (its own guard).
struct G {
    agent: Agent,
    fs: ScratchFs,
    s: Setup,
    before: Vec<(String, String)>,
}

impl Drop for G {
    fn drop(&mut self) {
        self.agent.stop();
        self.fs.thaw();
        for pid in pids_with(&self.s.s.dir.display().to_string()) {
            signal(pid, Signal::SIGKILL);
        }
        self.fs.thaw();
        if !std::thread::panicking() {
            assert_eq!(
                machine_state(),
                self.before,
                "the agent changed the machine"
            );
        }
    }
}

/// The packaged wrapper as an operator installs it: copied to `pre.sh`
/// and `post.sh`, the test's options added on its exec line.
fn install_wrappers(s: &Setup, mount: &str, globals: &[&str]) -> PathBuf {
    let dir = s.s.mkdir("snapshots", 0o755);
    let wrapper = fs::read_to_string(repo().join("packaging/hooks/gce")).unwrap();
    let q = |a: &std::ffi::OsStr| format!("'{}'", a.to_string_lossy());
    let mut opts: Vec<String> = s.global_args().iter().map(|a| q(a)).collect();
    opts.extend(globals.iter().map(|a| q(a.as_ref())));
    opts.extend(["hook".into(), "--mount".into(), q(mount.as_ref())]);
    let exec = r#"exec "$bin" hook gce "$call" "$@""#;
    assert_eq!(wrapper.matches(exec).count(), 1, "the wrapper's exec line");
    let copy = wrapper.replace(
        exec,
        &format!(r#"exec "$bin" {} gce "$call" "$@""#, opts.join(" ")),
    );
    for n in ["pre.sh", "post.sh"] {
        s.s.write(&format!("snapshots/{n}"), &copy, 0o755);
    }
    dir
}

fn start(tag: &str) -> G {
    start_with(tag, &Agentish::default())
}

/// What a test changes: the agent's `[Snapshots] timeout_in_seconds`,
/// options on the wrappers' exec line, the agent's environment.
#[derive(Default)]
struct Agentish {
    timeout: Option<u32>,
    globals: Vec<&'static str>,
    env: Vec<&'static str>,
}

fn start_with(tag: &str, how: &Agentish) -> G {
    let before = machine_state();
    let s = Setup::new(tag);
    let fs = ScratchFs::new(&s.s.dir, "fs", "ext4");
    install_wrappers(&s, fs.path(), &how.globals);
    let config = match how.timeout {
        Some(t) => AGENT_CONFIG.replace(
            "timeout_in_seconds = 60",
            &format!("timeout_in_seconds = {t}"),
        ),
        None => AGENT_CONFIG.to_string(),
    };
    s.s.write("instance_configs.cfg", config, 0o644);
    for f in ["gce_snapshot_service.py", "snapshot_service.proto"] {
        fs::copy(repo().join("tests/helpers").join(f), s.s.path(f)).unwrap();
    }
    let root = s.s.mkdir("agent-root", 0o755);
    let log = s.s.path("agent.log");
    let quiesce = Path::new(env!("CARGO_BIN_EXE_quiesce"));
    let mut child = Command::new("/usr/bin/unshare")
        .args(["-m", "-n", "--propagation", "private", "sh", "-c", AGENT_NS])
        .arg("gce-agent-ns")
        .arg(&root)
        .arg(&s.s.dir)
        .arg(&fs.mnt)
        .arg(quiesce.parent().unwrap())
        .arg(agent_root())
        // Inside: the stand-in, which starts the agent.
        .arg(PYTHON)
        .arg(s.s.path("gce_snapshot_service.py"))
        .arg(&s.s.dir)
        .arg(s.s.path("gen"))
        .arg(PORT)
        .arg(&log)
        .args(["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        .arg(format!("QUIESCE_BIN={}", quiesce.display()))
        .arg("GUEST_AGENT_DEBUG=1")
        .args(&how.env)
        .arg(agent_bin())
        .arg("noservice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut agent = Agent {
        child,
        stdin,
        lines,
        pid: 0,
        log,
    };
    // A hang guard: the namespace, protoc and the agent's start.
    let ready = agent.next_line(Duration::from_secs(90));
    agent.pid = ready["agent_pid"].as_i64().unwrap_or(0) as i32;
    let g = G {
        agent,
        fs,
        s,
        before,
    };
    assert_eq!(
        ready["ready"],
        true,
        "the agent did not connect: {ready}; its log:\n{}",
        g.agent.log()
    );
    // The agent's own GuestReady, as its snapshot_listener.go sends it.
    assert_eq!(ready["request_server_info"], false);
    g
}

impl G {
    fn frozen(&self) -> bool {
        is_frozen(self.fs.path())
    }
    fn ran(&self) -> Vec<String> {
        self.s.scripts_ran().lines().map(str::to_string).collect()
    }
    fn hold_pid(&self) -> Option<i32> {
        let v: Value =
            serde_json::from_slice(&fs::read(self.s.s.path("run/hold.json")).ok()?).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }
    fn last(&self, op: &str) -> Value {
        let p = self.s.s.path(&format!("state/last-{op}.json"));
        serde_json::from_slice(&fs::read(&p).unwrap_or_default()).unwrap_or(Value::Null)
    }
    /// Asks, and insists on an answer (with the agent's log when none came).
    fn answer(&mut self, op: &str, id: u32, disks: &str) -> Answer {
        // A hang guard: the agent's own timeout is 60 s.
        self.agent
            .ask(op, id, disks, Duration::from_secs(90))
            .unwrap_or_else(|| {
                panic!(
                    "the agent never answered {op} {id}; its log:\n{}",
                    self.agent.log()
                )
            })
    }
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

// ---------------------------------------------------------------------------

#[test]
fn the_real_agent_reports_pre_with_the_freeze_held_and_post_after_the_thaw() {
    require_agent!("the_real_agent_reports_pre_with_the_freeze_held_and_post_after_the_thaw");
    let mut g = start("gce-agent");
    let m = g.fs.path().to_string();
    let marker = g.s.marker.display().to_string();
    script(
        &g.s.post,
        &format!("touch {m}/post-wrote\necho post >> {marker}"),
    );

    let pre = g.answer("pre", 1, "persistent-disk-0,persistent-disk-1");
    assert_eq!(pre.agent_return_code, "NO_ERROR", "{}", g.agent.log());
    assert_eq!(pre.scripts_return_code, 0);
    // The agent's report is still unanswered: the freeze is held now.
    assert!(g.frozen(), "the agent reported success with nothing frozen");
    assert_eq!(g.ran(), ["pre"], "only the pre-script ran");
    let hold = g.hold_pid().expect("a hold record");
    assert!(alive(hold), "the holding process outlives the agent's call");
    g.agent.ack();
    assert!(g.frozen(), "still frozen after the service's answer");

    let post = g.answer("post", 2, "persistent-disk-0,persistent-disk-1");
    assert_eq!(post.agent_return_code, "NO_ERROR", "{}", g.agent.log());
    assert_eq!(post.scripts_return_code, 0);
    assert!(
        !g.frozen(),
        "post reported with the filesystem still frozen"
    );
    assert_eq!(g.ran(), ["pre", "post"], "the post-script ran once");
    assert!(
        Path::new(&m).join("post-wrote").exists(),
        "the post-script ran after the thaw"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !alive(hold)),
        "the holding process is gone"
    );
    g.agent.ack();
    // The agent's own account of it (its snapshot_listener.go).
    let log = g.agent.log();
    for line in [
        "Snapshot listener enabled",
        "Handling pre snapshot request for operation id 1.",
        "Running guest consistent snapshot script at: /etc/google/snapshots/pre.sh.",
        "Handling post snapshot request for operation id 2.",
        "Running guest consistent snapshot script at: /etc/google/snapshots/post.sh.",
    ] {
        assert!(log.contains(line), "agent log lacks {line:?}:\n{log}");
    }
    // quiesce's own record of the agent's calls.
    let last = g.last("post");
    assert_eq!(last["hook"]["agent"], "gce", "{last}");
    assert_eq!(last["hook"]["args"][0], "post", "{last}");
    assert_eq!(
        last["hook"]["args"][1], "persistent-disk-0,persistent-disk-1",
        "the disk list as the agent passed it"
    );
    assert_eq!(last["hook"]["hold"]["result"], "success", "{last}");
}

#[test]
fn a_failing_pre_script_is_reported_by_the_agent_and_nothing_is_frozen() {
    require_agent!("a_failing_pre_script_is_reported_by_the_agent_and_nothing_is_frozen");
    let mut g = start("gce-agent-fail");
    let marker = g.s.marker.display().to_string();
    script(&g.s.pre, &format!("echo pre >> {marker}\nexit 3"));

    let pre = g.answer("pre", 1, "persistent-disk-0");
    // quiesce's failure exit (2), which the agent reports as the scripts'
    // return code with UNHANDLED_SCRIPT_ERROR.
    assert_eq!(pre.agent_return_code, "UNHANDLED_SCRIPT_ERROR");
    assert_eq!(pre.scripts_return_code, 2);
    assert!(!g.frozen(), "a failed pre left the filesystem frozen");
    assert!(g.hold_pid().is_none(), "no hold");
    assert_eq!(
        g.ran(),
        ["pre", "post"],
        "the post-script ran at once: the rollback"
    );
    g.agent.ack();

    // A post the service sends anyway: NoHeldFreeze (2), reported as a
    // script error, and the post-script is not run twice.
    let post = g.answer("post", 2, "persistent-disk-0");
    assert_eq!(post.agent_return_code, "UNHANDLED_SCRIPT_ERROR");
    assert_eq!(post.scripts_return_code, 2);
    g.agent.ack();
    assert_eq!(g.ran(), ["pre", "post"], "the post-script ran once");
    assert!(!g.frozen());
    assert_eq!(entry_names(&g.last("post"), "errors"), ["NoHeldFreeze"]);
}

#[test]
fn a_pre_script_that_leaves_a_process_behind_is_answered_and_nothing_stays_running() {
    require_agent!(
        "a_pre_script_that_leaves_a_process_behind_is_answered_and_nothing_stays_running"
    );
    let mut g = start("gce-agent-holder");
    // `sleep 100 &`, with the script's stdout and stderr: the agent waits
    // for every holder of its script's output pipe (see the test below).
    let holder = MarkerGuard(format!("100.{}77", std::process::id() % 1000));
    let marker = g.s.marker.display().to_string();
    script(
        &g.s.pre,
        &format!("echo pre >> {marker}\nsleep {} &", holder.0),
    );

    let pre = g.answer("pre", 1, "persistent-disk-0");
    assert_eq!(pre.agent_return_code, "NO_ERROR", "{}", g.agent.log());
    assert_eq!(pre.scripts_return_code, 0);
    // A hang guard with room for a loaded machine: the holder would have
    // kept the agent 100 s.
    assert!(
        pre.seconds < 60.0,
        "the agent answered after {} s",
        pre.seconds
    );
    eprintln!("the agent answered the pre in {} s", pre.seconds);
    assert!(g.frozen());
    assert!(
        !holder.survivors().is_empty(),
        "the pre-script's holder lives until the post"
    );
    g.agent.ack();

    let post = g.answer("post", 2, "persistent-disk-0");
    assert_eq!(post.agent_return_code, "NO_ERROR", "{}", g.agent.log());
    assert!(!g.frozen());
    assert_eq!(g.ran(), ["pre", "post"]);
    g.agent.ack();
    assert!(
        wait_until(Duration::from_secs(10), || holder.survivors().is_empty()),
        "the holder was left running after the post"
    );
    assert!(
        wait_until(Duration::from_secs(10), || g.hold_pid().is_none()),
        "a hold record was left"
    );
}

/// The agent on its own, with a bare `pre.sh` that leaves a process
/// behind: it gives the service no answer while that process lives (Go's
/// `exec.Cmd.Run` waits for every holder of the output pipe), which is
/// what the wrapper saves it from above.
#[test]
fn the_agent_alone_gives_no_answer_while_a_scripts_leftover_holds_its_pipe() {
    require_agent!("the_agent_alone_gives_no_answer_while_a_scripts_leftover_holds_its_pipe");
    let mut g = start("gce-agent-bare");
    let leftover = MarkerGuard(format!("8.{}78", std::process::id() % 1000));
    g.s.s.write(
        "snapshots/pre.sh",
        format!("#!/bin/sh\nsleep {} &\nexit 0\n", leftover.0),
        0o755,
    );
    let none = g.agent.ask("pre", 1, "d", Duration::from_secs(4));
    assert!(
        none.is_none(),
        "the agent answered while the leftover held its pipe: {none:?}"
    );
    assert!(!leftover.survivors().is_empty());
    // It answers once the leftover ends (8 s after it started).
    let late = g
        .agent
        .wait_for("pre", 1, Duration::from_secs(30))
        .expect("the agent answered once the leftover had ended");
    assert_eq!(late.agent_return_code, "NO_ERROR");
    assert!(leftover.survivors().is_empty());
    g.agent.ack();
}

/// Google's agent on its timeout kills its direct child (the wrapper has
/// exec'd quiesce, so quiesce's `pre`) and nothing else: here while the
/// pre-script still runs. The agent reports SCRIPT_TIMED_OUT (124) at its
/// timeout, not held up by anything quiesce started; nothing is frozen;
/// the dead `pre`'s post guard ends the pre-script and runs the
/// post-script at once (`runner-died`).
#[test]
fn the_agents_timeout_kills_pre_mid_script_and_the_guard_runs_the_post_script() {
    require_agent!("the_agents_timeout_kills_pre_mid_script_and_the_guard_runs_the_post_script");
    let mut g = start_with(
        "gce-agent-timeout",
        &Agentish {
            timeout: Some(3),
            ..Agentish::default()
        },
    );
    let slow = MarkerGuard(format!("12.{}79", std::process::id() % 1000));
    let marker = g.s.marker.display().to_string();
    script(&g.s.pre, &format!("echo pre >> {marker}\nsleep {}", slow.0));
    g.s.post_logs_recovery("");

    let pre = g.answer("pre", 1, "persistent-disk-0");
    eprintln!("the agent answered the pre in {} s: {pre:?}", pre.seconds);
    assert_eq!(
        pre.agent_return_code,
        "SCRIPT_TIMED_OUT",
        "{}",
        g.agent.log()
    );
    assert_eq!(pre.scripts_return_code, 124);
    // A hang guard: its timeout is 3 s, and the pre-script would run 12.
    assert!(pre.seconds < 10.0, "answered after {} s", pre.seconds);
    assert!(!g.frozen());
    g.agent.ack();
    assert!(
        wait_until(Duration::from_secs(30), || g.s.ran_lines("post")
            == ["post runner-died"]),
        "the post guard did not run the post-script; ran: {:?}",
        g.ran()
    );
    assert!(
        wait_until(Duration::from_secs(10), || slow.survivors().is_empty()),
        "the killed pre's pre-script was left running"
    );

    // The post the service may still send: the pre never finished, but the
    // recovery of its record left a tombstone, so this post says
    // NoHeldFreeze and does not run the post-script again.
    let post = g.answer("post", 2, "persistent-disk-0");
    assert_eq!(post.agent_return_code, "UNHANDLED_SCRIPT_ERROR");
    assert_eq!(post.scripts_return_code, 2);
    g.agent.ack();
    assert_eq!(entry_names(&g.last("post"), "errors"), ["NoHeldFreeze"]);
    assert_eq!(g.ran(), ["pre", "post runner-died"]);
    assert!(!g.frozen());
}

/// The agent's timeout lands right after the hold froze, before `pre`
/// handed it over (a fault point widens that moment to 3 s, the agent's
/// timeout is 2 s): the hold ends itself, thaw first, and the post guard
/// runs the post-script at `--post-due`; the service's later post runs it
/// no second time.
#[cfg(feature = "fault-injection")]
#[test]
fn the_agents_timeout_between_the_freeze_and_the_hand_over_leaves_nothing_frozen() {
    require_agent!("the_agents_timeout_between_the_freeze_and_the_hand_over_leaves_nothing_frozen");
    let mut g = start_with(
        "gce-agent-handover",
        &Agentish {
            timeout: Some(2),
            globals: vec!["--post-due", "4"],
            env: vec!["QUIESCE_FAULT=hold-handover-delay"],
        },
    );
    g.s.post_logs_recovery("");
    let pre = g.answer("pre", 1, "persistent-disk-0");
    assert_eq!(
        pre.agent_return_code,
        "SCRIPT_TIMED_OUT",
        "{}",
        g.agent.log()
    );
    assert_eq!(pre.scripts_return_code, 124);
    g.agent.ack();
    assert!(
        g.fs.writable_within(Duration::from_secs(20)),
        "the killed pre left the filesystem frozen"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !g
            .s
            .ran_lines("post")
            .is_empty()),
        "the post-script did not run at --post-due"
    );
    assert_eq!(g.ran(), ["pre", "post post-overdue"]);
    let post = g.answer("post", 2, "persistent-disk-0");
    g.agent.ack();
    let last = g.last("post");
    eprintln!(
        "the service's post: {post:?}, errors {:?}, hold {}",
        entry_names(&last, "errors"),
        last["hook"]["hold"]
    );
    assert_eq!(post.agent_return_code, "UNHANDLED_SCRIPT_ERROR");
    assert_eq!(post.scripts_return_code, 2);
    assert_eq!(
        g.ran(),
        ["pre", "post post-overdue"],
        "the post-script ran once"
    );
    assert!(!g.frozen());
}
