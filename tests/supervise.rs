//! Supervised children with real processes (SPEC §7). Needs root: the tests
//! create cgroups, make the test process a subreaper and keep their scripts
//! in a root-only directory under /run (never /tmp, which is world-writable).
//!
//! Subreaping and reaping are process-wide, so the tests take one lock and
//! run one at a time; each finds its processes by a unique marker in their
//! argv (`sleep <n>.<test pid>`), never by timing, and kills whatever carries
//! its markers on every exit path.

use quiesce::supervise::*;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and takes no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// One test's world: the lock, a root-only script directory, its markers.
struct World {
    _lock: MutexGuard<'static, ()>,
    dir: PathBuf,
    markers: Vec<String>,
}

fn world(test: &str) -> Option<World> {
    if !is_root() {
        eprintln!("skipping {test}: needs root (cgroups, subreaper, scripts under /run)");
        return None;
    }
    let lock = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper().expect("subreaper");
    let dir = PathBuf::from(format!(
        "/run/quiesce-test-supervise-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    Some(World {
        _lock: lock,
        dir,
        markers: Vec::new(),
    })
}

impl World {
    /// A unique `sleep` argument: sleeps ~`n` seconds, findable in /proc.
    fn marker(&mut self, n: u32) -> String {
        let m = format!("{n}.{}", std::process::id());
        self.markers.push(m.clone());
        m
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for m in &self.markers {
            for pid in alive_with(m) {
                if let Ok(fd) = pidfd(pid) {
                    // SAFETY: pidfd_send_signal on a pidfd we own; null siginfo.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd.as_raw_fd(),
                            libc::SIGKILL,
                            0usize,
                            0u32,
                        )
                    };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        reap_orphans(&[]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) })
}

fn stat_of(pid: i32) -> Option<(u8, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.as_bytes()[0];
    Some((state, f.next()?.parse().ok()?))
}

/// Live (non-zombie) processes whose argv contains `marker` as a word.
fn alive_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let has = cmd.split(|b| *b == 0).any(|w| w == marker.as_bytes());
        if has && stat_of(pid).is_some_and(|(st, _)| st != b'Z') {
            out.push(pid);
        }
    }
    out
}

fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&pid| stat_of(pid).is_some_and(|(st, ppid)| st == b'Z' && ppid == me))
        .collect()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

const ENV: [&str; 4] = [
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C",
    "HOME=/root",
    "QUIESCE_PHASE=pre",
];

fn spec(path: &Path, args: &[&str]) -> SpawnSpec {
    let p = path.to_str().unwrap();
    let mut argv = vec![c(p)];
    argv.extend(args.iter().map(|a| c(a)));
    let mut s = SpawnSpec::new(Exec::Path(c(p)), argv);
    s.env = ENV.iter().map(|e| c(e)).collect();
    s.cgroup = Some(CgroupRequest::new("test", Some(512)));
    s
}

fn opts<'a>(deadline_ms: u64, grace_ms: u64) -> RunOptions<'a> {
    let mut o = RunOptions::new(Instant::now() + Duration::from_millis(deadline_ms));
    o.grace = Duration::from_millis(grace_ms);
    o.poll_interval = Duration::from_millis(100);
    o
}

#[test]
fn instant_script_exits_zero_with_its_output() {
    let Some(w) = world("instant") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\necho hello\necho oops >&2\n");
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!(
        (r.exit_code, r.signal, r.timed_out, r.interrupted),
        (Some(0), None, false, false)
    );
    assert_eq!(r.stdout.text(), "hello\n");
    assert_eq!(r.stderr.text(), "oops\n");
    assert!(r.killed_pids.is_empty() && r.left_running.is_empty());
    if r.cgroup.joined {
        assert!(r.cgroup.removed, "{:?}", r.cgroup);
        assert!(!Path::new(r.cgroup.path.as_deref().unwrap_or("/nonexistent")).exists());
    }
    eprintln!("cgroup: {:?}", r.cgroup);
    assert!(zombie_children().is_empty());
}

/// The script starts inside its cgroups — the v2 one (cloned into it) and
/// the v1 pids one (joined by its `tasks`) — with its pids limit, and a
/// process it forks is there too.
#[test]
fn a_script_and_its_children_start_in_their_cgroups_with_their_limit() {
    let Some(w) = world("cgroup-join") else {
        return;
    };
    let s = w.script(
        "pre.sh",
        "#!/bin/sh\ncat /proc/self/cgroup\nsh -c 'cat /proc/self/cgroup' | sed 's/^/child /'\n\
         p=$(sed -n 's/^[0-9]*:pids://p' /proc/self/cgroup)\n\
         [ -n \"$p\" ] && [ \"$p\" != / ] && echo \"v1 pids.max $(cat /sys/fs/cgroup/pids$p/pids.max)\"\n\
         exit 0\n",
    );
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr.text());
    let out = r.stdout.text();
    let leaf = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|p| p.rsplit('/').next().unwrap_or("").to_string())
    };
    if let Some(dir) = r.cgroup.path.as_deref() {
        let name = Path::new(dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(leaf("0::").as_deref(), Some(name.as_str()), "{out}");
        assert_eq!(leaf("child 0::").as_deref(), Some(name.as_str()), "{out}");
    }
    if let Some(dir) = r.cgroup.pids_path.as_deref() {
        let name = Path::new(dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let v1 = out
            .lines()
            .find(|l| l.contains(":pids:") && !l.starts_with("child"))
            .unwrap_or("");
        assert!(v1.ends_with(&name), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("child") && l.contains(":pids:") && l.ends_with(&name)),
            "{out}"
        );
        assert!(out.contains("v1 pids.max 512"), "{out}");
    }
    assert!(
        r.cgroup.path.is_some() || r.cgroup.pids_path.is_some(),
        "no cgroup joined here: {:?}",
        r.cgroup
    );
}

#[test]
fn exit_code_is_reported() {
    let Some(w) = world("exit3") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nexit 3\n");
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!((r.exit_code, r.signal), (Some(3), None));
}

#[test]
fn death_by_signal_is_reported() {
    let Some(w) = world("signal") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nkill -USR1 $$\nsleep 5\n");
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!(
        (r.exit_code, r.signal, r.timed_out),
        (None, Some(libc::SIGUSR1), false)
    );
}

#[test]
fn missing_interpreter_is_a_clear_spawn_error_and_the_child_is_reaped() {
    let Some(w) = world("badinterp") else { return };
    let s = w.script("pre.sh", "#!/nonexistent/interpreter\nexit 0\n");
    match run(&spec(&s, &[]), opts(5000, 1000)) {
        Err(
            e @ SpawnError::Exec {
                errno: nix::errno::Errno::ENOENT,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("pre.sh") && msg.contains("interpreter"),
                "{msg}"
            );
        }
        other => panic!("expected an exec error, got {other:?}"),
    }
    assert!(
        zombie_children().is_empty(),
        "the failed child must be reaped"
    );
}

#[test]
fn timeout_kills_the_tree() {
    let Some(mut w) = world("timeout") else {
        return;
    };
    let m = w.marker(3001);
    let s = w.script("pre.sh", &format!("#!/bin/sh\nsleep {m} &\nsleep {m}\n"));
    let r = run(&spec(&s, &[]), opts(300, 2000)).unwrap();
    assert!(r.timed_out && !r.interrupted);
    assert_eq!(r.signal, Some(libc::SIGTERM));
    assert!(r.killed_pids.len() >= 2, "{:?}", r.killed_pids);
    assert!(r.left_running.is_empty());
    assert!(alive_with(&m).is_empty());
    assert!(zombie_children().is_empty());
}

#[test]
fn a_script_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let Some(mut w) = world("trapterm") else {
        return;
    };
    let m = w.marker(3002);
    let s = w.script(
        "pre.sh",
        &format!("#!/bin/sh\ntrap '' TERM\nsleep {m} &\nwait\nsleep {m}\n"),
    );
    let r = run(&spec(&s, &[]), opts(300, 300)).unwrap();
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(libc::SIGKILL));
    assert!(alive_with(&m).is_empty());
}

fn escapees(cgroup: bool) {
    let name = if cgroup { "escape-cg" } else { "escape-nocg" };
    let Some(mut w) = world(name) else { return };
    let m = w.marker(if cgroup { 3003 } else { 3004 });
    let s = w.script(
        "pre.sh",
        &format!(
            "#!/bin/sh
setsid sleep {m} &                       # own session, parent alive
( sleep {m} & ) &                        # double fork, same session
setsid sh -c 'sleep {m} & exit 0' &      # own session and orphaned
until [ \"$(pgrep -c -f '^sleep {m}$')\" -ge 3 ]; do sleep 0.01; done
echo ready
sleep {m}
"
        ),
    );
    let mut sp = spec(&s, &[]);
    if !cgroup {
        sp.cgroup = None;
    }
    let r = run(&sp, opts(1500, 1000)).unwrap();
    assert!(r.timed_out);
    assert_eq!(
        r.stdout.text(),
        "ready\n",
        "the script did not get to start its escapees in time"
    );
    assert!(r.killed_pids.len() >= 5, "{:?}", r.killed_pids);
    assert!(alive_with(&m).is_empty(), "survivors: {:?}", alive_with(&m));
    assert!(r.left_running.is_empty());
    assert!(zombie_children().is_empty());
}

#[test]
fn setsid_and_double_fork_escapees_are_killed_with_a_cgroup() {
    escapees(true);
}

#[test]
fn setsid_and_double_fork_escapees_are_killed_without_a_cgroup() {
    escapees(false);
}

#[test]
fn two_hundred_children_are_all_killed() {
    let Some(mut w) = world("fanout") else { return };
    let m = w.marker(3005);
    let s = w.script(
        "pre.sh",
        &format!("#!/bin/sh\ni=0\nwhile [ $i -lt 200 ]; do sleep {m} & i=$((i+1)); done\necho ready\nsleep {m}\n"),
    );
    let r = run(&spec(&s, &[]), opts(2500, 1000)).unwrap();
    assert!(r.timed_out);
    assert_eq!(r.stdout.text(), "ready\n");
    assert!(r.killed_pids.len() >= 201, "{}", r.killed_pids.len());
    assert!(alive_with(&m).is_empty());
    assert!(zombie_children().is_empty());
}

#[test]
fn ten_megabytes_of_output_never_block_and_keep_head_and_tail() {
    let Some(w) = world("chatty") else { return };
    let s = w.script(
        "pre.sh",
        "#!/bin/sh\nprintf HEAD\nhead -c 10485752 /dev/zero\nprintf TAIL\n",
    );
    let r = run(&spec(&s, &[]), opts(10_000, 1000)).unwrap();
    assert_eq!(r.exit_code, Some(0));
    let out = &r.stdout;
    assert_eq!(out.total, 10 * 1024 * 1024);
    assert_eq!(
        (out.head.len(), out.tail.len()),
        (DEFAULT_OUTPUT_CAP, DEFAULT_OUTPUT_CAP)
    );
    assert!(out.truncated && out.head.starts_with(b"HEAD") && out.tail.ends_with(b"TAIL"));
    assert!(out.text().contains(&format!(
        "…[{} bytes omitted]…",
        10 * 1024 * 1024 - 2 * DEFAULT_OUTPUT_CAP
    )));
}

#[test]
fn argv_environment_cwd_and_descriptors_are_exactly_as_given() {
    let Some(w) = world("argv") else { return };
    let pwned = format!("/tmp/quiesce-pwned-{}", std::process::id());
    let s = w.script(
        "pre.sh",
        "#!/bin/sh
for a in \"$@\"; do printf 'arg:<%s>\\n' \"$a\"; done
printf 'cwd:%s\\n' \"$(pwd)\"
printf 'stdin:%s\\n' \"$(readlink /proc/$$/fd/0)\"
tr '\\0' '\\n' < /proc/$$/environ | sed 's/^/env:/'
ls /proc/self/fd | sed 's/^/fd:/'
",
    );
    let injection = format!("$(touch {pwned})");
    let r = run(
        &spec(&s, &[&injection, "", "two words", "a;b|c"]),
        opts(5000, 1000),
    )
    .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr.text());
    let text = r.stdout.text();
    let pick = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        pick("arg:"),
        vec![
            format!("<{injection}>"),
            "<>".into(),
            "<two words>".into(),
            "<a;b|c>".into()
        ]
    );
    assert!(
        !Path::new(&pwned).exists(),
        "an argument was interpreted by a shell"
    );
    assert_eq!(pick("cwd:"), vec!["/"]);
    assert_eq!(pick("stdin:"), vec!["/dev/null"]);
    assert_eq!(pick("env:"), ENV.to_vec());
    // ls's own 0-2 and the directory it reads (3): nothing was inherited.
    assert_eq!(pick("fd:"), vec!["0", "1", "2", "3"]);
}

#[test]
fn a_pinned_descriptor_runs_the_script_as_dev_fd_3() {
    let Some(w) = world("pinned") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$1\"\n");
    let fd: OwnedFd = std::fs::File::open(&s).unwrap().into();
    // SPEC §4 (revised): the interpreter reads the pinned descriptor at
    // /dev/fd/3, as the kernel runs a #! script from a descriptor.
    let mut sp = spec(&s, &[]);
    sp.argv = vec![c("/bin/sh"), EXEC_FD_PATH.to_owned(), c("first")];
    sp.program = Exec::Interpreter {
        program: c("/bin/sh"),
        script: fd,
    };
    let r = run(&sp, opts(5000, 1000)).unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr.text());
    assert_eq!(
        r.stdout.text(),
        format!("{}\nfirst\n", EXEC_FD_PATH.to_str().unwrap())
    );
    // The same spec can run again (retries reuse it).
    assert_eq!(run(&sp, opts(5000, 1000)).unwrap().exit_code, Some(0));
}

#[test]
fn a_replaced_script_or_a_symlink_is_refused_before_the_fork() {
    let Some(w) = world("replaced") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nexit 0\n");
    let other = w.script("other.sh", "#!/bin/sh\nexit 0\n");
    let meta = std::fs::metadata(&other).unwrap();
    let mut sp = spec(&s, &[]);
    sp.identity_check = Some(IdentityCheck {
        path: c(s.to_str().unwrap()),
        dev: meta.dev(),
        ino: meta.ino(),
    });
    assert!(matches!(
        run(&sp, opts(5000, 1000)),
        Err(SpawnError::ScriptReplaced { .. })
    ));

    let link = w.dir.join("link.sh");
    std::os::unix::fs::symlink(&s, &link).unwrap();
    let meta = std::fs::metadata(&s).unwrap();
    let mut sp = spec(&link, &[]);
    sp.identity_check = Some(IdentityCheck {
        path: c(link.to_str().unwrap()),
        dev: meta.dev(),
        ino: meta.ino(),
    });
    match run(&sp, opts(5000, 1000)) {
        Err(e @ SpawnError::ScriptReplaced { .. }) => {
            assert!(e.to_string().contains("symbolic link"))
        }
        other => panic!("expected ScriptReplaced, got {other:?}"),
    }
}

#[test]
fn an_interrupt_stops_the_wait_and_the_tree_is_killed() {
    let Some(mut w) = world("interrupt") else {
        return;
    };
    let m = w.marker(3006);
    let s = w.script("pre.sh", &format!("#!/bin/sh\nsleep {m}\n"));
    let (rd, wr) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&wr, b"x").unwrap();
    let mut o = opts(10_000, 1000);
    o.interrupt_fd = Some(rd.as_fd());
    let r = run(&spec(&s, &[]), o).unwrap();
    assert!(r.interrupted && !r.timed_out);
    assert!(alive_with(&m).is_empty());
}

#[test]
fn leftovers_are_reported_and_terminated_only_if_still_the_same_process() {
    let Some(mut w) = world("leftover") else {
        return;
    };
    let m = w.marker(3007);
    let s = w.script(
        "pre.sh",
        &format!("#!/bin/sh\nsetsid sleep {m} &\nuntil pgrep -f '^sleep {m}$' >/dev/null; do sleep 0.01; done\nexit 0\n"),
    );
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.left_running.len(), 1, "{:?}", r.left_running);
    let left = r.left_running[0].clone();
    assert_eq!(left.cmdline, format!("sleep {m}"));
    assert_eq!(alive_with(&m), vec![left.pid]);

    // Recorded between invocations as JSON.
    let json = serde_json::to_string(&r.left_running).unwrap();
    let back: Vec<Leftover> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r.left_running);

    // A different start time: not the same process, never signalled.
    let impostor = Leftover {
        start_time_ticks: left.start_time_ticks + 1,
        ..left.clone()
    };
    let k = terminate_leftovers(&[impostor], Duration::from_millis(200));
    assert!(k.killed.is_empty() && k.survivors.is_empty(), "{k:?}");
    assert_eq!(alive_with(&m), vec![left.pid]);

    let k = terminate_leftovers(&back, Duration::from_secs(1));
    assert_eq!(k.killed, vec![left.pid]);
    assert!(k.survivors.is_empty());
    assert!(alive_with(&m).is_empty());
    assert!(
        zombie_children().is_empty(),
        "the re-parented leftover must be reaped"
    );
    for dir in &left.cgroups {
        assert!(!Path::new(dir).exists(), "cgroup {dir} left behind");
    }
}

/// Prints the two numbers of the brief (no thresholds: benchmarks measure,
/// tests assert). `cargo test --test supervise measure -- --nocapture`.
#[test]
fn measure_instant_run_and_kill_lateness() {
    let Some(mut w) = world("measure") else {
        return;
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let script = w.script("true.sh", "#!/bin/sh\ntrue\n");
    for (label, sp) in [
        ("/bin/true, cgroup", {
            let mut s = spec(Path::new("/bin/true"), &[]);
            s.cgroup = Some(CgroupRequest::new("bench", Some(512)));
            s
        }),
        ("/bin/true, no cgroup", {
            let mut s = spec(Path::new("/bin/true"), &[]);
            s.cgroup = None;
            s
        }),
        ("#!/bin/sh script, cgroup", spec(&script, &[])),
    ] {
        let times: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let r = run(&sp, opts(5000, 1000)).unwrap();
                assert_eq!(r.exit_code, Some(0));
                t.elapsed()
            })
            .collect();
        println!(
            "run() instant [{label}]: median {:?} (max {:?})",
            median(times.clone()),
            times.iter().max().unwrap()
        );
    }

    let m = w.marker(3008);
    let sleeper = w.script("sleep.sh", &format!("#!/bin/sh\nsleep {m} &\nsleep {m}\n"));
    let mut noticed = Vec::new();
    let mut dead = Vec::new();
    for _ in 0..10 {
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut child = spawn(&spec(&sleeper, &[]), DEFAULT_OUTPUT_CAP).unwrap();
        let out = child.wait(deadline, Duration::from_secs(3), None, &mut |_| {});
        assert_eq!(out, WaitOutcome::DeadlinePassed);
        noticed.push(deadline.elapsed());
        let k = child.kill_tree(Duration::from_secs(2));
        dead.push(deadline.elapsed());
        assert!(k.survivors.is_empty());
        child.finish();
    }
    println!(
        "deadline → wait returns: median {:?}; deadline → tree killed and verified: median {:?} (max {:?})",
        median(noticed),
        median(dead.clone()),
        dead.iter().max().unwrap()
    );
    assert!(alive_with(&m).is_empty());
    assert!(zombie_children().is_empty());
}

#[test]
fn the_pre_exec_hook_runs_in_the_child_and_can_refuse() {
    let Some(w) = world("hook") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\ngrep NoNewPrivs /proc/$$/status\n");
    let mut sp = spec(&s, &[]);
    sp.pre_exec = Some(Box::new(|| {
        // SAFETY: prctl with integer arguments only (async-signal-safe).
        match unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } {
            0 => Ok(()),
            _ => Err(nix::errno::Errno::last()),
        }
    }));
    let r = run(&sp, opts(5000, 1000)).unwrap();
    assert_eq!(
        r.stdout.text().split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );

    sp.pre_exec = Some(Box::new(|| Err(nix::errno::Errno::EPERM)));
    match run(&sp, opts(5000, 1000)) {
        Err(SpawnError::PreExec {
            errno: nix::errno::Errno::EPERM,
            ..
        }) => {}
        other => panic!("expected PreExec, got {other:?}"),
    }
    assert!(zombie_children().is_empty());
}

#[test]
fn a_missing_working_directory_is_a_spawn_error() {
    let Some(w) = world("cwd") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nexit 0\n");
    let mut sp = spec(&s, &[]);
    sp.cwd = c("/nonexistent-quiesce-cwd");
    match run(&sp, opts(5000, 1000)) {
        Err(SpawnError::Chdir {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => {}
        other => panic!("expected Chdir, got {other:?}"),
    }
    assert!(zombie_children().is_empty());
}

#[test]
fn a_child_stuck_before_exec_is_killed_at_the_startup_deadline() {
    let Some(w) = world("stuck") else { return };
    let s = w.script("pre.sh", "#!/bin/sh\nexit 0\n");
    let mut sp = spec(&s, &[]);
    // A hook that never returns: the child blocks before its exec.
    sp.pre_exec = Some(Box::new(|| loop {
        // SAFETY: pause(2) is async-signal-safe and takes no arguments.
        unsafe { libc::pause() };
    }));
    sp.startup_timeout = Duration::from_millis(300);
    match run(&sp, opts(60_000, 1000)) {
        Err(e @ SpawnError::StartupTimeout { .. }) => {
            assert!(e.to_string().contains("did not reach exec"), "{e}")
        }
        other => panic!("expected StartupTimeout, got {other:?}"),
    }
    assert_eq!(zombie_children(), Vec::<i32>::new());
}

#[test]
fn a_child_gets_the_recorded_oom_score_adj_not_the_runners_current_one() {
    let Some(w) = world("oom") else { return };
    // What the runner records at start; then its value changes, as the
    // freeze window's -1000 does (raising is what every machine allows).
    quiesce::supervise::record_oom_score_adj();
    let recorded = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let raised = if recorded.trim() == "900" {
        "901"
    } else {
        "900"
    };
    std::fs::write("/proc/self/oom_score_adj", raised).unwrap();
    let s = w.script("pre.sh", "#!/bin/sh\ncat /proc/self/oom_score_adj\n");
    let r = run(&spec(&s, &[]), opts(5000, 1000)).unwrap();
    assert_eq!(r.exit_code, Some(0), "{}", r.stderr.text());
    assert_eq!(r.stdout.text(), recorded);
}
