//! Every error line gives the fix for that error (issue 25): a walk over
//! the errors the code can produce — each made for real, the way an
//! operator meets it — checking that the action printed with it (status
//! `errors[].action` and the human `action:` line) names the right thing:
//! the file, the key, the directory, the mount, or "run as root". The
//! error-table row alone cannot say it: 305 is a missing file, a mode, a
//! key or an apps directory, each with its own fix.
//!
//! Also: a failed pre-script prints the last lines of its stderr and names
//! the last-result file; a timeout names the application's real config; a
//! relative `--mount` is a usage error (64); and every warning of the
//! status is on stderr too.
//!
//! Needs root (trust checks, loop mounts); the freeze cases need mkfs.ext4.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::scratchfs::{self, ScratchFs};
use common::{Run, Setup};
use serde_json::json;

/// Checks what every run of this file must show, and returns the action of
/// the error `name` (with `code`): listed in the status, and said on stderr
/// as `error: NAME (CODE): …` followed by `action: …`.
fn action(run: &Run, name: &str, code: Option<u64>) -> String {
    let v = run.json();
    for w in run.warnings() {
        assert!(
            run.stderr.contains(&format!("warning: {w}")),
            "warning {w:?} is in the status but not on stderr:\n{}",
            run.stderr
        );
    }
    let errors = v["errors"].as_array().unwrap();
    let e = errors
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {errors:?}\nstderr:\n{}", run.stderr));
    assert_eq!(e["code"].as_u64(), code, "{e}");
    let a = e["action"].as_str().unwrap().to_string();
    assert!(
        run.stderr.contains(&format!("  action: {a}")),
        "the human output lacks the action {a:?}:\n{}",
        run.stderr
    );
    a
}

/// The action of the error `name` (with `code`) names every one of
/// `wants`.
fn expect(run: &Run, name: &str, code: Option<u64>, wants: &[&str], case: &str) {
    names(&action(run, name, code), wants, case);
}

/// `action` contains every one of `wants`.
fn names(action: &str, wants: &[&str], case: &str) {
    for w in wants {
        assert!(
            action.contains(w),
            "{case}: the action {action:?} does not name {w:?}"
        );
    }
}

fn disp(p: &Path) -> String {
    p.display().to_string()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_configuration_file_errors_name_their_own_fix() {
    require_root!();
    let s = Setup::new("act-config");
    let cfg = disp(&s.config);
    let check = |s: &Setup| s.quiesce(&["check", "--json"]);
    let e305 = Some(305);

    chmod(&s.config, 0o644);
    expect(
        &check(&s),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!("chown root:root {cfg} && chmod 600 {cfg}")],
        "mode 0644",
    );
    chmod(&s.config, 0o600);

    s.write_config_text("{\"preScriptLocation\": ");
    expect(
        &check(&s),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!("fix the JSON of {cfg}")],
        "malformed",
    );

    s.config_with(|c| {
        c.insert("timeoutInSeconds".into(), json!("30"));
    });
    expect(
        &check(&s),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!("fix \"timeoutInSeconds\" in {cfg}")],
        "wrong type",
    );

    s.config_with(|c| {
        c.insert("continueBackupOnFailur".into(), json!(false));
    });
    expect(
        &check(&s),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!(
            "rename \"continueBackupOnFailur\" to \"continueBackupOnFailure\" in {cfg}"
        )],
        "near miss",
    );
    s.write_config(&s.default_config());

    fs::remove_file(&s.config).unwrap();
    expect(
        &check(&s),
        "IncorrectJSONConfigFile",
        e305,
        &[
            &format!("create {cfg}"),
            "/usr/share/doc/quiesce/examples/VMSnapshotScriptPluginConfig.json",
        ],
        "missing",
    );

    // A configuration in a group-writable directory; one behind a link.
    let dir = s.s.mkdir("conf", 0o775);
    let inner =
        s.s.write("conf/c.json", s.default_config().to_string(), 0o600);
    expect(
        &check_config(&s, &inner),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!("chown root {0} && chmod go-w {0}", disp(&dir))],
        "group-writable directory",
    );
    chmod(&dir, 0o700);
    let link = s.s.symlink(&inner, "link.json");
    expect(
        &check_config(&s, &link),
        "IncorrectJSONConfigFile",
        e305,
        &[&format!("the symbolic link {}", disp(&link))],
        "symlink",
    );
}

/// `quiesce check` of the configuration `config`.
fn check_config(s: &Setup, config: &Path) -> Run {
    Run::from(
        common::quiesce_bin()
            .arg("--config")
            .arg(config)
            .args(common::private_args(&s.s.dir))
            .args(["check", "--json"])
            .output()
            .unwrap(),
    )
}

/// `quiesce ARGS` with the applications of an apps directory.
fn with_apps(s: &Setup, apps: &Path, args: &[&str]) -> Run {
    Run::from(
        common::quiesce_bin()
            .args(common::private_args(&s.s.dir))
            .arg("--host-config")
            .arg(&s.host_config)
            .arg("--apps-dir")
            .arg(apps)
            .arg("--extension-config")
            .arg(s.s.path("no-extension.json"))
            .args(args)
            .output()
            .unwrap(),
    )
}

fn check_apps(s: &Setup, apps: &Path) -> Run {
    with_apps(s, apps, &["check", "--json"])
}

#[test]
fn an_apps_directory_anyone_else_may_change_names_its_fix() {
    require_root!();
    let s = Setup::new("act-apps");
    let apps = s.s.mkdir("apps.d", 0o770);
    s.s.write("apps.d/10-app.json", s.default_config().to_string(), 0o600);
    expect(
        &check_apps(&s, &apps),
        "IncorrectJSONConfigFile",
        Some(305),
        &[&format!(
            "chown root:root {0} && chmod 700 {0}",
            disp(&apps)
        )],
        "apps.d 0770",
    );
    chmod(&apps, 0o700);
    let link = s.s.symlink(&apps, "apps-link");
    expect(
        &check_apps(&s, &link),
        "IncorrectJSONConfigFile",
        Some(305),
        &[&format!("make {} a real directory", disp(&link))],
        "apps.d link",
    );
}

#[test]
fn script_errors_name_the_script_and_its_key() {
    require_root!();
    let s = Setup::new("act-scripts");
    let check = |s: &Setup| s.quiesce(&["check", "--json"]);
    let pre = disp(&s.pre);

    chmod(&s.pre, 0o755);
    expect(
        &check(&s),
        "InsufficientPermissionforPre-Script",
        Some(306),
        &[&format!("chown root:root {pre} && chmod 700 {pre}")],
        "mode 0755",
    );
    chmod(&s.pre, 0o700);

    let link = s.s.symlink(&s.post, "post-link.sh");
    s.config_with(|c| {
        c.insert("postScriptLocation".into(), json!(link));
    });
    expect(
        &check(&s),
        "InsufficientPermissionforPost-Script",
        Some(307),
        &[&format!("the symbolic link {}", disp(&link))],
        "link",
    );

    s.config_with(|c| {
        c.insert("preScriptLocation".into(), json!(s.s.path("gone.sh")));
    });
    expect(
        &check(&s),
        "Pre-ScriptNotFound",
        Some(302),
        &[
            &format!("put the script at {}", disp(&s.s.path("gone.sh"))),
            "preScriptLocation",
        ],
        "missing",
    );

    s.config_with(|c| {
        c.insert("postScriptLocation".into(), json!(""));
    });
    expect(
        &check(&s),
        "Post-ScriptNotFound",
        Some(303),
        &["set postScriptLocation to the script's absolute path"],
        "empty",
    );

    s.config_with(|c| {
        c.insert("preScriptSha256".into(), json!("0".repeat(64)));
    });
    expect(
        &check(&s),
        "ScriptChecksumMismatch",
        Some(312),
        &[&pre, "set preScriptSha256"],
        "pin",
    );
}

#[test]
fn policy_host_file_state_and_run_directory_errors_name_their_file() {
    require_root!();
    let s = Setup::new("act-files");
    let e304 = Some(304);
    let host = disp(&s.host_config);
    s.s.write(
        "VMSnapshotPluginHost.conf",
        "[pre_post]\ntimeoutInSeconds: 60\n",
        0o666,
    );
    expect(
        &s.quiesce(&["check", "--json"]),
        "IncorrectPluginhostFile",
        e304,
        &[&format!("chmod go-w {host}")],
        "host file 0666",
    );
    s.s.write(
        "VMSnapshotPluginHost.conf",
        "[pre_post]\nno separator here\n",
        0o600,
    );
    expect(
        &s.quiesce(&["check", "--json"]),
        "IncorrectPluginhostFile",
        e304,
        &[&format!("fix {host} at the line")],
        "host file syntax",
    );
    fs::remove_file(&s.host_config).unwrap();

    let missing = s.s.path("no-policy.json");
    let policy = |p: &Path| s.quiesce(&["check", "--json", "--policy", p.to_str().unwrap()]);
    expect(
        &policy(&missing),
        "IncorrectPluginhostFile",
        e304,
        &[&format!("--policy names {}", disp(&missing))],
        "missing policy",
    );
    let good = fs::read_to_string("policies/script-policy.json").unwrap();
    let insecure = s.s.write("insecure.json", &good, 0o666);
    expect(
        &policy(&insecure),
        "IncorrectPluginhostFile",
        e304,
        &[&format!(
            "chown root:root {0} && chmod go-w {0}",
            disp(&insecure)
        )],
        "policy 0666",
    );
    let broken = s.s.write(
        "broken.json",
        good.replacen("\"comment\"", "\"note\"", 1),
        0o644,
    );
    expect(
        &policy(&broken),
        "IncorrectPluginhostFile",
        e304,
        &[&format!("fix {} at the field", disp(&broken))],
        "policy field",
    );

    // The state directory (check, any run) and the run directory (a run).
    let state = s.s.mkdir("state", 0o777);
    expect(
        &s.quiesce(&["check", "--json"]),
        "IncorrectPluginhostFile",
        e304,
        &[&format!(
            "chown root:root {0} && chmod 700 {0}",
            disp(&state)
        )],
        "state dir 0777",
    );
    chmod(&state, 0o700);
    let run_dir = s.s.mkdir("run", 0o777);
    expect(
        &s.quiesce(&["pre", "--json"]),
        "IncorrectPluginhostFile",
        e304,
        &[&format!(
            "chown root:root {0} && chmod 700 {0}",
            disp(&run_dir)
        )],
        "run dir 0777",
    );
    assert_eq!(s.scripts_ran(), "", "nothing ran");
}

/// `check` as a user without root: the freeze capability and the state
/// directory both say "run as root", not a mount's or a file's fix.
#[test]
fn check_without_root_says_run_as_root() {
    require_root!("it runs check as nobody");
    let s = Setup::new("act-nonroot");
    let run = Run::from(
        common::quiesce_bin()
            .args(s.global_args())
            .args(["check", "--json"])
            .uid(common::NOBODY)
            .gid(common::NOBODY)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    expect(
        &run,
        "FsFreezeFailed",
        Some(121),
        &["run quiesce as root"],
        "CAP_SYS_ADMIN",
    );
    expect(
        &run,
        "IncorrectPluginhostFile",
        Some(304),
        &["run quiesce as root"],
        "state directory",
    );
    for e in run.json()["errors"].as_array().unwrap() {
        assert!(
            !e["action"].as_str().unwrap().contains("check the mount"),
            "{e}"
        );
    }
}

/// A failed pre-script: the last lines of its stderr on the human output,
/// above the error, and the action names the last-result file; a timeout
/// names the application's own config, not the extension's file name.
#[test]
fn a_failed_script_shows_its_stderr_and_a_timeout_names_its_config() {
    require_root!();
    let s = Setup::new("act-script-run");
    fs::write(
        &s.pre,
        "#!/bin/sh\nfor i in $(seq 1 15); do echo \"boom line $i\" >&2; done\nexit 3\n",
    )
    .unwrap();
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let last = s.s.path("state/last-pre.json");
    expect(
        &run,
        "Pre-ScriptExecutionFailed",
        Some(300),
        &[&disp(&last), "last lines are above"],
        "failed pre",
    );
    assert!(last.is_file(), "the action names a file that exists");
    let shown = run
        .stderr
        .find("pre-script stderr, last 10 line(s)")
        .expect(&run.stderr);
    let error = run.stderr.find("error: Pre-ScriptExecutionFailed").unwrap();
    assert!(
        shown < error,
        "the tail comes before the error:\n{}",
        run.stderr
    );
    for i in 6..=15 {
        assert!(
            run.stderr.contains(&format!("  | boom line {i}\n")),
            "{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("  | boom line 5\n"), "{}", run.stderr);

    // Two applications; the second's pre-script times out.
    let apps = s.s.mkdir("apps.d", 0o700);
    s.s.write("apps.d/10-app.json", s.default_config().to_string(), 0o600);
    let slow =
        s.s.write("scripts/slow.sh", "#!/bin/sh\nexec sleep 30\n", 0o700);
    let mut db = s.default_config();
    db["preScriptLocation"] = json!(slow);
    db["timeoutInSeconds"] = json!(1);
    let db_cfg = s.s.write("apps.d/20-db.json", db.to_string(), 0o600);
    fs::write(&s.pre, "#!/bin/sh\nexit 0\n").unwrap();
    let run = with_apps(&s, &apps, &["pre", "--json"]);
    let a = action(&run, "Pre-ScriptTimeout", Some(308));
    names(
        &a,
        &[&format!("raise timeoutInSeconds in {}", disp(&db_cfg))],
        "timeout",
    );
    assert!(!a.contains("VMSnapshotScriptPluginConfig.json"), "{a}");
    // (post releases what the pre run left pending.)
    with_apps(&s, &apps, &["post", "--json"]);
}

/// A relative `--mount` is a bad command line (64), for every command that
/// takes one, and the message says why.
#[test]
fn a_relative_mount_is_a_usage_error() {
    let s = Setup::new("act-usage");
    for args in [
        &["check", "--mount", "data"][..],
        &["thaw", "--mount", "data"][..],
        &["freeze", "--mount", "data", "--", "true"][..],
        &["snapshot", "--mount", "mnt/data", "--", "true"][..],
    ] {
        let run = s.quiesce(args);
        assert_eq!(run.code, 64, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("is not an absolute path"),
            "{}",
            run.stderr
        );
        assert_eq!(s.scripts_ran(), "");
    }
}

fn freeze_run(s: &Setup, args: &[&str]) -> Run {
    let mut all = vec!["freeze", "--json"];
    all.extend_from_slice(args);
    s.quiesce(&all)
}

/// The freeze's errors: frozen by another tool, not a mount point, a lock
/// held by another run, a snapshot command that is not there; and a window
/// warning (oom_score_adj, without CAP_SYS_RESOURCE) said on stderr.
#[test]
fn freeze_errors_name_the_mount_the_holder_or_the_command() {
    require_root!();
    if !scratchfs::have_mkfs("ext4") {
        eprintln!("SKIPPED: mkfs.ext4 not installed (scripts/test.sh installs e2fsprogs)");
        return;
    }
    let s = Setup::new("act-freeze");
    let fs_ = ScratchFs::new(&s.s.dir, "a", "ext4");
    let m = fs_.path();

    let frozen = std::process::Command::new("fsfreeze")
        .args(["-f", m])
        .status()
        .unwrap();
    assert!(frozen.success());
    let run = freeze_run(&s, &["--mount", m, "--", "true"]);
    fs_.thaw();
    expect(
        &run,
        "FsFreezeFailed",
        Some(121),
        &[&format!("fsfreeze -u {m}")],
        "EBUSY",
    );

    let plain = s.s.mkdir("not-a-mount", 0o700);
    let run = freeze_run(&s, &["--mount", plain.to_str().unwrap(), "--", "true"]);
    expect(
        &run,
        "UnableToOpenMount",
        Some(123),
        &[&format!("{} is mounted", disp(&plain))],
        "not a mount",
    );

    let run = freeze_run(&s, &["--mount", m, "--", "no-such-snapshot-tool-25"]);
    expect(
        &run,
        "SnapshotCommandFailed",
        None,
        &["no-such-snapshot-tool-25 is installed"],
        "command",
    );

    // Another run holds the lock (inside its window).
    let inside = s.s.path("inside");
    let cmd = format!("touch {}; sleep 2", inside.display());
    let mut first = s.spawn(&["freeze", "--mount", m, "--", "sh", "-c", &cmd]);
    let end = Instant::now() + Duration::from_secs(20);
    while !inside.exists() {
        assert!(
            Instant::now() < end,
            "the first run never reached its window"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = freeze_run(&s, &["--mount", m, "--", "true"]);
    let _ = first.wait();
    expect(
        &run,
        "FsFreezeFailed",
        Some(121),
        &[&format!("wait for pid {}", first.id())],
        "lock held",
    );
    fs_.assert_writable();

    // Without CAP_SYS_RESOURCE the window cannot lower oom_score_adj: a
    // warning, in the status and on stderr (checked by `action`).
    let run = Run::from(
        std::process::Command::new("setpriv")
            .arg("--bounding-set=-sys_resource")
            .arg(env!("CARGO_BIN_EXE_quiesce"))
            .args(s.global_args())
            .args(["freeze", "--json", "--mount", m, "--", "false"])
            .output()
            .unwrap(),
    );
    assert!(
        run.warnings().iter().any(|w| w.contains("oom_score_adj")),
        "{}",
        run.stderr
    );
    expect(
        &run,
        "SnapshotCommandFailed",
        None,
        &["stderrTail"],
        "command failed",
    );
    fs_.assert_writable();
}
