//! Real databases (issue 7): the shipped sample scripts of
//! `packaging/examples/postgresql/` and `packaging/examples/mariadb/`, run by
//! `quiesce snapshot` against a live server with a writer load, on a scratch
//! loop-mounted ext4 that holds the data directory (never `/` or the work
//! tree's filesystem; always passed with `--mount`). The snapshot command
//! copies the filesystem image while it is frozen; a second server started
//! on the copy must start, pass its integrity checks (PostgreSQL: amcheck on
//! every B-tree index and the heap; MariaDB: CHECK TABLE on every table) and
//! hold every row the writer saw committed before the freeze. After every
//! run, also a failed post-script and a runner killed with SIGKILL in the
//! freeze window, the live database must accept writes again. Last, both
//! servers on their own filesystems as two applications of one apps
//! directory (SPEC §3.1), quiesced and copied by one `snapshot`.
//!
//! Servers are separate instances (initdb/postgres, mariadb-install-db/
//! mariadbd) on their own sockets; the distro's default services are never
//! used. `scripts/databases.sh` installs the packages; with
//! `QUIESCE_DB_TESTS=1` a missing database fails the test instead of
//! skipping it. Guards thaw before they stop a server or unmount, on every
//! path, panics included.

mod common;

use common::scratchfs::ScratchFs;
use common::{signal, MarkerGuard, Run};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The error names of a status document.
fn error_names(v: &Value) -> Vec<String> {
    common::entry_names(v, "errors")
}

/// Where the scratch directories live. Root-owned 0711, not 0700 like the
/// other tests' scratch: the database servers run as `postgres`/`mysql` and
/// must traverse it to reach their data directory and socket (nothing in it
/// is listable or writable by anyone else).
const BASE: &str = "/run/quiesce-dbtests";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/examples");
const IMAGE_SIZE: &str = "256M";
/// How soon the live database must take a write again after a run.
const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Prerequisites

/// Whether the database tests must run (scripts/test.sh sets it after
/// scripts/databases.sh installed the packages).
fn required() -> bool {
    std::env::var("QUIESCE_DB_TESTS").as_deref() == Ok("1")
}

/// `Some(reason)` when a tool is missing: the test then skips, or fails
/// when [`required`].
fn missing(tools: &[&str]) -> Option<String> {
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            if t.starts_with('/') {
                !Path::new(t).exists()
            } else {
                !Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {t}"))
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            }
        })
        .collect();
    (!absent.is_empty()).then(|| absent.join(", "))
}

macro_rules! require_db {
    ($what:expr, $tools:expr) => {
        require_root!();
        if let Some(m) = missing($tools) {
            if required() {
                panic!(
                    "{} tests need {m}: run scripts/databases.sh (QUIESCE_DB_TESTS=1 is set)",
                    $what
                );
            }
            eprintln!(
                "SKIPPED: {} not installed ({m}); scripts/databases.sh installs it",
                $what
            );
            return;
        }
    };
}

/// The newest PostgreSQL server binaries, `/usr/lib/postgresql/N/bin`.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .map(|(_, b)| b)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/missing/bin"))
}

fn pg_tools() -> Vec<String> {
    let bin = pg_bin();
    vec![
        bin.join("initdb").display().to_string(),
        bin.join("postgres").display().to_string(),
        "psql".into(),
        "setpriv".into(),
        "runuser".into(),
        "mkfs.ext4".into(),
    ]
}

const MARIADB_TOOLS: &[&str] = &[
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "mariadb-check",
    "mkfs.ext4",
];

// ---------------------------------------------------------------------------
// Small helpers

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `argv` under coreutils `timeout`: Ok(stdout) or Err(stderr+stdout).
fn run_bounded(secs: u64, argv: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "2", &secs.to_string()])
        .args(argv)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "exit {:?}: {}{stdout}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_user(p: &Path, user: &str) {
    let u = nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"));
    std::os::unix::fs::chown(p, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
}

fn thaw(mnt: &Path) {
    common::scratchfs::fsfreeze_unfreeze(mnt);
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Complete lines of `path` parsed as ids (a line being written is ignored).
fn ids_in(path: &Path) -> Vec<u64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Guards: scratch directory, loop filesystem, processes

/// A root-owned 0711 scratch directory under [`BASE`], removed on drop
/// (unless something is still mounted in it).
struct Dir {
    path: PathBuf,
}

impl Dir {
    fn new(tag: &str) -> Dir {
        let base = Path::new(BASE);
        fs::create_dir_all(base).unwrap();
        chmod(base, 0o711);
        let path = base.join(format!("{tag}-{}", std::process::id()));
        if path.exists() && mounts_under(&path).is_empty() {
            let _ = fs::remove_dir_all(&path);
        }
        fs::create_dir_all(&path).unwrap();
        chmod(&path, 0o711);
        Dir { path }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A subdirectory with `mode`, owned by `user` when given.
    fn mkdir(&self, name: &str, mode: u32, user: Option<&str>) -> PathBuf {
        let p = self.join(name);
        fs::create_dir_all(&p).unwrap();
        chmod(&p, mode);
        if let Some(u) = user {
            chown_user(&p, u);
        }
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        common::end_quiesce_processes_of(&self.path);
        let left = mounts_under(&self.path);
        if left.is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!(
                "not removing {}: still mounted {left:?}",
                self.path.display()
            );
        }
    }
}

/// A server process: on drop its filesystem is thawed (a process blocked on
/// a frozen filesystem cannot die), then it gets `stop`, then SIGKILL.
struct Server {
    name: String,
    child: Child,
    stop: Signal,
    mnt: PathBuf,
    log: PathBuf,
}

impl Server {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` says the server answers (bounded).
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if ready() {
                return start.elapsed();
            }
            if !self.alive() {
                panic!("{} exited while starting:\n{}", self.name, self.log_text());
            }
            if start.elapsed() > Duration::from_secs(40) {
                panic!("{} not ready after 40 s:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        thaw(&self.mnt);
        if !self.alive() {
            return;
        }
        signal(self.child.id() as i32, self.stop);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}: no clean stop in 20 s, SIGKILL", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shell loop in its own process group that inserts rows with increasing
/// ids, one transaction each, and appends each id to `committed` (on /run,
/// outside the frozen filesystem) once its commit returned.
struct Writer {
    child: Child,
    dir: PathBuf,
}

impl Writer {
    /// `insert` is a shell command with `$i` for the id; runs as `user`.
    fn start(dir: PathBuf, user: Option<&str>, insert: &str) -> Writer {
        let script = format!(
            "i=0\n\
             while [ ! -e '{d}/stop' ]; do\n\
               i=$((i+1))\n\
               if {insert} >/dev/null 2>>'{d}/errors'; then echo $i >> '{d}/committed'; else sleep 0.2; fi\n\
             done\n",
            d = dir.display()
        );
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    &format!("--regid={u}"),
                    "--init-groups",
                    "sh",
                    "-c",
                    &script,
                ]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                c
            }
        };
        let child = cmd
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Writer { child, dir }
    }

    fn committed_file(&self) -> PathBuf {
        self.dir.join("committed")
    }

    fn committed(&self) -> Vec<u64> {
        ids_in(&self.committed_file())
    }

    fn wait_rows(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.committed().len() < n {
            assert!(
                start.elapsed() < timeout,
                "the writer committed {} rows in {timeout:?}, wanted {n}; errors:\n{}",
                self.committed().len(),
                fs::read_to_string(self.dir.join("errors")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until the writer commits again.
    fn progresses(&self, within: Duration) -> Result<Duration, String> {
        let n = self.committed().len();
        let start = Instant::now();
        while start.elapsed() < within {
            if self.committed().len() > n {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "the writer committed nothing in {within:?} (stuck at {n} rows); errors:\n{}",
            fs::read_to_string(self.dir.join("errors")).unwrap_or_default()
        ))
    }

    fn stop(&mut self) {
        let _ = fs::write(self.dir.join("stop"), "");
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("stop"), "");
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// A runner started in the background; SIGKILLed on drop if still running
/// (the watchdog then thaws, and the filesystem guard thaws again).
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// quiesce with the shipped sample scripts

/// The samples of `packaging/examples/<db>/` installed as an operator
/// would: root-owned 0700 directory, scripts 0700, settings and config 0600.
struct Job {
    scripts: PathBuf,
    config: PathBuf,
    env_file: PathBuf,
    sample_env: String,
    dir: PathBuf,
}

impl Job {
    fn install(dir: &Dir, db: &str, env_name: &str, overrides: &str) -> Job {
        let config = dir.join("VMSnapshotScriptPluginConfig.json");
        Job::install_as(dir, "scripts", &config, db, env_name, overrides)
    }

    /// The samples of `db` with their scripts in `dir/<scripts>` and their
    /// config at `config` (in an apps directory, for several applications).
    fn install_as(
        dir: &Dir,
        scripts: &str,
        config_path: &Path,
        db: &str,
        env_name: &str,
        overrides: &str,
    ) -> Job {
        let src = Path::new(EXAMPLES).join(db);
        let scripts = dir.mkdir(scripts, 0o700, None);
        for s in ["pre-script.sh", "post-script.sh"] {
            let to = scripts.join(s);
            fs::copy(src.join(s), &to).unwrap();
            chmod(&to, 0o700);
        }
        let sample_env = fs::read_to_string(src.join(env_name)).unwrap();
        let mut config: Value = serde_json::from_str(
            &fs::read_to_string(src.join("VMSnapshotScriptPluginConfig.json")).unwrap(),
        )
        .unwrap();
        config["preScriptLocation"] = scripts.join("pre-script.sh").display().to_string().into();
        config["postScriptLocation"] = scripts.join("post-script.sh").display().to_string().into();
        let job = Job {
            env_file: scripts.join(env_name),
            config: config_path.to_path_buf(),
            scripts,
            sample_env,
            dir: dir.path.clone(),
        };
        job.write_config(&config);
        job.set_env(overrides);
        job
    }

    /// The sample settings file with this test's values appended (later
    /// assignments win, so the sample itself is sourced as shipped).
    fn set_env(&self, overrides: &str) {
        fs::write(
            &self.env_file,
            format!("{}\n# tests/databases.rs\n{overrides}\n", self.sample_env),
        )
        .unwrap();
        chmod(&self.env_file, 0o600);
    }

    fn write_config(&self, v: &Value) {
        fs::write(&self.config, serde_json::to_string_pretty(v).unwrap()).unwrap();
        chmod(&self.config, 0o600);
    }

    /// Points the post-script location at a script that fails.
    fn failing_post(&self) {
        let p = self.scripts.join("failing-post.sh");
        fs::write(
            &p,
            "#!/bin/sh\necho 'failing-post: simulated post-script failure' >&2\nexit 1\n",
        )
        .unwrap();
        chmod(&p, 0o700);
        let mut v: Value =
            serde_json::from_str(&fs::read_to_string(&self.config).unwrap()).unwrap();
        v["postScriptLocation"] = p.display().to_string().into();
        self.write_config(&v);
    }

    /// Pins both samples by SHA-256 (quiesce then runs them as /dev/fd/N)
    /// and passes the settings file as their first parameter.
    fn pin_with_env_param(&self) {
        let mut v: Value =
            serde_json::from_str(&fs::read_to_string(&self.config).unwrap()).unwrap();
        for (phase, script) in [("pre", "pre-script.sh"), ("post", "post-script.sh")] {
            let out = sh(Command::new("sha256sum").arg(self.scripts.join(script)));
            let sum = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            v[format!("{phase}ScriptSha256")] = sum.into();
            v[format!("{phase}ScriptParams")] =
                serde_json::json!([self.env_file.display().to_string()]);
        }
        self.write_config(&v);
    }

    fn sample_post(&self) {
        let mut v: Value =
            serde_json::from_str(&fs::read_to_string(&self.config).unwrap()).unwrap();
        v["postScriptLocation"] = self
            .scripts
            .join("post-script.sh")
            .display()
            .to_string()
            .into();
        self.write_config(&v);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = runner_command(&self.dir);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let start = Instant::now();
        let run = Run::from(self.command(args).output().unwrap());
        eprintln!(
            "quiesce {} -> exit {} in {:.2} s",
            args.first().unwrap_or(&""),
            run.code,
            start.elapsed().as_secs_f64()
        );
        run
    }

    /// `quiesce snapshot --json --max-freeze 30 --mount MNT -- sh -c CMD`.
    fn snapshot(&self, fs: &ScratchFs, cmd: &str) -> Run {
        self.run(&self.snapshot_args(fs, cmd))
    }

    fn snapshot_args<'a>(&self, fs: &'a ScratchFs, cmd: &'a str) -> Vec<&'a str> {
        vec![
            "snapshot",
            "--json",
            "--max-freeze",
            "30",
            "--mount",
            fs.path(),
            "--",
            "sh",
            "-c",
            cmd,
        ]
    }

    fn spawn_snapshot(&self, fs: &ScratchFs, cmd: &str) -> Spawned {
        Spawned(
            self.command(&self.snapshot_args(fs, cmd))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// quiesce kept inside `dir` ([`common::private_args`]), with no
/// plugin-host file; the caller names the applications.
fn runner_command(dir: &Path) -> Command {
    let mut cmd = common::quiesce_bin();
    cmd.arg("--host-config")
        .arg(dir.join("no-host.conf"))
        .args(common::private_args(dir))
        .current_dir("/");
    cmd
}

fn ctx(run: &Run) -> String {
    format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr)
}

/// The first attempt of a phase. `scripts` holds `pre` and `post`: the
/// document's `phases` (one application), or one of its `applications`.
fn attempt<'a>(scripts: &'a Value, phase: &str) -> &'a Value {
    &scripts[phase]["attempts"][0]
}

fn tail(scripts: &Value, phase: &str, stream: &str) -> String {
    attempt(scripts, phase)[stream]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn holders_terminated(scripts: &Value) -> Vec<i64> {
    scripts["post"]["holdersTerminated"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// Asserts a whole, application-consistent snapshot with both samples run.
fn assert_application(run: &Run, fs: &ScratchFs) -> Value {
    let v = assert_success(run, &[fs]);
    assert_scripts_ran(&v["phases"], &ctx(run));
    v
}

/// Exit 0, an application-consistent success without errors, and the
/// snapshot command ran with exactly `filesystems` frozen.
fn assert_success(run: &Run, filesystems: &[&ScratchFs]) -> Value {
    let c = ctx(run);
    assert_eq!(run.code, 0, "exit code\n{c}");
    let v = run.json();
    assert_eq!(v["result"], "success", "{c}");
    assert_eq!(v["consistency"], "application", "{c}");
    assert_eq!(error_names(&v), Vec::<String>::new(), "{c}");
    assert_window(&v, filesystems, &c);
    v
}

/// Both samples of one application ran to exit 0, sandboxed (runuser, the
/// DB clients and the holder all work under no_new_privs and the seccomp
/// filter).
fn assert_scripts_ran(scripts: &Value, c: &str) {
    for phase in ["pre", "post"] {
        let a = attempt(scripts, phase);
        assert_eq!(a["exitCode"], 0, "{phase}-script\n{c}");
        let sb = &a["sandbox"];
        assert_eq!(sb["noNewPrivs"], true, "{phase} sandbox: {sb}");
        assert_eq!(sb["seccomp"], 2, "{phase} sandbox: {sb}");
    }
}

/// The snapshot command ran with exactly `filesystems` frozen.
fn assert_window(v: &Value, filesystems: &[&ScratchFs], c: &str) {
    assert_eq!(v["phases"]["snapshot"]["exitCode"], 0, "{c}");
    assert_eq!(v["phases"]["snapshot"]["frozen"], true, "{c}");
    let mut frozen: Vec<&str> = v["phases"]["freeze"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["path"].as_str())
        .collect();
    let mut want: Vec<&str> = filesystems.iter().map(|f| f.path()).collect();
    frozen.sort_unstable();
    want.sort_unstable();
    assert_eq!(frozen, want, "{c}");
}

fn report_timings(what: &str, v: &Value) {
    eprintln!(
        "{what}: pre {:.0} ms, freeze window {:.0} ms, snapshot command {:.0} ms, post {:.0} ms",
        attempt(&v["phases"], "pre")["durationMs"]
            .as_f64()
            .unwrap_or(f64::NAN),
        v["phases"]["freeze"]["windowMs"]
            .as_f64()
            .unwrap_or(f64::NAN),
        v["phases"]["snapshot"]["durationMs"]
            .as_f64()
            .unwrap_or(f64::NAN),
        attempt(&v["phases"], "post")["durationMs"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
}

/// Every id the writer had seen committed when the snapshot command
/// started (`at_snapshot`) is in `copy`.
fn assert_all_committed_present(at_snapshot: &[u64], before: &[u64], copy: &[u64]) {
    assert!(
        at_snapshot.len() >= 10,
        "too few rows committed before the snapshot: {at_snapshot:?}"
    );
    let copy: BTreeSet<u64> = copy.iter().copied().collect();
    let at: BTreeSet<u64> = at_snapshot.iter().copied().collect();
    assert!(
        before.iter().all(|id| at.contains(id)),
        "the log read before the run is not a prefix of the one at the snapshot"
    );
    let lost: Vec<u64> = at.difference(&copy).copied().collect();
    assert!(
        lost.is_empty(),
        "{} transaction(s) committed before the freeze are missing from the copy: {:?}…",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        copy.iter().max() >= at.iter().max(),
        "max id in the copy {:?} < last committed before the snapshot {:?}",
        copy.iter().max(),
        at.iter().max()
    );
}

/// Runs quiesce and kills the runner with SIGKILL while the filesystem is
/// frozen (its snapshot command running); returns when the runner died,
/// once the filesystem is writable again.
/// `in_window` runs once the snapshot command runs, before the kill (the
/// post guard's recovery may undo what the pre-script left, right after).
fn kill_runner_in_window(
    job: &Job,
    fs: &ScratchFs,
    dir: &Dir,
    m: &MarkerGuard,
    in_window: &mut dyn FnMut(),
) -> Instant {
    let inwin = dir.join("in-window");
    let _ = fs::remove_file(&inwin);
    let cmd = format!("touch '{}'; exec sleep {}", inwin.display(), m.0);
    let mut runner = job.spawn_snapshot(fs, &cmd);
    wait_until(
        "the snapshot command starts",
        Duration::from_secs(30),
        || inwin.exists(),
    );
    assert!(
        !common::scratchfs::writable_within(&fs.mnt, Duration::from_millis(300)),
        "the filesystem is not frozen while the snapshot command runs"
    );
    in_window();
    signal(runner.0.id() as i32, Signal::SIGKILL);
    let st = runner.0.wait().unwrap();
    let killed = Instant::now();
    eprintln!("runner killed: {st:?}");
    let t = wait_until(
        "the watchdog thaws after the runner's SIGKILL",
        PROMPT,
        || common::scratchfs::writable_within(&fs.mnt, Duration::from_millis(200)),
    );
    eprintln!(
        "filesystem writable {:.0} ms after the runner's death",
        t.as_secs_f64() * 1e3
    );
    killed
}

// ---------------------------------------------------------------------------
// PostgreSQL

struct Pg {
    server: Server,
    sock: PathBuf,
    port: u16,
}

// Sockets only (no TCP): the port just names the socket, distinct per
// server all the same.
const PG_PORT_COPY_TEST: u16 = 55432;
const PG_PORT_COPY: u16 = 55433;
const PG_PORT_FAIL_TEST: u16 = 55434;
const PG_PORT_BOTH_TEST: u16 = 55435;
const PG_PORT_BOTH_COPY: u16 = 55436;

fn as_postgres(argv: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

impl Pg {
    fn initdb(datadir: &Path) {
        fs::create_dir_all(datadir).unwrap();
        chown_user(datadir, "postgres");
        chmod(datadir, 0o700);
        let initdb = pg_bin().join("initdb");
        let argv = as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            datadir.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_bounded(60, &argv).unwrap_or_else(|e| panic!("initdb: {e}"));
    }

    fn start(name: &str, dir: &Dir, mnt: &Path, datadir: &Path, port: u16) -> Pg {
        let sock = dir.mkdir(&format!("{name}-sock"), 0o755, Some("postgres"));
        let log = sock.join("postgres.log");
        let postgres = pg_bin().join("postgres");
        let argv = as_postgres(&[
            postgres.to_str().unwrap(),
            "-D",
            datadir.to_str().unwrap(),
            "-c",
            &format!("port={port}"),
            "-c",
            &format!("unix_socket_directories={}", sock.display()),
            "-c",
            "listen_addresses=",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_wal_size=64MB",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
        ]);
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut pg = Pg {
            server: Server {
                name: format!("postgres ({name})"),
                child,
                stop: Signal::SIGINT,
                mnt: mnt.to_path_buf(),
                log,
            },
            sock,
            port,
        };
        let (s, p) = (pg.sock.clone(), pg.port);
        let t = pg
            .server
            .wait_ready(|| psql_at(&s, p, "SELECT 1", 5).is_ok());
        eprintln!("postgres ({name}) ready in {:.2} s", t.as_secs_f64());
        pg
    }

    fn sql(&self, sql: &str, secs: u64) -> Result<String, String> {
        psql_at(&self.sock, self.port, sql, secs)
    }

    fn must(&self, sql: &str) -> String {
        self.sql(sql, 30)
            .unwrap_or_else(|e| panic!("{sql}: {e}\nserver log:\n{}", self.server.log_text()))
    }

    /// The settings the sample scripts need for this server.
    fn env(&self) -> String {
        format!("PGHOST={}\nPGPORT={}\n", self.sock.display(), self.port)
    }

    /// The writer's insert, for [`Writer::start`].
    fn insert_cmd(&self) -> String {
        format!(
            "psql -X -q -h '{}' -p {} -d postgres -v ON_ERROR_STOP=1 -c \"INSERT INTO t (id) VALUES ($i)\"",
            self.sock.display(),
            self.port
        )
    }

    fn ids(&self) -> Vec<u64> {
        self.must("SELECT id FROM t ORDER BY id")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// An insert of its own, bounded: the live server takes writes again.
    fn writable(&self, id: i64) -> Result<(), String> {
        self.sql(
            &format!("INSERT INTO t (id) VALUES ({id})"),
            PROMPT.as_secs(),
        )
        .map(|_| ())
    }
}

fn psql_at(sock: &Path, port: u16, sql: &str, secs: u64) -> Result<String, String> {
    let sock = sock.display().to_string();
    let port = port.to_string();
    let argv = as_postgres(&[
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &sock,
        "-p",
        &port,
        "-d",
        "postgres",
        "-c",
        sql,
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_bounded(secs, &argv)
}

/// A live PostgreSQL with its data directory on `fs`, and a table.
fn pg_live(dir: &Dir, fs: &ScratchFs, port: u16) -> Pg {
    let data = fs.mnt.join("pgdata");
    Pg::initdb(&data);
    let pg = Pg::start("live", dir, &fs.mnt, &data, port);
    pg.must(
        "CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL DEFAULT repeat('x', 200), \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    pg
}

fn pg_writer(dir: &Dir, pg: &Pg) -> Writer {
    let wdir = dir.mkdir("writer", 0o700, Some("postgres"));
    Writer::start(wdir, Some("postgres"), &pg.insert_cmd())
}

/// The snapshot command of the copy tests: inside the window it notes what
/// the writer had seen committed (`committed-at-snapshot`), runs `also`
/// (e.g. a write that must be blocked), then copies the image
/// (`copy.img`). The command and those two paths.
fn copy_in_window(
    dir: &Dir,
    writer: &Writer,
    fs: &ScratchFs,
    also: Option<&str>,
) -> (String, PathBuf, PathBuf) {
    let copy_img = dir.join("copy.img");
    let at_snapshot = dir.join("committed-at-snapshot");
    let cmd = format!(
        "cp '{log}' '{at}' && {also}; cp --sparse=always '{img}' '{copy}'",
        log = writer.committed_file().display(),
        at = at_snapshot.display(),
        also = also.unwrap_or("true"),
        img = fs.image.display(),
        copy = copy_img.display()
    );
    (cmd, copy_img, at_snapshot)
}

#[test]
fn postgresql_snapshot_copy_starts_and_has_every_committed_row() {
    require_db!(
        "PostgreSQL",
        &pg_tools().iter().map(String::as_str).collect::<Vec<_>>()
    );
    let t0 = Instant::now();
    let dir = Dir::new("pg-copy");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = pg_live(&dir, &live_fs, PG_PORT_COPY_TEST);
    let job = Job::install(&dir, "postgresql", "pg.env", &live.env());
    let mut writer = pg_writer(&dir, &live);
    writer.wait_rows(30, Duration::from_secs(30));

    // The snapshot command notes what the writer had seen committed when the
    // freeze was in place, then copies the image.
    let (cmd, copy_img, at_snapshot) = copy_in_window(&dir, &writer, &live_fs, None);
    let before = writer.committed();
    let run = job.snapshot(&live_fs, &cmd);
    let v = assert_application(&run, &live_fs);
    report_timings("PostgreSQL snapshot", &v);
    assert!(
        tail(&v["phases"], "pre", "stdoutTail").contains("CHECKPOINT done"),
        "pre-script output: {}",
        tail(&v["phases"], "pre", "stdoutTail")
    );
    assert!(
        tail(&v["phases"], "post", "stdoutTail").contains("accepts connections"),
        "post-script output: {}",
        tail(&v["phases"], "post", "stdoutTail")
    );

    // The live database takes writes again at once.
    live.writable(-1)
        .unwrap_or_else(|e| panic!("live database not writable after the run: {e}"));
    let t = writer.progresses(PROMPT).unwrap();
    eprintln!(
        "writer committed again {:.0} ms after the run",
        t.as_secs_f64() * 1e3
    );
    writer.stop();

    let summary = pg_check_copy(&dir, &copy_img, "copy", PG_PORT_COPY, &at_snapshot, &before);
    eprintln!(
        "PostgreSQL copy: {summary}; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A second server on the copy `copy_img` of the live image: it starts,
/// amcheck passes on every B-tree index and the heap of `t`, and every id
/// the writer had seen committed at the snapshot (the ids in `at_snapshot`)
/// is there. Returns what it checked.
fn pg_check_copy(
    dir: &Dir,
    copy_img: &Path,
    name: &str,
    port: u16,
    at_snapshot: &Path,
    before: &[u64],
) -> String {
    let copy_fs = ScratchFs::mount_image(&dir.path, copy_img, name);
    let copy_data = copy_fs.mnt.join("pgdata");
    // The copy carries the live server's lock file naming a pid that is
    // running here (a restored VM would not have it): remove it, as a
    // restore onto the same machine must.
    let _ = fs::remove_file(copy_data.join("postmaster.pid"));
    let copy = Pg::start(name, dir, &copy_fs.mnt, &copy_data, port);
    let recovery: Vec<String> = copy
        .server
        .log_text()
        .lines()
        .filter(|l| l.contains("recovery") || l.contains("redo") || l.contains("interrupted"))
        .map(str::to_string)
        .collect();
    eprintln!("{name} server log:\n{}", recovery.join("\n"));
    assert_eq!(copy.must("SELECT count(*) > 0 FROM t"), "t\n");
    copy.must("CREATE EXTENSION IF NOT EXISTS amcheck");
    // Every B-tree index of the database (catalog and t_pkey), with
    // heapallindexed, and the heap of t.
    let checked = copy.must(
        "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
         WHERE am.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid",
    );
    let checked: u32 = checked.trim().parse().unwrap();
    assert!(checked > 10, "amcheck checked only {checked} indexes");
    assert_eq!(
        copy.must("SELECT count(*) FROM verify_heapam('t')"),
        "0\n",
        "verify_heapam found corruption in t"
    );
    let copy_ids = copy.ids();
    let at = ids_in(at_snapshot);
    assert_all_committed_present(&at, before, &copy_ids);
    format!(
        "{} rows, amcheck on {checked} indexes ok; {} rows committed before the freeze all present",
        copy_ids.len(),
        at.len()
    )
}

#[test]
fn postgresql_live_database_writable_after_failed_post_and_killed_runner() {
    require_db!(
        "PostgreSQL",
        &pg_tools().iter().map(String::as_str).collect::<Vec<_>>()
    );
    let t0 = Instant::now();
    let dir = Dir::new("pg-fail");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = pg_live(&dir, &live_fs, PG_PORT_FAIL_TEST);
    let job = Job::install(&dir, "postgresql", "pg.env", &live.env());
    let writer = pg_writer(&dir, &live);
    writer.wait_rows(10, Duration::from_secs(30));

    // A post-script that fails: the snapshot stands, exit 1.
    job.failing_post();
    let run = job.snapshot(&live_fs, "true");
    let c = ctx(&run);
    assert_eq!(run.code, 1, "exit code\n{c}");
    let v = run.json();
    assert_eq!(error_names(&v), ["Post-ScriptExecutionFailed"], "{c}");
    assert_eq!(v["consistency"], "application", "{c}");
    assert_eq!(attempt(&v["phases"], "pre")["exitCode"], 0, "{c}");
    live.writable(-1)
        .unwrap_or_else(|e| panic!("not writable after a failed post-script: {e}"));
    writer.progresses(PROMPT).unwrap();

    // The runner killed with SIGKILL in the freeze window: the watchdog thaws.
    job.sample_post();
    let m = MarkerGuard::new(91);
    kill_runner_in_window(&job, &live_fs, &dir, &m, &mut || {});
    live.writable(-2)
        .unwrap_or_else(|e| panic!("not writable after the runner's SIGKILL: {e}"));
    writer.progresses(PROMPT).unwrap();
    eprintln!(
        "snapshot command after the runner's SIGKILL: {}",
        if m.survivors().is_empty() {
            "gone"
        } else {
            "still running (killed by the test)"
        }
    );
    // The next run recovers and succeeds.
    let run = job.snapshot(&live_fs, "true");
    assert_application(&run, &live_fs);
    live.writable(-3).unwrap();

    // Pinned scripts run as /dev/fd/N, so $0 no longer leads to pg.env:
    // the samples take its path as their first parameter.
    job.pin_with_env_param();
    let run = job.snapshot(&live_fs, "true");
    let v = assert_application(&run, &live_fs);
    assert!(
        tail(&v["phases"], "pre", "stdoutTail")
            .contains(&format!("CHECKPOINT on {}", live.sock.display())),
        "pinned pre-script did not use the settings given as parameter: {}",
        ctx(&run)
    );
    eprintln!(
        "PostgreSQL failure paths: total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// MariaDB

struct Maria {
    server: Server,
    sock: PathBuf,
}

const MARIADB_OPTS: &[&str] = &[
    "--innodb-log-file-size=16M",
    "--innodb-buffer-pool-size=32M",
];

impl Maria {
    fn install(datadir: &Path) {
        fs::create_dir_all(datadir).unwrap();
        chown_user(datadir, "mysql");
        chmod(datadir, 0o700);
        let dd = format!("--datadir={}", datadir.display());
        // A private tmpdir: two servers are installed in parallel, and a
        // shared /tmp has been seen to lose an install's temp table.
        let tmp = datadir.with_file_name("mysql-install-tmp");
        fs::create_dir_all(&tmp).unwrap();
        chown_user(&tmp, "mysql");
        chmod(&tmp, 0o700);
        let td = format!("--tmpdir={}", tmp.display());
        let mut argv = vec![
            "mariadb-install-db",
            "--no-defaults",
            "--user=mysql",
            &dd,
            &td,
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ];
        argv.extend(MARIADB_OPTS);
        run_bounded(90, &argv).unwrap_or_else(|e| panic!("mariadb-install-db: {e}"));
        let _ = fs::remove_dir_all(&tmp);
    }

    fn start(name: &str, dir: &Dir, mnt: &Path, datadir: &Path) -> Maria {
        let rundir = dir.mkdir(&format!("{name}-mysqld"), 0o755, Some("mysql"));
        let sock = rundir.join("mysqld.sock");
        let log = rundir.join("error.log");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", datadir.display()))
            // Its own tmpdir, on /run (never on a filesystem it freezes).
            .arg(format!("--tmpdir={}", rundir.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg("--skip-networking")
            .arg(format!(
                "--pid-file={}",
                rundir.join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .args(MARIADB_OPTS)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut m = Maria {
            server: Server {
                name: format!("mariadbd ({name})"),
                child,
                stop: Signal::SIGTERM,
                mnt: mnt.to_path_buf(),
                log,
            },
            sock,
        };
        let s = m.sock.clone();
        let t = m
            .server
            .wait_ready(|| mariadb_at(&s, "SELECT 1", 5).is_ok());
        eprintln!("mariadbd ({name}) ready in {:.2} s", t.as_secs_f64());
        m
    }

    fn sql(&self, sql: &str, secs: u64) -> Result<String, String> {
        mariadb_at(&self.sock, sql, secs)
    }

    fn must(&self, sql: &str) -> String {
        self.sql(sql, 30)
            .unwrap_or_else(|e| panic!("{sql}: {e}\nserver log:\n{}", self.server.log_text()))
    }

    fn env(&self, state: &Path) -> String {
        format!(
            "MARIADB_SOCKET={}\nMARIADB_STATE_DIR={}\n",
            self.sock.display(),
            state.display()
        )
    }

    fn insert_cmd(&self) -> String {
        format!(
            "mariadb --no-defaults --user=root --socket='{}' -e \"INSERT INTO qt.t (id) VALUES ($i)\"",
            self.sock.display()
        )
    }

    /// A shell command that tries to insert id 0, giving up after 1 s of
    /// lock wait, and writes its output and exit code to `to`.
    fn try_write_cmd(&self, to: &Path) -> String {
        format!(
            "{{ timeout 10 mariadb --no-defaults --user=root --socket='{sock}' \
               -e 'SET SESSION lock_wait_timeout = 1; INSERT INTO qt.t (id) VALUES (0)'; echo \"rc=$?\"; }} > '{to}' 2>&1",
            sock = self.sock.display(),
            to = to.display()
        )
    }

    fn ids(&self) -> Vec<u64> {
        self.must("SELECT id FROM qt.t ORDER BY id")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// An insert that gives up after 1 s of lock wait: Err when a read lock
    /// (or anything else) blocks writes.
    fn writable(&self, id: i64) -> Result<(), String> {
        self.sql(
            &format!("SET SESSION lock_wait_timeout = 1; INSERT INTO qt.t (id) VALUES ({id})"),
            PROMPT.as_secs(),
        )
        .map(|_| ())
    }
}

fn mariadb_at(sock: &Path, sql: &str, secs: u64) -> Result<String, String> {
    let s = format!("--socket={}", sock.display());
    run_bounded(
        secs,
        &[
            "mariadb",
            "--no-defaults",
            "--user=root",
            &s,
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ],
    )
}

/// A live MariaDB with its data directory on `fs`, and a table.
fn maria_live(dir: &Dir, fs: &ScratchFs) -> Maria {
    let data = fs.mnt.join("mysql");
    Maria::install(&data);
    let m = Maria::start("live", dir, &fs.mnt, &data);
    m.must(
        "CREATE DATABASE qt; CREATE TABLE qt.t (id BIGINT PRIMARY KEY, \
         payload VARCHAR(255) NOT NULL DEFAULT REPEAT('x', 200), \
         at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
    );
    m
}

/// The write of [`Maria::try_write_cmd`] (in the window) waited on the read
/// lock and gave up.
fn assert_write_blocked(during: &Path) {
    let during = fs::read_to_string(during).unwrap();
    assert!(
        during.contains("Lock wait timeout") && !during.contains("rc=0"),
        "a write in the window was not blocked by the read lock: {during}"
    );
}

/// The holder's pid, from the pre-script's own report.
fn holder_pid(scripts: &Value) -> i64 {
    let out = tail(scripts, "pre", "stdoutTail");
    out.split("holder pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no holder pid in the pre-script output: {out}"))
}

fn pid_alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

#[test]
fn mariadb_snapshot_copy_starts_and_has_every_committed_row() {
    require_db!("MariaDB", MARIADB_TOOLS);
    let t0 = Instant::now();
    let dir = Dir::new("maria-copy");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = maria_live(&dir, &live_fs);
    let state = dir.join("holder-state");
    let job = Job::install(&dir, "mariadb", "mariadb.env", &live.env(&state));
    let mut writer = Writer::start(dir.mkdir("writer", 0o700, None), None, &live.insert_cmd());
    writer.wait_rows(30, Duration::from_secs(30));

    // In the window: note what was committed, prove that the read lock
    // blocks a write (it gives up after 1 s), then copy the image.
    let during = dir.join("write-during-window");
    let try_write = live.try_write_cmd(&during);
    let (cmd, copy_img, at_snapshot) = copy_in_window(&dir, &writer, &live_fs, Some(&try_write));
    let before = writer.committed();
    let run = job.snapshot(&live_fs, &cmd);
    let v = assert_application(&run, &live_fs);
    report_timings("MariaDB snapshot", &v);
    let pre_out = tail(&v["phases"], "pre", "stdoutTail");
    assert!(
        pre_out.contains("FLUSH TABLES WITH READ LOCK held"),
        "pre-script output: {pre_out}"
    );
    assert_write_blocked(&during);
    // The holder: recorded after the pre-script, alive through the window,
    // released by the post-script, terminated by quiesce after it.
    let holder = holder_pid(&v["phases"]);
    assert!(
        attempt(&v["phases"], "pre")["leftRunningPids"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p.as_i64() == Some(holder))),
        "holder {holder} not among the pre-script's leftovers\n{}",
        ctx(&run)
    );
    let post_out = tail(&v["phases"], "post", "stdoutTail");
    assert!(
        post_out.contains("UNLOCK TABLES done") && post_out.contains("accepts writes"),
        "post-script output: {post_out}"
    );
    assert!(
        holders_terminated(&v["phases"]).contains(&holder),
        "holdersTerminated {:?} lacks the holder {holder}\n{}",
        holders_terminated(&v["phases"]),
        ctx(&run)
    );
    assert!(!pid_alive(holder), "holder {holder} still running");

    live.writable(-1)
        .unwrap_or_else(|e| panic!("live database not writable after the run: {e}"));
    let t = writer.progresses(PROMPT).unwrap();
    eprintln!(
        "writer committed again {:.0} ms after the run",
        t.as_secs_f64() * 1e3
    );
    writer.stop();

    let summary = maria_check_copy(&dir, &copy_img, "copy", &at_snapshot, &before);
    eprintln!(
        "MariaDB copy: {summary}; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A second server on the copy `copy_img` of the live image: it starts,
/// CHECK TABLE passes on every table, the write the snapshot command tried
/// in the window (id 0) is not there, and every id the writer had seen
/// committed at the snapshot (the ids in `at_snapshot`) is. Returns what it
/// checked.
fn maria_check_copy(
    dir: &Dir,
    copy_img: &Path,
    name: &str,
    at_snapshot: &Path,
    before: &[u64],
) -> String {
    let copy_fs = ScratchFs::mount_image(&dir.path, copy_img, name);
    let copy_data = copy_fs.mnt.join("mysql");
    let copy = Maria::start(name, dir, &copy_fs.mnt, &copy_data);
    let recovery: Vec<String> = copy
        .server
        .log_text()
        .lines()
        .filter(|l| l.contains("recovery") || l.contains("crash") || l.contains("[ERROR]"))
        .map(str::to_string)
        .collect();
    eprintln!("{name} server log:\n{}", recovery.join("\n"));
    let check = run_bounded(
        60,
        &[
            "mariadb-check",
            "--no-defaults",
            "--user=root",
            &format!("--socket={}", copy.sock.display()),
            "--all-databases",
            "--check",
            "--extended",
        ],
    )
    .unwrap_or_else(|e| panic!("mariadb-check: {e}"));
    let tables: Vec<&str> = check.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        tables.iter().any(|l| l.starts_with("qt.t ")),
        "qt.t not checked: {check}"
    );
    let bad: Vec<&&str> = tables
        .iter()
        .filter(|l| !l.trim_end().ends_with("OK"))
        .collect();
    assert!(bad.is_empty(), "CHECK TABLE on the copy: {bad:?}\n{check}");
    let ct = copy.must("CHECK TABLE qt.t EXTENDED");
    assert!(
        ct.trim_end().ends_with("status\tOK"),
        "CHECK TABLE qt.t: {ct}"
    );
    let copy_ids = copy.ids();
    assert!(
        !copy_ids.contains(&0),
        "the write blocked in the window is in the copy"
    );
    let at = ids_in(at_snapshot);
    assert_all_committed_present(&at, before, &copy_ids);
    format!(
        "{} rows, CHECK TABLE ok on {} tables; {} rows committed before the lock all present",
        copy_ids.len(),
        tables.len(),
        at.len()
    )
}

#[test]
fn mariadb_live_database_writable_after_failed_post_and_killed_runner() {
    require_db!("MariaDB", MARIADB_TOOLS);
    let t0 = Instant::now();
    let dir = Dir::new("maria-fail");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = maria_live(&dir, &live_fs);
    let state = dir.join("holder-state");
    let job = Job::install(&dir, "mariadb", "mariadb.env", &live.env(&state));
    let writer = Writer::start(dir.mkdir("writer", 0o700, None), None, &live.insert_cmd());
    writer.wait_rows(10, Duration::from_secs(30));

    // 0. The pre-script cannot get the lock (a long write statement is
    // running, and FLUSH TABLES WITH READ LOCK waits for it): it gives up after
    // MARIADB_LOCK_WAIT_TIMEOUT and leaves nothing locked; quiesce goes on
    // with a filesystem-consistent snapshot and runs the post-script.
    job.set_env(&format!(
        "{}MARIADB_LOCK_WAIT_TIMEOUT=2\n",
        live.env(&state)
    ));
    let mut long_query = Command::new("mariadb")
        .args(["--no-defaults", "--user=root"])
        .arg(format!("--socket={}", live.sock.display()))
        .args(["-e", "SET STATEMENT max_statement_time = 20 FOR INSERT INTO qt.t (id) SELECT -100 FROM (SELECT SLEEP(20)) AS s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the long query runs", Duration::from_secs(10), || {
        live.must("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SELECT SLEEP(20)%' AND ID <> CONNECTION_ID()")
            .trim()
            == "1"
    });
    let run = job.snapshot(&live_fs, "true");
    let c = ctx(&run);
    assert_eq!(run.code, 1, "exit code\n{c}");
    let v = run.json();
    assert_eq!(error_names(&v), ["Pre-ScriptExecutionFailed"], "{c}");
    assert_eq!(v["consistency"], "filesystem", "{c}");
    assert!(
        tail(&v["phases"], "pre", "stderrTail")
            .contains("could not take FLUSH TABLES WITH READ LOCK"),
        "pre-script stderr: {c}"
    );
    assert_eq!(attempt(&v["phases"], "post")["exitCode"], 0, "{c}");
    assert!(
        tail(&v["phases"], "post", "stdoutTail").contains("nothing to release"),
        "post-script output: {c}"
    );
    let t = wait_until("writes after a failed pre-script", PROMPT, || {
        live.writable(-10).is_ok()
    });
    eprintln!(
        "0. pre-script could not lock (long query): gave up after {:.1} s, writable {:.0} ms after the run, with the long query still running",
        attempt(&v["phases"], "pre")["durationMs"].as_f64().unwrap_or(f64::NAN) / 1e3,
        t.as_secs_f64() * 1e3
    );
    assert!(
        matches!(long_query.try_wait(), Ok(None)),
        "the long query ended early"
    );
    let id = live.must(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SELECT SLEEP(20)%' AND ID <> CONNECTION_ID()",
    );
    live.must(&format!("KILL QUERY {}", id.trim()));
    let _ = long_query.wait();
    job.set_env(&live.env(&state));
    writer.progresses(PROMPT).unwrap();

    // 1. A post-script that fails (it never releases the lock): quiesce
    // terminates the holder after the post phase, which ends its session
    // and so the lock.
    job.failing_post();
    let run = job.snapshot(&live_fs, "true");
    let c = ctx(&run);
    assert_eq!(run.code, 1, "exit code\n{c}");
    let v = run.json();
    assert_eq!(error_names(&v), ["Post-ScriptExecutionFailed"], "{c}");
    assert_eq!(v["consistency"], "application", "{c}");
    let holder = holder_pid(&v["phases"]);
    assert!(
        holders_terminated(&v["phases"]).contains(&holder),
        "holdersTerminated {:?} lacks the holder {holder}\n{c}",
        holders_terminated(&v["phases"])
    );
    let t = wait_until("writes after a failed post-script", PROMPT, || {
        live.writable(-1).is_ok()
    });
    eprintln!(
        "1. failed post-script: writable {:.0} ms after the run",
        t.as_secs_f64() * 1e3
    );
    writer.progresses(PROMPT).unwrap();

    // 2. The runner killed with SIGKILL in the window: the watchdog thaws,
    // and the post guard runs the pending post-script (SPEC §6.6): the read
    // lock is released and the holder ended within seconds, without anyone
    // acting. (Before the post-script guarantee, the lock stayed until the
    // next post phase or the server's MARIADB_MAX_HOLD timeout.)
    job.sample_post();
    let m = MarkerGuard::new(92);
    let mut holder = 0;
    let killed = kill_runner_in_window(&job, &live_fs, &dir, &m, &mut || {
        holder = fs::read_to_string(state.join("holder.pid"))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap();
    });
    wait_until(
        "writes after the runner's SIGKILL, with no one acting",
        Duration::from_secs(20),
        || live.writable(-2).is_ok(),
    );
    eprintln!(
        "2. runner SIGKILL: writable {:.1} s after the kill, the post-script run by the guard",
        killed.elapsed().as_secs_f64()
    );
    wait_until("the guard's recovery ends the holder", PROMPT, || {
        !pid_alive(holder)
    });
    writer.progresses(PROMPT).unwrap();
    // Nothing is left pending: a later `quiesce post` finds no holder.
    let run = job.run(&["post", "--json"]);
    let c = ctx(&run);
    assert_eq!(run.code, 0, "quiesce post after the recovery\n{c}");
    assert!(
        !holders_terminated(&run.json()["phases"]).contains(&holder),
        "the holder {holder} was still recorded after the recovery\n{c}"
    );
    drop(m);

    // The next whole run works, and leaves nothing locked.
    job.set_env(&live.env(&state));
    let run = job.snapshot(&live_fs, "true");
    let v = assert_application(&run, &live_fs);
    assert!(
        !holders_terminated(&v["phases"]).is_empty(),
        "{}",
        ctx(&run)
    );
    live.writable(-4).unwrap();
    eprintln!(
        "MariaDB failure paths: total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Both, as two applications of one job (SPEC §3.1)

/// PostgreSQL and MariaDB on their own filesystems, each its own application
/// of one apps directory (`10-postgresql.json`, `20-mariadb.json`, the
/// shipped samples), quiesced by one `snapshot` that freezes both
/// filesystems: the pre-scripts run in that order, the post-scripts in
/// reverse, each with its own settings; both copies start, pass their
/// checks and hold every row committed before the freeze, and both live
/// servers take writes after the run.
#[test]
fn postgresql_and_mariadb_quiesced_together_in_one_snapshot() {
    let mut tools = pg_tools();
    tools.extend(MARIADB_TOOLS.iter().map(|t| t.to_string()));
    require_db!(
        "PostgreSQL and MariaDB",
        &tools.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let t0 = Instant::now();
    let dir = Dir::new("both");
    let pg_fs = ScratchFs::with_size(&dir.path, "pg", "ext4", IMAGE_SIZE);
    let maria_fs = ScratchFs::with_size(&dir.path, "maria", "ext4", IMAGE_SIZE);
    let pg = pg_live(&dir, &pg_fs, PG_PORT_BOTH_TEST);
    let maria = maria_live(&dir, &maria_fs);

    let state = dir.join("holder-state");
    let apps = install_both(&dir, &pg, &maria, &state);
    let mut pg_writer = pg_writer(&dir, &pg);
    let mut maria_writer = Writer::start(
        dir.mkdir("maria-writer", 0o700, None),
        None,
        &maria.insert_cmd(),
    );
    pg_writer.wait_rows(30, Duration::from_secs(30));
    maria_writer.wait_rows(30, Duration::from_secs(30));

    // In the window: note what both writers had seen committed, try a
    // MariaDB write (the read lock blocks it), copy both images.
    let (pg_copy, maria_copy) = (dir.join("pg-copy.img"), dir.join("maria-copy.img"));
    let (pg_at, maria_at) = (dir.join("pg-at-snapshot"), dir.join("maria-at-snapshot"));
    let during = dir.join("write-during-window");
    let cmd = format!(
        "cp '{pg_log}' '{pg_at}' && cp '{maria_log}' '{maria_at}' && {try_write}; \
         cp --sparse=always '{pg_img}' '{pg_copy}' && cp --sparse=always '{maria_img}' '{maria_copy}'",
        pg_log = pg_writer.committed_file().display(),
        pg_at = pg_at.display(),
        maria_log = maria_writer.committed_file().display(),
        maria_at = maria_at.display(),
        try_write = maria.try_write_cmd(&during),
        pg_img = pg_fs.image.display(),
        pg_copy = pg_copy.display(),
        maria_img = maria_fs.image.display(),
        maria_copy = maria_copy.display(),
    );
    let (pg_before, maria_before) = (pg_writer.committed(), maria_writer.committed());
    let run = snapshot_both(&dir, &apps, &[&pg_fs, &maria_fs], &cmd);
    let v = assert_two_applications(&run, &[&pg_fs, &maria_fs]);
    let c = ctx(&run);
    let (pg_app, maria_app) = (&v["applications"][0], &v["applications"][1]);
    assert_write_blocked(&during);
    // MariaDB's holder is ended after MariaDB's own post-script; PostgreSQL
    // left nothing running.
    let holder = holder_pid(maria_app);
    assert!(
        holders_terminated(maria_app).contains(&holder),
        "MariaDB holdersTerminated {:?} lacks the holder {holder}\n{c}",
        holders_terminated(maria_app)
    );
    assert!(holders_terminated(pg_app).is_empty(), "{c}");
    assert!(!pid_alive(holder), "holder {holder} still running");
    report_app_timings(&v);

    // Both live servers take writes again at once.
    pg.writable(-1)
        .unwrap_or_else(|e| panic!("live PostgreSQL not writable after the run: {e}"));
    maria
        .writable(-1)
        .unwrap_or_else(|e| panic!("live MariaDB not writable after the run: {e}"));
    pg_writer.progresses(PROMPT).unwrap();
    maria_writer.progresses(PROMPT).unwrap();
    pg_writer.stop();
    maria_writer.stop();

    let pg_summary = pg_check_copy(
        &dir,
        &pg_copy,
        "pg-copy",
        PG_PORT_BOTH_COPY,
        &pg_at,
        &pg_before,
    );
    let maria_summary = maria_check_copy(&dir, &maria_copy, "maria-copy", &maria_at, &maria_before);
    eprintln!(
        "PostgreSQL copy: {pg_summary}\nMariaDB copy: {maria_summary}\ntotal {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Asserts a whole, application-consistent snapshot of the two applications
/// PostgreSQL then MariaDB (from the apps directory), each with both samples
/// run, and `filesystems` frozen for the snapshot command.
fn assert_two_applications(run: &Run, filesystems: &[&ScratchFs]) -> Value {
    let v = assert_success(run, filesystems);
    let c = ctx(run);
    assert_eq!(v["applicationSource"]["source"], "apps-dir", "{c}");
    // Several applications: their phases are in `applications`, in order.
    assert!(
        v["phases"]["pre"].is_null() && v["phases"]["post"].is_null(),
        "{c}"
    );
    let names: Vec<&str> = v["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["PostgreSQL", "MariaDB"], "{c}");
    let (pg_app, maria_app) = (&v["applications"][0], &v["applications"][1]);
    for app in [pg_app, maria_app] {
        assert_scripts_ran(app, &c);
        assert_eq!(app["errors"], serde_json::json!([]), "{c}");
    }
    for (app, phase, want) in [
        (pg_app, "pre", "CHECKPOINT done"),
        (maria_app, "pre", "FLUSH TABLES WITH READ LOCK held"),
        (maria_app, "post", "UNLOCK TABLES done"),
        (pg_app, "post", "accepts connections"),
    ] {
        let out = tail(app, phase, "stdoutTail");
        assert!(
            out.contains(want),
            "{} {phase}-script output: {out}",
            app["name"]
        );
    }
    v
}

/// Each application's script phases, in the order they ran, and the window.
fn report_app_timings(v: &Value) {
    let (pg_app, maria_app) = (&v["applications"][0], &v["applications"][1]);
    eprintln!(
        "two applications: pre PostgreSQL {:.0} ms, pre MariaDB {:.0} ms, freeze window {:.0} ms, post MariaDB {:.0} ms, post PostgreSQL {:.0} ms",
        attempt(pg_app, "pre")["durationMs"].as_f64().unwrap_or(f64::NAN),
        attempt(maria_app, "pre")["durationMs"].as_f64().unwrap_or(f64::NAN),
        v["phases"]["freeze"]["windowMs"].as_f64().unwrap_or(f64::NAN),
        attempt(maria_app, "post")["durationMs"].as_f64().unwrap_or(f64::NAN),
        attempt(pg_app, "post")["durationMs"].as_f64().unwrap_or(f64::NAN),
    );
}

/// The operator's apps directory for both: root-owned 0755, one config per
/// application (`10-postgresql.json`, `20-mariadb.json`), each naming its
/// own scripts and settings.
fn install_both(dir: &Dir, pg: &Pg, maria: &Maria, state: &Path) -> PathBuf {
    let apps = dir.mkdir("apps.d", 0o755, None);
    Job::install_as(
        dir,
        "pg-scripts",
        &apps.join("10-postgresql.json"),
        "postgresql",
        "pg.env",
        &pg.env(),
    );
    Job::install_as(
        dir,
        "maria-scripts",
        &apps.join("20-mariadb.json"),
        "mariadb",
        "mariadb.env",
        &maria.env(state),
    );
    apps
}

/// `quiesce --apps-dir APPS snapshot` freezing `filesystems` around
/// `sh -c CMD`.
fn snapshot_both(dir: &Dir, apps: &Path, filesystems: &[&ScratchFs], cmd: &str) -> Run {
    let start = Instant::now();
    let mut quiesce = runner_command(&dir.path);
    quiesce
        .arg("--apps-dir")
        .arg(apps)
        .args(["snapshot", "--json", "--max-freeze", "30"]);
    for fs in filesystems {
        quiesce.arg("--mount").arg(fs.path());
    }
    let run = Run::from(quiesce.args(["--", "sh", "-c", cmd]).output().unwrap());
    eprintln!(
        "quiesce snapshot (two applications) -> exit {} in {:.2} s",
        run.code,
        start.elapsed().as_secs_f64()
    );
    run
}

// ---------------------------------------------------------------------------
// Built-in workloads (issue 23, SPEC §3.2): no scripts, quiesce's own method

/// A workload application's config in `dir` (root, 0600).
fn workload_config(dir: &Dir, name: &str, body: Value) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, serde_json::to_string_pretty(&body).unwrap()).unwrap();
    chmod(&path, 0o600);
    path
}

/// `quiesce --config CONFIG ARGS…` kept inside `dir`.
fn run_with(dir: &Dir, config: &Path, args: &[&str]) -> Run {
    let start = Instant::now();
    let run = Run::from(
        runner_command(&dir.path)
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap(),
    );
    eprintln!(
        "quiesce {} -> exit {} in {:.2} s",
        args.first().unwrap_or(&""),
        run.code,
        start.elapsed().as_secs_f64()
    );
    run
}

fn snapshot_args<'a>(mounts: &[&'a ScratchFs], cmd: &'a str) -> Vec<&'a str> {
    let mut v = vec!["snapshot", "--json", "--max-freeze", "30"];
    for m in mounts {
        v.extend(["--mount", m.path()]);
    }
    v.extend(["--", "sh", "-c", cmd]);
    v
}

/// The pids of the workload's helper processes still running for `dir`.
fn helpers_of(dir: &Dir) -> Vec<i32> {
    let needle = format!("{}", dir.path.display());
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("__workload") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn mariadb_workload_with_myisam_holds_backup_stage_and_releases_it_on_its_session() {
    require_db!("MariaDB", MARIADB_TOOLS);
    let dir = Dir::new("wl-maria");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = maria_live(&dir, &live_fs);
    live.must(
        "CREATE TABLE qt.m (id BIGINT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO qt.m VALUES (1)",
    );
    let config = workload_config(
        &dir,
        "db.json",
        serde_json::json!({
            "workload": "mariadb",
            "connection": {"socket": live.sock.display().to_string(), "user": "root"},
            "timeoutInSeconds": 30,
        }),
    );
    let mut writer = Writer::start(dir.mkdir("writer", 0o700, None), None, &live.insert_cmd());
    writer.wait_rows(30, Duration::from_secs(30));
    let during = dir.join("write-during-window");
    let try_write = live
        .try_write_cmd(&during)
        .replace("timeout 10", "timeout 3");
    let (cmd, copy_img, at_snapshot) = copy_in_window(&dir, &writer, &live_fs, Some(&try_write));
    let before = writer.committed();
    let run = run_with(&dir, &config, &snapshot_args(&[&live_fs], &cmd));
    let v = assert_success(&run, &[&live_fs]);
    assert_scripts_ran(&v["phases"], &ctx(&run));
    let pre_out = tail(&v["phases"], "pre", "stdoutTail");
    assert!(
        pre_out.contains("BACKUP STAGE BLOCK_COMMIT held") && pre_out.contains("non-transactional"),
        "pre: {pre_out}\n{}",
        ctx(&run)
    );
    // BLOCK_COMMIT holds a commit until the release (lock_wait_timeout
    // does not end that wait): the write gave up on its own or was ended.
    let w = fs::read_to_string(&during).unwrap();
    assert!(
        w.contains("Lock wait timeout") || w.contains("rc=124"),
        "a write in the window was not blocked: {w}"
    );
    let post_out = tail(&v["phases"], "post", "stdoutTail");
    assert!(
        post_out.contains("released on the session that took it"),
        "post: {post_out}\n{}",
        ctx(&run)
    );
    assert!(!run.stdout.contains("password"), "{}", run.stdout);
    live.writable(-1)
        .unwrap_or_else(|e| panic!("live database not writable after the run: {e}"));
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });
    writer.progresses(PROMPT).unwrap();
    writer.stop();
    let summary = maria_check_copy(&dir, &copy_img, "copy", &at_snapshot, &before);
    eprintln!("MariaDB workload copy: {summary}");
}

#[test]
fn postgresql_workload_checkpoints_takes_no_lock_and_the_copy_is_whole() {
    require_db!(
        "PostgreSQL",
        &pg_tools().iter().map(String::as_str).collect::<Vec<_>>()
    );
    let dir = Dir::new("wl-pg");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = pg_live(&dir, &live_fs, 55437);
    let config = workload_config(
        &dir,
        "pg.json",
        serde_json::json!({
            "workload": "postgres",
            "connection": {"socket": live.sock.display().to_string(), "port": 55437, "osUser": "postgres"},
            "timeoutInSeconds": 30,
        }),
    );
    let mut writer = pg_writer(&dir, &live);
    writer.wait_rows(30, Duration::from_secs(30));
    let (cmd, copy_img, at_snapshot) = copy_in_window(&dir, &writer, &live_fs, None);
    let before = writer.committed();
    let run = run_with(&dir, &config, &snapshot_args(&[&live_fs], &cmd));
    let v = assert_success(&run, &[&live_fs]);
    assert_scripts_ran(&v["phases"], &ctx(&run));
    let pre_out = tail(&v["phases"], "pre", "stdoutTail");
    assert!(
        pre_out.contains("CHECKPOINT done; nothing held"),
        "pre: {pre_out}\n{}",
        ctx(&run)
    );
    live.writable(-1)
        .unwrap_or_else(|e| panic!("live database not writable after the run: {e}"));
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });
    writer.progresses(PROMPT).unwrap();
    writer.stop();
    let summary = pg_check_copy(&dir, &copy_img, "copy", 55438, &at_snapshot, &before);
    eprintln!("PostgreSQL workload copy: {summary}");

    // A tablespace on a filesystem the run does not freeze: the coverage
    // check names it, and `check` fails.
    let other = ScratchFs::with_size(&dir.path, "other", "ext4", "32M");
    let ts = other.mnt.join("ts");
    fs::create_dir_all(&ts).unwrap();
    chown_user(&ts, "postgres");
    chmod(&ts, 0o700);
    chmod(&other.mnt, 0o755);
    live.must(&format!(
        "CREATE TABLESPACE elsewhere LOCATION '{}'",
        ts.display()
    ));
    let run = run_with(
        &dir,
        &config,
        &["check", "--json", "--mount", live_fs.path()],
    );
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert_eq!(
        error_names(&run.json()),
        ["WorkloadNotCovered"],
        "{}",
        ctx(&run)
    );
    let w = &run.json()["applications"][0]["workload"];
    assert_eq!(w["covered"], false, "{w}");
    assert!(
        w["method"] == "CHECKPOINT" && w["version"].as_str().unwrap().starts_with("15"),
        "{w}"
    );
    assert!(
        run.stderr
            .contains(&format!("tablespace {}: NOT frozen", ts.display())),
        "{}",
        run.stderr
    );
    let run = run_with(
        &dir,
        &config,
        &["check", "--mount", live_fs.path(), "--mount", other.path()],
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    live.must("DROP TABLESPACE elsewhere");

    // Peer authentication as an OS user the server does not trust: 505,
    // said by the server's own message; nothing run.
    let nobody = workload_config(
        &dir,
        "nobody.json",
        serde_json::json!({
            "workload": "postgres",
            "connection": {"socket": live.sock.display().to_string(), "port": 55437, "osUser": "nobody", "user": "postgres"},
        }),
    );
    let run = run_with(
        &dir,
        &nobody,
        &["check", "--json", "--mount", live_fs.path()],
    );
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert_eq!(
        error_names(&run.json()),
        ["WorkloadNoCredentials"],
        "{}",
        ctx(&run)
    );
    assert!(
        run.stderr.contains("Peer authentication failed"),
        "{}",
        run.stderr
    );
    // A server that is not there: 506.
    let gone = workload_config(
        &dir,
        "gone.json",
        serde_json::json!({"workload": "postgres", "connection": {"socket": "/nonexistent", "osUser": "postgres"}}),
    );
    let run = run_with(&dir, &gone, &["check", "--json", "--mount", live_fs.path()]);
    assert_eq!(
        error_names(&run.json()),
        ["WorkloadConnectionError"],
        "{}",
        ctx(&run)
    );
}

#[test]
fn mariadb_workload_failures_are_named_and_leave_nothing_locked() {
    require_db!("MariaDB", MARIADB_TOOLS);
    let dir = Dir::new("wl-maria-fail");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = maria_live(&dir, &live_fs);
    live.must("CREATE TABLE qt.m (id BIGINT PRIMARY KEY) ENGINE=Aria; INSERT INTO qt.m VALUES (1)");
    let conn = |extra: Value| {
        let mut c = serde_json::json!({"socket": live.sock.display().to_string(), "user": "root"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({"workload": "mariadb", "connection": c, "timeoutInSeconds": 20})
    };
    let names = |run: &Run| error_names(&run.json());

    // The coverage check: `check` names the server, its method and where
    // its files are; a run freezing another filesystem runs no method and
    // is never `application`.
    let other = ScratchFs::with_size(&dir.path, "other", "ext4", "32M");
    let ok = workload_config(&dir, "ok.json", conn(serde_json::json!({})));
    let run = run_with(&dir, &ok, &["check", "--json", "--mount", live_fs.path()]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let w = &run.json()["applications"][0]["workload"];
    assert_eq!(w["covered"], true, "{w}");
    assert_eq!(w["method"], "BACKUP STAGE BLOCK_COMMIT", "{w}");
    assert!(w["version"].as_str().unwrap().contains("MariaDB"), "{w}");
    assert!(run.stderr.contains("data directory"), "{}", run.stderr);
    let run = run_with(&dir, &ok, &["check", "--json", "--mount", other.path()]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert_eq!(names(&run), ["WorkloadNotCovered"], "{}", ctx(&run));
    assert!(run.stderr.contains("NOT frozen"), "{}", run.stderr);
    let run = run_with(&dir, &ok, &snapshot_args(&[&other], "true"));
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert_eq!(names(&run), ["WorkloadNotCovered"], "{}", ctx(&run));
    assert_eq!(run.json()["consistency"], "filesystem", "{}", ctx(&run));
    assert!(run.json()["phases"]["pre"].is_null(), "{}", ctx(&run));
    live.writable(-5).unwrap();

    // An unreachable server: 506, before anything is held; degraded.
    let gone = workload_config(
        &dir,
        "gone.json",
        conn(serde_json::json!({"socket": "/nonexistent/mysqld.sock"})),
    );
    let run = run_with(&dir, &gone, &snapshot_args(&[&live_fs], "true"));
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert_eq!(names(&run), ["WorkloadConnectionError"], "{}", ctx(&run));
    assert!(run.stderr.contains("(506)"), "{}", run.stderr);
    live.writable(-1).unwrap();

    // A wrong password from a root-only option file: 505, and the password
    // is nowhere in the output.
    live.must("CREATE USER 'bk'@'localhost' IDENTIFIED BY 'right-one'; GRANT RELOAD, SELECT ON *.* TO 'bk'@'localhost'");
    let opt = dir.join("bk.cnf");
    fs::write(&opt, "[client]\npassword=Wr0ngPassw0rd\n").unwrap();
    chmod(&opt, 0o600);
    let bad = workload_config(
        &dir,
        "bad.json",
        conn(serde_json::json!({"user": "bk", "optionFile": opt.display().to_string()})),
    );
    let run = run_with(&dir, &bad, &snapshot_args(&[&live_fs], "true"));
    assert_eq!(names(&run), ["WorkloadNoCredentials"], "{}", ctx(&run));
    assert!(
        !run.stdout.contains("Wr0ng") && !run.stderr.contains("Wr0ng"),
        "{}",
        ctx(&run)
    );
    // ... and a group-readable option file is refused before it is read.
    chmod(&opt, 0o640);
    let run = run_with(&dir, &bad, &snapshot_args(&[&live_fs], "true"));
    assert_eq!(names(&run), ["WorkloadNoCredentials"], "{}", ctx(&run));
    assert!(run.stderr.contains("bk.cnf"), "{}", run.stderr);
    live.writable(-2).unwrap();

    // The held session ends in the window (its client killed): the server
    // releases the lock at once, and the post phase says so (504).
    let inwin = dir.join("in-window");
    let cmd = format!(
        "touch '{}'; for p in $(pgrep -x mariadb); do \
           tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- '--unbuffered --socket={} ' && kill -KILL $p; done; sleep 1",
        inwin.display(),
        live.sock.display()
    );
    let run = run_with(&dir, &ok, &snapshot_args(&[&live_fs], &cmd));
    assert_eq!(names(&run), ["WorkloadPostFailed"], "{}", ctx(&run));
    assert_eq!(run.code, 1, "{}", ctx(&run));
    live.writable(-3).unwrap();
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });

    // Bridge mode: `pre` and `post` are separate processes. The lock is
    // held between them (a write waits), and `post` releases it on the
    // session that took it.
    let run = run_with(&dir, &ok, &["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let pre_out = tail(&run.json()["phases"], "pre", "stdoutTail");
    assert!(
        pre_out.contains("BACKUP STAGE BLOCK_COMMIT held"),
        "{pre_out}"
    );
    assert!(
        live.writable(-6).is_err(),
        "a write went through between pre and post"
    );
    let run = run_with(&dir, &ok, &["post", "--json"]);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let post_out = tail(&run.json()["phases"], "post", "stdoutTail");
    assert!(
        post_out.contains("released on the session that took it"),
        "{post_out}"
    );
    live.writable(-7).unwrap();
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });

    // A method that cannot get its lock in time (a write to a MyISAM table
    // runs for 20 s): 510, its session closed, nothing left held.
    live.must("CREATE TABLE qt.my (id BIGINT) ENGINE=MyISAM");
    let mut slow = Command::new("mariadb")
        .args(["--no-defaults", "--user=root"])
        .arg(format!("--socket={}", live.sock.display()))
        .args(["-e", "INSERT INTO qt.my (id) SELECT 100 + SLEEP(20)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let short = workload_config(&dir, "short.json", {
        let mut v = conn(serde_json::json!({}));
        v["timeoutInSeconds"] = 5.into();
        v
    });
    let run = run_with(&dir, &short, &snapshot_args(&[&live_fs], "true"));
    let ids = live
        .must("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO qt.my%'");
    for id in ids.lines().filter(|l| !l.trim().is_empty()) {
        let _ = live.sql(&format!("KILL {id}"), 5);
    }
    let _ = slow.kill();
    let _ = slow.wait();
    assert_eq!(names(&run), ["WorkloadQuiescingTimeout"], "{}", ctx(&run));
    assert!(run.stderr.contains("(510)"), "{}", run.stderr);
    live.writable(-8).unwrap();
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });

    // The runner killed with SIGKILL in the window: its sentinel ends the
    // holder, the session closes, the server takes writes within seconds.
    let mut runner = Spawned(
        runner_command(&dir.path)
            .arg("--config")
            .arg(&ok)
            .args(snapshot_args(
                &[&live_fs],
                &format!("touch '{}'; exec sleep 90", inwin.display()),
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _ = fs::remove_file(&inwin);
    wait_until(
        "the snapshot command starts",
        Duration::from_secs(30),
        || inwin.exists(),
    );
    signal(runner.0.id() as i32, Signal::SIGKILL);
    let _ = runner.0.wait();
    let t = wait_until(
        "the live server takes a write after the runner's SIGKILL",
        Duration::from_secs(10),
        || live.writable(-4).is_ok(),
    );
    eprintln!(
        "writable {:.0} ms after the runner's SIGKILL",
        t.as_secs_f64() * 1e3
    );
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });
}

/// workload.conf in `dir` with `text`, root-owned, `mode`.
fn workload_conf_file(dir: &Dir, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("workload.conf");
    fs::write(&path, text).unwrap();
    chmod(&path, mode);
    path
}

/// quiesce with workload.conf as its only source of applications (no
/// apps directory, no plugin-host list, and — on this machine — no
/// default config).
fn run_workload_conf(dir: &Dir, conf: &Path, args: &[&str]) -> Run {
    Run::from(
        runner_command(&dir.path)
            .arg("--apps-dir")
            .arg(dir.join("no-apps.d"))
            .arg("--workload-conf")
            .arg(conf)
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn workload_conf_examples_run_or_fail_with_their_named_error() {
    require_db!("MariaDB", MARIADB_TOOLS);
    if Path::new("/etc/azure/VMSnapshotScriptPluginConfig.json").exists() {
        eprintln!("SKIPPED: /etc/azure/VMSnapshotScriptPluginConfig.json exists here, so workload.conf is not the only application");
        return;
    }
    let dir = Dir::new("wl-conf");
    let live_fs = ScratchFs::with_size(&dir.path, "live", "ext4", IMAGE_SIZE);
    let live = maria_live(&dir, &live_fs);
    live.must("CREATE USER 'bk'@'localhost' IDENTIFIED BY 'Pa55:w\"rd'; GRANT RELOAD, SELECT, PROCESS ON *.* TO 'bk'@'localhost'");
    let sock = live.sock.display().to_string();

    // The extension's template, filled in as its docs show for MySQL, with
    // the password in credString: quiesce's method runs, and the password
    // is nowhere a user or another process could read it.
    let text = format!(
        "[workload]\n#workload_name valid values- mysql, oracle, mariadb, postgres\nworkload_name = mysql\ncommand_path = /usr/bin/\ncredString = -u bk '-pPa55:w\"rd' -S {sock}\nipc_folder = /var/lib/azure\ntimeout = 30\nlinux_user = \n"
    );
    let conf = workload_conf_file(&dir, &text, 0o600);
    let run = run_workload_conf(&dir, &conf, &snapshot_args(&[&live_fs], "true"));
    let v = assert_success(&run, &[&live_fs]);
    assert_eq!(
        v["applicationSource"]["source"],
        "workload-conf",
        "{}",
        ctx(&run)
    );
    let pre_out = tail(&v["phases"], "pre", "stdoutTail");
    assert!(
        pre_out.contains("no lock done; nothing held"),
        "pre: {pre_out}\n{}",
        ctx(&run)
    );
    for key in ["credString", "ipc_folder", "command_path", "timeout"] {
        assert!(
            v["warnings"].to_string().contains(key),
            "no warning names {key}: {}",
            v["warnings"]
        );
    }
    let last = fs::read_to_string(dir.join("state").join("last-snapshot.json")).unwrap_or_default();
    for text in [&run.stdout, &run.stderr, &last] {
        assert!(!text.contains("Pa55"), "the password leaked: {text}");
    }
    assert!(
        !dir.join("run").join("workload").read_dir().is_ok_and(
            |mut d| d.any(|e| { e.is_ok_and(|e| e.path().join("credentials").exists()) })
        ),
        "a credentials copy outlived the session"
    );

    // Group-writable: refused before it is read (501); the run goes on
    // without application consistency, as the extension's default allows.
    chmod(&conf, 0o620);
    let run = run_workload_conf(&dir, &conf, &snapshot_args(&[&live_fs], "true"));
    assert_eq!(run.code, 1, "{}", ctx(&run));
    assert_eq!(
        error_names(&run.json()),
        ["WorkloadConfigError"],
        "{}",
        ctx(&run)
    );
    assert!(run.stderr.contains("(501)"), "{}", run.stderr);

    // A symbolic link as workload.conf: refused as workload.conf (501),
    // never followed.
    chmod(&conf, 0o600);
    let link = dir.join("workload-link.conf");
    std::os::unix::fs::symlink(&conf, &link).unwrap();
    let run = run_workload_conf(&dir, &link, &["check", "--json", "--mount", live_fs.path()]);
    assert_eq!(run.code, 2, "{}", ctx(&run));
    assert_eq!(
        error_names(&run.json()),
        ["WorkloadConfigError"],
        "{}",
        ctx(&run)
    );

    // oracle: refused by name (503); a role quiesce does not run (502); a
    // password prompt it cannot answer (505).
    for (body, name) in [
        (
            "workload_name = oracle\ncredString = oracle\n",
            "WorkloadInvalidName",
        ),
        (
            "workload_name = mariadb\nrole = slave\n",
            "WorkloadInvalidRole",
        ),
        (
            "workload_name = mariadb\ncredString = -u root -p\n",
            "WorkloadNoCredentials",
        ),
    ] {
        let conf = workload_conf_file(&dir, &format!("[workload]\n{body}"), 0o600);
        let run = run_workload_conf(&dir, &conf, &["check", "--json", "--mount", live_fs.path()]);
        assert_eq!(run.code, 2, "{body}\n{}", ctx(&run));
        assert_eq!(error_names(&run.json()), [name], "{body}\n{}", ctx(&run));
    }
    live.writable(-1).unwrap();
    wait_until("the workload's helpers end", PROMPT, || {
        helpers_of(&dir).is_empty()
    });
}
