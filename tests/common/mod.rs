//! Shared fixtures for the integration tests: root-owned scratch directories
//! (never under world-writable /tmp, whose mode the trust checks refuse),
//! sample configs and scripts, and a runner for the real binary.
#![allow(dead_code)]

pub mod etcd;
pub mod fanotify;
pub mod journald;
pub mod rsyslog;
pub mod scratchfs;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips the calling test, loudly, when not root, saying why it needs root
/// (by default: the trust checks are about uid 0 ownership). CI runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        require_root!("files must be owned by uid 0 and chowned to nobody")
    };
    ($why:expr) => {
        if !common::is_root() {
            eprintln!("SKIPPED: needs root ({}); CI runs as root", $why);
            return;
        }
    };
}

/// The quiesce binary under test, as a command to add arguments to.
pub fn quiesce_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quiesce"))
}

/// A marker unique to this test process and call: processes and files a
/// test made are found by it, never by timing.
pub fn unique_marker(tag: &str) -> String {
    format!(
        "quiesce-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A root-owned 0700 scratch directory under /run, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let base = Path::new("/run/quiesce-tests");
        fs::create_dir_all(base).unwrap();
        fs::set_permissions(base, fs::Permissions::from_mode(0o700)).unwrap();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file with the given mode (root-owned, as the test runs as root).
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn symlink(&self, target: &Path, name: &str) -> PathBuf {
        let p = self.path(name);
        symlink(target, &p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        end_quiesce_processes_of(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The pending post-script records (`pending-post-*.json`) in the state
/// directory `state`; none when it does not exist.
pub fn pending_records(state: &Path) -> Vec<String> {
    fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("pending-post-") && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

/// Ends the quiesce processes this test started that still name `dir` on
/// their command line: the post guard a `pre` leaves armed until its post
/// is due (SPEC §6.6) outlives a test that never runs the `post`.
pub fn end_quiesce_processes_of(dir: &Path) {
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_quiesce")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let proc = Path::new("/proc").join(pid.to_string());
        if fs::read_link(proc.join("exe")).ok().as_deref() != Some(bin.as_path()) {
            continue;
        }
        let cmdline = fs::read(proc.join("cmdline")).unwrap_or_default();
        // `dir` as a whole path component: a test's `…-1` must not end
        // another's `…-13`.
        let names_dir = cmdline.windows(needle.len()).enumerate().any(|(i, w)| {
            w == needle && matches!(cmdline.get(i + needle.len()), None | Some(b'/' | 0))
        });
        if names_dir {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

/// A scratch set-up with a valid config and two scripts that leave a marker
/// when they run (so tests can prove that nothing ran).
pub struct Setup {
    pub s: Scratch,
    pub config: PathBuf,
    pub host_config: PathBuf,
    pub pre: PathBuf,
    pub post: PathBuf,
    pub marker: PathBuf,
}

impl Setup {
    pub fn new(tag: &str) -> Setup {
        let s = Scratch::new(tag);
        let marker = s.path("ran");
        let pre = s.write(
            "scripts/pre.sh",
            format!("#!/bin/sh\necho pre >> {}\n", marker.display()),
            0o700,
        );
        let post = s.write(
            "scripts/post.sh",
            format!("#!/bin/sh\necho post >> {}\n", marker.display()),
            0o700,
        );
        let host_config = s.path("VMSnapshotPluginHost.conf");
        let config = s.path("VMSnapshotScriptPluginConfig.json");
        let setup = Setup {
            s,
            config,
            host_config,
            pre,
            post,
            marker,
        };
        setup.write_config(&setup.default_config());
        setup
    }

    pub fn default_config(&self) -> serde_json::Value {
        serde_json::json!({
            "pluginName": "ScriptRunner",
            "preScriptLocation": self.pre,
            "postScriptLocation": self.post,
            "preScriptParams": ["", ""],
            "postScriptParams": ["", ""],
            "preScriptNoOfRetries": 0,
            "postScriptNoOfRetries": 0,
            "timeoutInSeconds": 30,
            "continueBackupOnFailure": true,
            "fsFreezeEnabled": true
        })
    }

    pub fn write_config(&self, v: &serde_json::Value) {
        self.write_config_text(serde_json::to_string_pretty(v).unwrap());
    }

    pub fn write_config_text(&self, text: impl AsRef<[u8]>) {
        fs::write(&self.config, text).unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Modifies the default config with `f` and writes it.
    pub fn config_with(&self, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
        let mut v = self.default_config();
        f(v.as_object_mut().unwrap());
        self.write_config(&v);
    }

    /// The binary with this set-up's paths: its config, runner state, trail
    /// and results stay inside the scratch directory, and `--trail auto`
    /// picks syslog whatever the host runs (no journal socket there).
    pub fn command(&self) -> Command {
        let mut cmd = quiesce_bin();
        cmd.args(self.global_args());
        cmd
    }

    /// The global options of [`Setup::command`], for a test that runs the
    /// binary through a wrapper (`unshare`, a shell that joins a cgroup).
    pub fn global_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--config".into(),
            self.config.clone().into(),
            "--host-config".into(),
            self.host_config.clone().into(),
        ];
        args.extend(private_args(&self.s.dir));
        args
    }

    /// [`Setup::command`] with the state directory at `state` instead (on
    /// a filesystem of the test's own).
    pub fn command_on_state(&self, state: &Path) -> Command {
        let mut cmd = quiesce_bin();
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--host-config")
            .arg(&self.host_config);
        for pair in private_args(&self.s.dir).chunks(2) {
            if pair[0] != "--state-dir" {
                cmd.args(pair);
            }
        }
        cmd.arg("--state-dir").arg(state);
        cmd
    }

    pub fn quiesce(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().unwrap())
    }

    /// The binary with this set-up's config, plugin-host file and run
    /// directory and a syslog socket that does not exist, then `globals`
    /// (the trail, journal socket, state and metrics options a test names
    /// itself), then `args`.
    pub fn quiesce_with(&self, globals: &[&str], args: &[&str]) -> Run {
        let out = quiesce_bin()
            .arg("--config")
            .arg(&self.config)
            .arg("--host-config")
            .arg(&self.host_config)
            .arg("--run-dir")
            .arg(self.s.path("run"))
            .arg("--syslog-socket")
            .arg(self.s.path("no-syslog.sock"))
            .args(globals)
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    pub fn scripts_ran(&self) -> String {
        fs::read_to_string(&self.marker).unwrap_or_default()
    }

    /// Makes the post-script run `extra` (shell), then append `post
    /// $QUIESCE_RECOVERY` (`post none` for an ordinary run) to the marker.
    pub fn post_logs_recovery(&self, extra: &str) {
        fs::write(
            &self.post,
            format!(
                "#!/bin/sh\n{extra}\necho \"post ${{QUIESCE_RECOVERY:-none}}\" >> {}\n",
                self.marker.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&self.post, fs::Permissions::from_mode(0o700)).unwrap();
    }

    /// The lines of the marker file that start with `prefix`.
    pub fn ran_lines(&self, prefix: &str) -> Vec<String> {
        self.scripts_ran()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

/// The global options that keep a run inside `dir`: its run and state
/// directories there, and trail sockets that do not exist, so `--trail
/// auto` picks syslog and nothing reaches the machine's syslog or journal.
pub fn private_args(dir: &Path) -> Vec<std::ffi::OsString> {
    [
        ("--run-dir", "run"),
        ("--state-dir", "state"),
        ("--syslog-socket", "no-syslog.sock"),
        ("--journal-socket", "no-journal.sock"),
    ]
    .iter()
    .flat_map(|(opt, name)| [(*opt).into(), dir.join(name).into()])
    .collect()
}

/// What a run of the binary showed a user.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The `[name, code]` of every error, in order.
    pub fn error_names(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.json()["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    }
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if cmd.contains(marker) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) until a process with `marker` exists.
pub fn wait_for_marker(marker: &str, timeout: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if !pids_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Kills whatever carries the marker when the test ends, pass or fail, so a
/// failing test does not leak processes into the next one.
pub struct MarkerGuard(pub String);

impl MarkerGuard {
    /// A marker unique to this test: a fractional `sleep` duration.
    pub fn new(tag: u32) -> MarkerGuard {
        MarkerGuard(format!(
            "{}.{}{}",
            3000 + tag,
            std::process::id() % 1000,
            tag
        ))
    }
    pub fn survivors(&self) -> Vec<i32> {
        pids_with(&self.0)
    }
}

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        for pid in pids_with(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Setup {
    /// Runs the binary in the background (for signal tests) with this
    /// set-up's paths.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// A cgroup the test made (cgroup v2), emptied, thawed and removed on drop.
pub struct TestCgroup(pub std::path::PathBuf);

impl TestCgroup {
    pub fn new(tag: &str) -> Option<TestCgroup> {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|r| r.join("cgroup.controllers").exists())?;
        let dir = root.join(format!("quiesce-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(TestCgroup(dir))
    }

    #[allow(dead_code)]
    pub fn frozen(&self) -> bool {
        std::fs::read_to_string(self.0.join("cgroup.events")).is_ok_and(|e| e.contains("frozen 1"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Thaw first (a process blocked on a frozen cgroup cannot die), then
        // end what is left (only this test's processes are in it).
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..100 {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find '{}' -depth -type d -exec rmdir {{}} + 2>/dev/null",
                    self.0.display()
                ))
                .status();
            if !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Waits (bounded) for `cond`, looking every 20 ms; whether it held (it is
/// asked once more at the end).
pub fn wait_until(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Whether `path` is frozen right now: `fsfreeze -f` answers EBUSY on a
/// frozen filesystem. (If it was not frozen, that froze it: thaw it back.)
pub fn is_frozen(path: &str) -> bool {
    let out = Command::new("fsfreeze")
        .args(["-f", path])
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new("fsfreeze").args(["-u", path]).status();
        return false;
    }
    String::from_utf8_lossy(&out.stderr).contains("busy")
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    pid > 0
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
}

/// The `name` of every entry of the array `key` of a status document
/// (`errors`, `applications`); none when it has no such array.
pub fn entry_names(status: &serde_json::Value, key: &str) -> Vec<String> {
    status[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}
