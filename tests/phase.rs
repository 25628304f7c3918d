//! `quiesce pre` / `quiesce post` with real scripts (SPEC.md §7, issue 3):
//! exit codes, status JSON, and which processes survive, looked up by a
//! marker in their command line, never by timing.

mod common;

use common::{MarkerGuard, Setup};
use serde_json::{json, Value};
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

fn script(s: &Setup, which: &str, body: &str) {
    let path = if which == "pre" { &s.pre } else { &s.post };
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
}

fn timeout(s: &Setup, secs: u64) {
    s.config_with(|m| {
        m.insert("timeoutInSeconds".into(), json!(secs));
    });
}

fn attempts(v: &Value, phase: &str) -> Vec<Value> {
    v["phases"][phase]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn instant_script_succeeds() {
    require_root!();
    let s = Setup::new("instant");
    script(&s, "pre", "echo hello; echo oops >&2");
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["operation"], "pre");
    assert_eq!(v["result"], "success");
    assert_eq!(v["errors"], json!([]));
    let a = attempts(&v, "pre");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["exitCode"], 0);
    assert_eq!(a[0]["timedOut"], false);
    assert_eq!(a[0]["stdoutTail"], "hello\n");
    assert_eq!(a[0]["stderrTail"], "oops\n");
    assert_eq!(v["phases"]["pre"]["script"], s.pre.to_str().unwrap());
    assert_eq!(v["phases"]["pre"]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn timeout_kills_the_tree_and_reports_308() {
    require_root!();
    let s = Setup::new("timeout");
    let m = MarkerGuard::new(1);
    script(&s, "pre", &format!("sleep {}", m.0));
    timeout(&s, 1);
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["Pre-ScriptTimeout"]);
    assert_eq!(run.json()["errors"][0]["code"], 308);
    let a = attempts(&run.json(), "pre");
    assert_eq!(a[0]["timedOut"], true);
    assert!(!a[0]["killedPids"].as_array().unwrap().is_empty());
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn sigterm_ignoring_script_is_killed() {
    require_root!();
    let s = Setup::new("ignore-term");
    let m = MarkerGuard::new(2);
    script(
        &s,
        "pre",
        &format!("trap '' TERM\nsleep {} & wait; sleep {}", m.0, m.0),
    );
    timeout(&s, 1);
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["Pre-ScriptTimeout"]);
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn escaped_descendants_are_killed_on_timeout() {
    require_root!();
    let s = Setup::new("escape");
    let m = MarkerGuard::new(3);
    // A setsid'd grandchild and a double-forked one, then the script hangs.
    script(
        &s,
        "post",
        &format!("setsid sleep {m} &\n( sleep {m} & ) &\nsleep {m}", m = m.0),
    );
    timeout(&s, 1);
    let run = s.quiesce(&["post", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.error_names(), ["Post-ScriptTimeout"]);
    assert_eq!(run.json()["errors"][0]["code"], 309);
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn two_hundred_children_are_killed() {
    require_root!();
    let s = Setup::new("spray");
    let m = MarkerGuard::new(4);
    script(
        &s,
        "pre",
        &format!(
            "i=0; while [ $i -lt 200 ]; do sleep {} & i=$((i+1)); done; wait",
            m.0
        ),
    );
    timeout(&s, 2);
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let killed = attempts(&run.json(), "pre")[0]["killedPids"]
        .as_array()
        .unwrap()
        .len();
    assert!(killed >= 200, "killed {killed}");
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn ten_megabytes_of_output_do_not_block() {
    require_root!();
    let s = Setup::new("chatty");
    script(
        &s,
        "pre",
        "head -c 10485760 /dev/zero | tr '\\0' x; echo; echo done >&2",
    );
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let a = &attempts(&run.json(), "pre")[0];
    let out = a["stdoutTail"].as_str().unwrap();
    // First and last 64 KiB kept, the middle marked as omitted.
    assert!(out.len() < 200 * 1024, "{}", out.len());
    assert!(out.starts_with("xxxx"));
    assert!(out.contains("omitted"));
    assert_eq!(a["stderrTail"], "done\n");
}

#[test]
fn retries_after_failures_until_success() {
    require_root!();
    let s = Setup::new("retry");
    let counter = s.s.path("count");
    script(
        &s,
        "pre",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
            c = counter.display()
        ),
    );
    s.config_with(|m| {
        m.insert("preScriptNoOfRetries".into(), json!(2));
    });
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let a = attempts(&run.json(), "pre");
    let codes: Vec<_> = a.iter().map(|x| x["exitCode"].clone()).collect();
    assert_eq!(codes, [json!(1), json!(1), json!(0)]);
}

#[test]
fn failure_after_retries_is_300_and_each_attempt_recorded() {
    require_root!();
    let s = Setup::new("fail");
    script(&s, "pre", "echo broken >&2; exit 7");
    s.config_with(|m| {
        m.insert("preScriptNoOfRetries".into(), json!(1));
    });
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.error_names(), ["Pre-ScriptExecutionFailed"]);
    assert_eq!(run.json()["errors"][0]["code"], 300);
    assert!(run.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("status 7"));
    assert_eq!(attempts(&run.json(), "pre").len(), 2);
    assert!(run.stderr.contains("action:"));
}

#[test]
fn argv_environment_cwd_and_descriptors() {
    require_root!();
    let s = Setup::new("argv");
    let pwned = s.s.path("pwned");
    script(
        &s,
        "pre",
        "printf '[%s]' \"$0\" \"$@\"; echo; env | sort; pwd; ls /proc/self/fd | sort -n | tr '\\n' ' '; echo",
    );
    s.config_with(|m| {
        m.insert(
            "preScriptParams".into(),
            json!(["a b", "", format!("$(touch {})", pwned.display()), 5]),
        );
    });
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let out = attempts(&v, "pre")[0]["stdoutTail"]
        .as_str()
        .unwrap()
        .to_string();
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "[{}][a b][][$(touch {})][5]",
            s.pre.display(),
            pwned.display()
        )
    );
    assert!(!pwned.exists(), "a parameter went through a shell");
    let env: Vec<&str> = lines.by_ref().take_while(|l| *l != "/").collect();
    let names: Vec<&str> = env.iter().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "PATH",
            "PWD",
            "QUIESCE_APP",
            "QUIESCE_ATTEMPT",
            "QUIESCE_DEADLINE_SECONDS",
            "QUIESCE_OPERATION_ID",
            "QUIESCE_PHASE",
            "QUIESCE_SCRIPT_PATH"
        ],
        "{env:?}"
    );
    assert!(env.contains(&"QUIESCE_PHASE=pre"));
    assert!(env.contains(&"QUIESCE_APP=ScriptRunner"), "{env:?}");
    assert!(env.contains(&"QUIESCE_ATTEMPT=1"));
    assert!(env.contains(
        &format!(
            "QUIESCE_OPERATION_ID={}",
            v["operationId"].as_str().unwrap()
        )
        .as_str()
    ));
    // Only stdin, stdout, stderr, and the fd ls itself opens (SPEC §4
    // revised: an unpinned script is executed by its path, nothing else of
    // quiesce's is inherited).
    let fds = lines.next().unwrap_or("");
    assert_eq!(fds.split_whitespace().count(), 4, "open fds: {fds}");
}

#[test]
fn non_executable_script_runs_through_sh_and_pinned_one_from_its_descriptor() {
    require_root!();
    let s = Setup::new("exec-modes");
    script(&s, "pre", "echo \"zero=$0\"");
    script(&s, "post", "echo \"zero=$0\"");
    std::fs::set_permissions(&s.post, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = s.quiesce(&["post", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        attempts(&run.json(), "post")[0]["stdoutTail"],
        format!("zero={}\n", s.post.display())
    );
    let sha = run.json()["phases"]["post"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    s.config_with(|m| {
        m.insert("postScriptSha256".into(), json!(sha));
        m.insert("postScriptLocation".into(), json!(s.post));
    });
    let run = s.quiesce(&["post", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // SPEC §4 (revised): a pinned script runs from the sealed copy of its
    // hashed bytes, so its $0 is /dev/fd/3 (an unpinned one keeps its path).
    assert_eq!(
        attempts(&run.json(), "post")[0]["stdoutTail"],
        "zero=/dev/fd/3\n"
    );
}

#[test]
fn other_interpreters_get_the_real_path_in_quiesce_script_path() {
    require_root!();
    let s = Setup::new("python");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: /usr/bin/python3 missing (scripts/test.sh installs python3)");
        return;
    }
    std::fs::write(
        &s.pre,
        "#!/usr/bin/python3\nimport os, sys\nprint(sys.argv[0], os.environ['QUIESCE_SCRIPT_PATH'], sys.argv[1:])\n",
    )
    .unwrap();
    s.config_with(|m| {
        m.insert("preScriptParams".into(), json!(["a"]));
    });
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        attempts(&run.json(), "pre")[0]["stdoutTail"],
        format!("{p} {p} ['a']\n", p = s.pre.display())
    );
}

#[test]
fn precheck_failure_runs_nothing() {
    require_root!();
    let s = Setup::new("nothing");
    std::fs::set_permissions(&s.post, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.error_names(), ["InsufficientPermissionforPost-Script"]);
    assert_eq!(s.scripts_ran(), "");
    assert!(run.json()["phases"].get("pre").is_none());
}

#[test]
fn pre_holder_lives_until_post_finishes() {
    require_root!();
    let s = Setup::new("holder");
    let m = MarkerGuard::new(5);
    script(
        &s,
        "pre",
        &format!("setsid sleep {} >/dev/null 2>&1 &\necho started", m.0),
    );
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let left = attempts(&run.json(), "pre")[0]["leftRunningPids"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    // Between the invocations the holder runs (it may hold a database lock);
    // it may still be between fork and exec, so wait for its command line.
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    assert_eq!(m.survivors().len(), 1);
    let run = s.quiesce(&["post", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["phases"]["post"]["holdersTerminated"], left);
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn post_leftovers_are_left_running() {
    require_root!();
    let s = Setup::new("post-left");
    let m = MarkerGuard::new(6);
    script(
        &s,
        "post",
        &format!("setsid sleep {} >/dev/null 2>&1 &", m.0),
    );
    let run = s.quiesce(&["post", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        attempts(&run.json(), "post")[0]["leftRunningPids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    assert_eq!(m.survivors().len(), 1);
}

#[test]
fn runner_sigterm_mid_script_kills_the_tree_and_exits_143() {
    require_root!();
    let s = Setup::new("sigterm");
    let m = MarkerGuard::new(7);
    script(
        &s,
        "pre",
        &format!("setsid sleep {m} &\nsleep {m}", m = m.0),
    );
    let child = s
        .command()
        .args(["pre", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert_eq!(run.json()["result"], "failure");
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn a_new_pre_ends_holders_no_post_phase_released() {
    require_root!();
    let s = Setup::new("stale-holder");
    let m = MarkerGuard::new(8);
    script(
        &s,
        "pre",
        &format!("setsid sleep {} >/dev/null 2>&1 &", m.0),
    );
    let first = s.quiesce(&["pre", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(common::wait_for_marker(&m.0, Duration::from_secs(5)));
    // The post phase never ran and nothing awaits it any more (an
    // operator cleared the pending record by hand). The next cycle's pre
    // ends the old holder before starting its own.
    let mut cleared = 0;
    for e in fs::read_dir(s.s.path("state")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("pending-post-") {
            fs::remove_file(e.path()).unwrap();
            cleared += 1;
        }
    }
    assert_eq!(cleared, 1, "the pre left one pending record");
    script(&s, "pre", "exit 0");
    let second = s.quiesce(&["pre", "--json"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let op = first.json()["operationId"].as_str().unwrap().to_string();
    assert!(
        second
            .warnings()
            .iter()
            .any(|w| w.contains(&op) && w.contains("never released")),
        "{:?}",
        second.warnings()
    );
    assert_eq!(m.survivors(), Vec::<i32>::new());
}

#[test]
fn cgroups_left_by_a_killed_runner_are_swept_by_the_next_run() {
    require_root!();
    let root = std::path::Path::new("/sys/fs/cgroup/unified/quiesce");
    let root = if root.exists() {
        root.to_path_buf()
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup/quiesce")
    };
    if !root.exists() {
        eprintln!("SKIPPED: no quiesce cgroup parent (cgroup v2 not writable here)");
        return;
    }
    // A pid that is surely gone: a child that was reaped.
    let mut c = Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let stale = root.join(format!("op-pre-1-{dead}-0"));
    let live = root.join(format!("op-pre-1-{}-0", std::process::id()));
    std::fs::create_dir(&stale).unwrap();
    std::fs::create_dir(&live).unwrap();
    let s = Setup::new("cg-sweep");
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stale_left = stale.exists();
    let live_left = live.exists();
    let _ = std::fs::remove_dir(&stale);
    let _ = std::fs::remove_dir(&live);
    assert!(!stale_left, "the dead runner's cgroup was not swept");
    assert!(live_left, "a live runner's cgroup was removed");
}

/// Writes `body` as the pre-script (mode 0700) and runs `quiesce pre`;
/// returns the run and the first attempt's stdout.
fn run_pre_script(s: &Setup, body: &str) -> (common::Run, String) {
    std::fs::write(&s.pre, body).unwrap();
    let run = s.quiesce(&["pre", "--json"]);
    let out = attempts(&run.json(), "pre")
        .first()
        .and_then(|a| a["stdoutTail"].as_str().map(str::to_string))
        .unwrap_or_default();
    (run, out)
}

/// Runs the pre-script by hand, as an operator would: `execve` of its path
/// from `/`, with the scripts' environment.
fn by_hand(s: &Setup) -> (i32, String) {
    let out = Command::new(&s.pre)
        .current_dir("/")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_bash_source_guard_calls_main() {
    require_root!();
    let s = Setup::new("bash-source");
    let (run, out) = run_pre_script(
        &s,
        "#!/bin/bash\nmain() { echo main ran; }\n[[ \"${BASH_SOURCE[0]}\" == \"$0\" ]] && main\nexit 0\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(out, "main ran\n");
}

#[test]
fn dirname_of_bash_source_and_of_dollar_zero_is_the_scripts_directory() {
    require_root!();
    let s = Setup::new("dirname");
    s.s.write("scripts/sibling.conf", "sibling found\n", 0o600);
    let (run, out) = run_pre_script(
        &s,
        "#!/bin/bash\ncat \"$(dirname \"${BASH_SOURCE[0]}\")/sibling.conf\"\ncat \"$(dirname \"$0\")/sibling.conf\"\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(out, "sibling found\nsibling found\n");
}

#[test]
fn a_shebang_with_an_option_is_honoured() {
    require_root!();
    let s = Setup::new("sh-dash");
    let (run, out) = run_pre_script(&s, "#!/bin/sh -\necho \"options honoured: $-\"\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(out.starts_with("options honoured"), "{out}");
}

#[test]
fn a_top_level_return_behaves_as_when_run_by_hand() {
    require_root!();
    for (tag, body) in [
        (
            "return-bash",
            "#!/bin/bash\necho before\nreturn 3\necho after\n",
        ),
        (
            "return-sh",
            "#!/bin/sh\necho before\nreturn 3\necho after\n",
        ),
    ] {
        let s = Setup::new(tag);
        let (run, out) = run_pre_script(&s, body);
        let (code, hand) = by_hand(&s);
        assert_eq!(out, hand, "{tag}: stdout differs from a run by hand");
        let ran = attempts(&run.json(), "pre")[0]["exitCode"].clone();
        assert_eq!(ran, json!(code), "{tag}: exit differs from a run by hand");
    }
}

#[test]
fn a_python_script_sees_its_real_path_as_file() {
    require_root!();
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: /usr/bin/python3 missing (scripts/test.sh installs python3)");
        return;
    }
    let s = Setup::new("py-file");
    let (run, out) = run_pre_script(&s, "#!/usr/bin/python3\nprint(__file__)\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(out, format!("{}\n", s.pre.display()));
}

/// Every descriptor of the shell, listed by a child (`ls`, straight to
/// stdout, no pipe: nothing the listing itself opens is in the list). The
/// `; true` keeps `sh -c` from exec'ing `ls` in its own place.
const LIST_FDS: &str = "ls -l /proc/$$/fd; true";

/// (number, target) of `ls -l` lines `… N -> TARGET`, sorted by number.
fn fd_lines(block: &str) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = block
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            Some((left.rsplit(' ').next()?.parse().ok()?, target.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn nothing_of_quiesce_is_inherited_beyond_stdio() {
    require_root!();
    let s = Setup::new("fds");
    let body = format!("#!/bin/sh\n{LIST_FDS}\necho --\nsh -c '{LIST_FDS}'\n");
    let (run, out) = run_pre_script(&s, &body);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (script, grandchild) = out.split_once("--\n").unwrap();
    // The script's own: stdio, and only what its shell opened itself (the
    // script file it reads).
    for (n, target) in fd_lines(script) {
        assert!(
            n <= 2 || target == s.pre.display().to_string(),
            "script fd {n} -> {target}:\n{out}"
        );
    }
    let fds: Vec<u32> = fd_lines(grandchild).iter().map(|f| f.0).collect();
    assert_eq!(fds, [0, 1, 2], "grandchild:\n{out}");

    // Pinned: the documented exception, the sealed copy at 3 that the
    // interpreter reads the script from.
    let sha = run.json()["phases"]["pre"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    s.config_with(|m| {
        m.insert("preScriptSha256".into(), json!(sha));
    });
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = attempts(&run.json(), "pre")[0]["stdoutTail"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, grandchild) = out.split_once("--\n").unwrap();
    let fds = fd_lines(grandchild);
    assert_eq!(
        fds.iter().map(|f| f.0).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{out}"
    );
    assert!(fds[3].1.starts_with("/memfd:quiesce:pre"), "{out}");
}

#[test]
fn the_script_tree_does_not_outlive_a_killed_runner() {
    require_root!();
    let s = Setup::new("runner-killed");
    let m = MarkerGuard::new(9);
    // A grandchild in the script's group, and (where the script gets a
    // cgroup) one that setsid's away.
    let cgroup = std::path::Path::new("/sys/fs/cgroup/unified").exists()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let escapee = if cgroup {
        format!("setsid sleep {} &\n", m.0)
    } else {
        String::new()
    };
    std::fs::write(
        &s.pre,
        format!("#!/bin/sh\n{escapee}sleep {m} &\nsleep {m}\n", m = m.0),
    )
    .unwrap();
    let mut child = s.spawn(&["pre", "--json"]);
    let want = if cgroup { 3 } else { 2 };
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while m.survivors().len() < want && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.survivors().len(), want, "the script's tree never started");
    let script = s.pre.display().to_string();
    assert_eq!(common::pids_with(&script).len(), 1, "the script itself");
    child.kill().unwrap();
    child.wait().unwrap();
    // Bounded poll: the kill is asynchronous (the sentinel sees the runner's
    // pidfd, init reaps the re-parented processes).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let gone = || m.survivors().is_empty() && common::pids_with(&script).is_empty();
    while !gone() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.survivors(), Vec::<i32>::new(), "descendants survived");
    assert_eq!(
        common::pids_with(&script),
        Vec::<i32>::new(),
        "the script survived"
    );
}

/// `quiesce pre` in a new pid namespace whose `vm.memfd_noexec` is 2 (the
/// sysctl is per pid namespace and may only be raised inside it).
fn pre_under_memfd_noexec_2(s: &Setup) -> common::Run {
    common::Run::from(
        Command::new("unshare")
            .args(["-pf", "--mount-proc", "sh", "-c"])
            .arg("echo 2 > /proc/sys/vm/memfd_noexec || exit 99; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_quiesce"))
            .args(s.global_args())
            .args(["pre", "--json"])
            .output()
            .unwrap(),
    )
}

#[test]
fn scripts_run_under_vm_memfd_noexec_2() {
    require_root!();
    if !std::path::Path::new("/proc/sys/vm/memfd_noexec").exists() {
        eprintln!("SKIPPED: no vm.memfd_noexec on this kernel (Linux 6.3+)");
        return;
    }
    let s = Setup::new("memfd-noexec");
    script(&s, "pre", "echo unpinned ran");
    let run = pre_under_memfd_noexec_2(&s);
    assert_eq!(run.code, 0, "unpinned: {}\n{}", run.stdout, run.stderr);
    assert_eq!(
        attempts(&run.json(), "pre")[0]["stdoutTail"],
        "unpinned ran\n"
    );

    script(&s, "pre", "echo pinned ran");
    let sha = s.quiesce(&["pre", "--json"]).json()["phases"]["pre"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    s.config_with(|m| {
        m.insert("preScriptSha256".into(), json!(sha));
    });
    let run = pre_under_memfd_noexec_2(&s);
    assert_eq!(run.code, 0, "pinned: {}\n{}", run.stdout, run.stderr);
    assert_eq!(
        attempts(&run.json(), "pre")[0]["stdoutTail"],
        "pinned ran\n"
    );
}

#[test]
fn the_snapshot_command_does_not_inherit_the_windows_oom_score_adj() {
    require_root!();
    let s = Setup::new("oom");
    let fs = common::scratchfs::ScratchFs::new(&s.s.dir, "data", "ext4");
    let out = s.s.path("oom.txt");
    let runner_out = s.s.path("runner-oom.txt");
    let cmd = format!(
        "cat /proc/self/oom_score_adj > '{}'; cat /proc/$PPID/oom_score_adj > '{}'",
        out.display(),
        runner_out.display()
    );
    let run = s.quiesce(&[
        "snapshot",
        "--json",
        "--max-freeze",
        "10",
        "--mount",
        fs.path(),
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["phases"]["snapshot"]["frozen"], true);
    // The runner inherits the test's value; during the window it holds
    // -1000 itself, its child must not.
    let mine = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    if std::fs::read_to_string(&runner_out).unwrap() != "-1000\n" {
        eprintln!("SKIPPED: this machine refuses oom_score_adj -1000 to the runner, so there is nothing to inherit (tests/supervise.rs covers the reset)");
        return;
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), mine);
    drop(fs);
}

/// Issue 26 item 9 (SPEC §7): `HOME` is root's, from the password
/// database, and `LANG` only a plain locale name, whatever the caller's
/// environment says (a `sudo` that keeps them passes the user's).
#[test]
fn home_and_lang_are_never_taken_from_the_caller() {
    require_root!();
    let s = Setup::new("env-home-lang");
    script(&s, "pre", "echo \"HOME=$HOME\"; echo \"LANG=$LANG\"");
    let root_home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .unwrap()
        .expect("root has a passwd entry")
        .dir;
    let pre = |home: &str, lang: &str| {
        common::Run::from(
            s.command()
                .args(["pre", "--json"])
                .env("HOME", home)
                .env("LANG", lang)
                .output()
                .unwrap(),
        )
    };
    let run = pre("/home/alice", "/home/alice/loc");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        attempts(&run.json(), "pre")[0]["stdoutTail"],
        format!("HOME={}\nLANG=C.UTF-8\n", root_home.display())
    );
    let warned: Vec<String> = run
        .warnings()
        .into_iter()
        .filter(|w| w.contains("LANG"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", run.warnings());
    assert!(
        warned[0].contains("\"/home/alice/loc\"") && warned[0].contains("not a plain locale name"),
        "{warned:?}"
    );
    for (lang, seen) in [
        ("../../home/alice/loc", "C.UTF-8"),
        ("en_US.UTF-8/../../x", "C.UTF-8"),
        ("de_DE@euro", "de_DE@euro"),
        ("C", "C"),
    ] {
        let run = pre("/home/alice", lang);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            attempts(&run.json(), "pre")[0]["stdoutTail"],
            format!("HOME={}\nLANG={seen}\n", root_home.display()),
            "LANG={lang}"
        );
        let warned = run.warnings().iter().any(|w| w.contains("LANG"));
        assert_eq!(warned, seen != lang, "LANG={lang}: {:?}", run.warnings());
    }
}

/// A run refused in its set-up, before anything ran, is reported as the
/// phase it could not run: a `pre` as Pre-ScriptExecutionFailed (300), a
/// `post` as Post-ScriptExecutionFailed (301) — never as a freeze failure,
/// which a run that freezes nothing cannot have.
#[cfg(feature = "fault-injection")]
#[test]
fn a_run_refused_in_its_set_up_names_the_phase_it_could_not_run() {
    require_root!();
    let s = Setup::new("phase-refused");
    for (phase, name, code) in [
        ("pre", "Pre-ScriptExecutionFailed", 300),
        ("post", "Post-ScriptExecutionFailed", 301),
    ] {
        let out = s
            .command()
            .env("QUIESCE_FAULT", "signals-install")
            .args([phase, "--json"])
            .output()
            .unwrap();
        let run = common::Run::from(out);
        assert_eq!(run.code, 2, "{}", run.stderr);
        let v = run.json();
        assert_eq!(v["errors"][0]["name"], name, "{v}");
        assert_eq!(v["errors"][0]["code"], code, "{v}");
        assert!(
            run.stderr.contains("cannot install signal handlers"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(s.scripts_ran(), "", "a script ran");
}
