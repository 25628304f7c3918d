//! Packages, man page, shell completion and bridge mode (issue 6).
//!
//! Two groups:
//! - always run (fast): the man page renders without warnings and documents
//!   every command, option, config key, error and exit status; the bash
//!   completion knows every command and option; the extension hook refuses
//!   anything but pre/post and execs quiesce with the right arguments; as
//!   root, the hook run the way the extension runs it (`sh hook pre`, cwd
//!   not `/`, stdout/stderr pipes) against the built binary, and the bridge
//!   check on a scratch set-up.
//! - package tests, only with `QUIESCE_PACKAGE_TESTS=1` (scripts/test.sh sets
//!   it after running scripts/package.sh): lintian, the .deb's and the RPM's
//!   file lists, owners and modes, and, as root, a real `dpkg -i` … `dpkg
//!   --purge` cycle on this machine (CI machines are disposable). Without the
//!   variable they are skipped with a message; with it, a missing package or
//!   tool is a failure that says what to run or install.
//!
//! Nothing here freezes anything: `check` plans mounts but freezes none, and
//! the scripts run by `pre`/`post` only write to root-owned 0700 scratch
//! directories under /run.

mod common;

use common::{Scratch, Setup};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const HOOK: &str = "/usr/lib/quiesce/extension-hook";
const OWN_CONFIG: &str = "/etc/quiesce/VMSnapshotScriptPluginConfig.json";

/// Every file both packages install, with its mode (owner root:root).
const FILES: &[(&str, u32)] = &[
    ("/usr/sbin/quiesce", 0o755),
    // The consistency-group helper (SPEC §11), started beside quiesce.
    ("/usr/sbin/quiesce-group", 0o755),
    ("/usr/lib/systemd/system/quiesce-recover.service", 0o644),
    ("/usr/share/man/man8/quiesce.8.gz", 0o644),
    ("/etc/quiesce/policy.json", 0o644),
    ("/usr/share/quiesce/policies/script-policy.json", 0o644),
    ("/usr/share/quiesce/policies/watchdog-policy.json", 0o644),
    (
        "/usr/share/doc/quiesce/examples/VMSnapshotScriptPluginConfig.json",
        0o644,
    ),
    ("/usr/share/doc/quiesce/examples/pre-script.sh", 0o644),
    ("/usr/share/doc/quiesce/examples/post-script.sh", 0o644),
    // The tested database samples (tests/databases.rs).
    (
        "/usr/share/doc/quiesce/examples/postgresql/VMSnapshotScriptPluginConfig.json",
        0o644,
    ),
    (
        "/usr/share/doc/quiesce/examples/postgresql/pre-script.sh",
        0o644,
    ),
    (
        "/usr/share/doc/quiesce/examples/postgresql/post-script.sh",
        0o644,
    ),
    ("/usr/share/doc/quiesce/examples/postgresql/pg.env", 0o644),
    (
        "/usr/share/doc/quiesce/examples/mariadb/VMSnapshotScriptPluginConfig.json",
        0o644,
    ),
    (
        "/usr/share/doc/quiesce/examples/mariadb/pre-script.sh",
        0o644,
    ),
    (
        "/usr/share/doc/quiesce/examples/mariadb/post-script.sh",
        0o644,
    ),
    ("/usr/share/doc/quiesce/examples/mariadb/mariadb.env", 0o644),
    // The two-application set in apps.d form (issue 12).
    ("/usr/share/doc/quiesce/examples/apps.d/10-app.json", 0o644),
    (
        "/usr/share/doc/quiesce/examples/apps.d/20-postgresql.json",
        0o644,
    ),
    ("/usr/share/doc/quiesce/examples/apps.d/README", 0o644),
    // The journal-forwarding drop-ins and the journal catalog (issue 15).
    (
        "/usr/share/doc/quiesce/examples/rsyslog-quiesce.conf",
        0o644,
    ),
    (
        "/usr/share/doc/quiesce/examples/syslog-ng-quiesce.conf",
        0o644,
    ),
    ("/usr/lib/systemd/catalog/quiesce.catalog", 0o644),
    ("/usr/share/bash-completion/completions/quiesce", 0o644),
    // 0700: the extension and quiesce's trust checks refuse anything looser.
    (HOOK, 0o700),
    // Run by the .deb's prerm and the .rpm's %preun (issue 25).
    ("/usr/lib/quiesce/before-remove", 0o755),
    // Every agent's hook (issue 22), run by the agents as root.
    ("/usr/share/quiesce/hooks/qemu-ga", 0o755),
    ("/usr/share/quiesce/hooks/vmware", 0o755),
    ("/usr/share/quiesce/hooks/gce", 0o755),
    ("/usr/share/quiesce/hooks/aws-dlm", 0o755),
];

/// Debian's own additions.
const DEB_ONLY: &[(&str, u32)] = &[
    ("/usr/share/doc/quiesce/copyright", 0o644),
    ("/usr/share/doc/quiesce/changelog.Debian.gz", 0o644),
    ("/usr/share/lintian/overrides/quiesce", 0o644),
];

/// Directories that belong to the package alone (gone after a purge).
const OWN_DIRS: &[&str] = &[
    "/etc/quiesce",
    "/usr/lib/quiesce",
    "/usr/share/quiesce/policies",
    "/usr/share/quiesce/hooks",
    "/usr/share/quiesce",
    "/usr/share/doc/quiesce/examples",
    "/usr/share/doc/quiesce",
];

/// What the installed quiesce makes as it runs (last results, pending
/// post-scripts): gone after a purge too.
const RUNTIME_DIRS: &[&str] = &["/var/lib/quiesce"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn package_tests_enabled() -> bool {
    std::env::var("QUIESCE_PACKAGE_TESTS").as_deref() == Ok("1")
}

/// Whether `tool` is on PATH. Missing: a failure when package tests are on
/// (CI installs it), else a loud skip.
fn have(tool: &str, apt: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !package_tests_enabled(),
            "{tool} not found: apt-get install {apt}"
        );
        eprintln!("SKIPPED: {tool} not found (apt-get install {apt})");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn quiesce_help(args: &[&str]) -> String {
    let o = run(common::quiesce_bin().args(args));
    assert!(o.status.success(), "quiesce {args:?} failed");
    text(&o.stdout)
}

/// The commands and options `--help` shows, for the drift checks.
fn cli_surface() -> (Vec<String>, BTreeSet<String>) {
    let top = quiesce_help(&["--help"]);
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 6, "{commands:?}");
    let mut options = BTreeSet::new();
    let mut helps = vec![top];
    for c in &commands {
        helps.push(quiesce_help(&[c, "--help"]));
    }
    // Option lines start with the option(s): "  -v, --verbose  More detail".
    for line in helps.iter().flat_map(|h| h.lines()) {
        if !line.trim_start().starts_with('-') {
            continue;
        }
        let words = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty());
        for word in words.take_while(|w| w.starts_with('-')) {
            options.insert(word.to_string());
        }
    }
    assert!(
        options.contains("--config") && options.contains("-v"),
        "{options:?}"
    );
    (commands, options)
}

/// The README's "Common options" names every option `--help` shows
/// (issue 25: it lacked --trail, --journal-socket and --metrics-dir).
#[test]
fn readme_names_every_global_option() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let common = readme
        .split("Common options (before or after the command)")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Common options paragraph");
    let top = quiesce_help(&["--help"]);
    let options = top.split("Options:").nth(1).expect("an Options: section");
    for line in options.lines() {
        let Some(opt) = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .find(|w| w.starts_with("--"))
        else {
            continue;
        };
        if ["--help", "--version"].contains(&opt) {
            continue;
        }
        assert!(
            common.contains(&format!("`{opt}")) || common.contains(&format!("/{opt}`")),
            "README's Common options lack {opt}"
        );
    }
}

// ---------------------------------------------------------------- man page

fn man_page() -> PathBuf {
    repo().join("packaging/quiesce.8")
}

/// The page rendered as plain ASCII on very long lines, whitespace folded,
/// so names and "(code)" can be searched for.
fn rendered_man_page() -> String {
    let o = run(Command::new("groff")
        .args(["-man", "-Tascii", "-P-c", "-P-b", "-P-u", "-rLL=300n"])
        .arg(man_page()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn man_page_renders_without_warnings() {
    if !have("groff", "groff-base") {
        return;
    }
    let o = run(Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(man_page()));
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "", "groff warnings");
    if !have("man", "man-db") {
        return;
    }
    let o = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(man_page())
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "man -l warnings");
    assert!(text(&o.stdout).contains("QUIESCE(8)"));
}

#[test]
fn man_page_documents_every_command_option_key_error_and_exit_status() {
    if !have("groff", "groff-base") {
        return;
    }
    let page = rendered_man_page();
    let source = fs::read_to_string(man_page()).unwrap();
    assert!(
        source.contains(&format!("\"quiesce {VERSION}\"")),
        ".TH must name quiesce {VERSION}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "OPTIONS",
        "CONFIGURATION",
        "ERRORS",
        "EXIT STATUS",
        "FILES",
        "SECURITY",
        "BRIDGE MODE",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            source.contains(&format!(".SH {section}\n"))
                || source.contains(&format!(".SH \"{section}\"\n")),
            "section {section} missing"
        );
    }
    let (commands, options) = cli_surface();
    for c in commands.iter().chain(["audit".to_string()].iter()) {
        assert!(
            page.contains(&format!("quiesce [options] {c}")),
            "command {c} not in SYNOPSIS"
        );
    }
    for o in &options {
        assert!(page.contains(o.as_str()), "option {o} not documented");
    }
    for key in quiesce::config::KNOWN_KEYS {
        assert!(page.contains(key), "config key {key} not documented");
    }
    for e in quiesce::error::ErrorCode::ALL {
        let entry = match e.code() {
            Some(code) => format!("{} ({code})", e.name()),
            None => format!("{} (no code)", e.name()),
        };
        assert!(page.contains(&entry), "error {entry} not documented");
    }
    let exit = page
        .split("EXIT STATUS")
        .nth(1)
        .and_then(|s| s.split("ENVIRONMENT").next())
        .expect("EXIT STATUS section");
    for code in [
        "0 Success",
        "1 Degraded",
        "2 Failure",
        "64 Usage",
        "70 Internal",
        "128+N Stopped",
    ] {
        assert!(exit.contains(code), "exit status {code:?} not documented");
    }
    for file in [
        HOOK,
        OWN_CONFIG,
        "/etc/quiesce/policy.json",
        "/run/quiesce/state.json",
    ] {
        assert!(page.contains(file), "{file} not in the page");
    }
}

// -------------------------------------------------------------- completion

#[test]
fn bash_completion_knows_every_command_and_option() {
    let path = repo().join("packaging/completions/quiesce.bash");
    let o = run(Command::new("bash").arg("-n").arg(&path));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (commands, options) = cli_surface();
    // Completing the way bash does, without bash-completion installed.
    let script = format!(
        r#"source {}
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _quiesce; echo "${{COMPREPLY[*]}}"; }}
t quiesce ""
t quiesce -
t quiesce snapshot -
t quiesce check -
t quiesce --syslog-facility auth
t quiesce recover -
"#,
        path.display()
    );
    let o = run(Command::new("bash").arg("-c").arg(script));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for c in &commands {
        assert!(
            lines[0].contains(&c.as_str()),
            "command {c} not completed: {out}"
        );
    }
    let all: BTreeSet<&str> = lines[1]
        .iter()
        .chain(&lines[2])
        .chain(&lines[3])
        .chain(&lines[5])
        .copied()
        .collect();
    for o in &options {
        assert!(all.contains(o.as_str()), "option {o} not completed: {out}");
    }
    assert!(lines[2].contains(&"--max-freeze") && lines[2].contains(&"--mount"));
    assert!(lines[3].contains(&"--mount") && !lines[3].contains(&"--max-freeze"));
    assert_eq!(lines[4], ["authpriv", "auth"]);
    assert!(lines[5].contains(&"--retry") && !lines[2].contains(&"--retry"));
}

// ------------------------------------------------------------ the hook

fn hook_source() -> PathBuf {
    repo().join("packaging/extension-hook")
}

/// Runs a hook the way the extension does: `sh <hook> <params>`, from a
/// working directory that is not `/`, with piped stdin/stdout/stderr and the
/// extension's sparse environment.
fn run_hook(hook: &Path, params: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(hook)
        .args(params)
        .current_dir("/var/tmp")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("sh");
    child.wait_with_output().unwrap()
}

#[test]
fn hook_is_posix_sh_and_refuses_anything_but_pre_or_post() {
    let o = run(Command::new("sh").arg("-n").arg(hook_source()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let nowhere = Path::new("/nonexistent/quiesce");
    for (params, says) in [
        (&[][..], "no phase given"),
        (&["snapshot"][..], "refusing phase \"snapshot\""),
        (&["PRE"][..], "refusing phase \"PRE\""),
        (&["pre", "-v"][..], "unexpected argument \"-v\""),
        (&["post", "", "x"][..], "unexpected argument \"x\""),
    ] {
        let o = run_hook(&hook_source(), params, &[("QUIESCE_BIN", nowhere)]);
        assert_eq!(o.status.code(), Some(64), "{params:?}");
        let err = text(&o.stderr);
        assert!(
            err.contains(says) && err.contains("usage:"),
            "{params:?}: {err}"
        );
    }
    // Empty trailing params (the sample config's "" style) are accepted: the
    // hook gets as far as looking for the binary.
    let o = run_hook(
        &hook_source(),
        &["pre", "", ""],
        &[("QUIESCE_BIN", nowhere)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("/nonexistent/quiesce is missing"));
}

#[test]
fn hook_execs_quiesce_with_its_own_config_from_root_and_passes_the_status_through() {
    // A stand-in binary that reports how it was started and exits 7.
    let dir = std::env::temp_dir().join(format!("quiesce-hook-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report");
    let fake = dir.join("fake-quiesce");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" > {r}\npwd >> {r}\nexit 7\n",
            r = report.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let config = Path::new("/some/where/own.json");
    let apps = Path::new("/some/where/apps.d");
    for phase in ["pre", "post"] {
        for (env, args) in [
            (vec![], "--bridge|"),
            (
                vec![("QUIESCE_CONFIG", config)],
                "--bridge|--config|/some/where/own.json|",
            ),
            (
                vec![("QUIESCE_APPS_DIR", apps)],
                "--bridge|--apps-dir|/some/where/apps.d|",
            ),
        ] {
            let mut env = env;
            env.push(("QUIESCE_BIN", &fake));
            let o = run_hook(&hook_source(), &[phase, ""], &env);
            assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
            assert_eq!(
                fs::read_to_string(&report).unwrap(),
                format!("{args}{phase}|/\n")
            );
        }
    }
    // The binary's default is the packaged path; quiesce's own set is what
    // --bridge reads by default (/etc/quiesce/apps.d, else OWN_CONFIG).
    let src = fs::read_to_string(hook_source()).unwrap();
    assert!(src.contains("bin=${QUIESCE_BIN:-/usr/sbin/quiesce}"));
    assert!(src.contains(OWN_CONFIG) && src.contains("/etc/quiesce/apps.d"));
    let _ = fs::remove_dir_all(&dir);
}

/// A root-owned stand-in for /usr/sbin/quiesce that keeps the runner's state
/// and the audit trail inside the scratch directory.
fn scratch_quiesce(s: &Setup) -> PathBuf {
    s.s.write(
        "bin/quiesce",
        format!(
            "#!/bin/sh\nexec {} --host-config {} --run-dir {} --syslog-socket {} --journal-socket {} --state-dir {} \"$@\"\n",
            env!("CARGO_BIN_EXE_quiesce"),
            s.host_config.display(),
            s.s.path("run").display(),
            s.s.path("no-syslog.sock").display(),
            s.s.path("no-journal.sock").display(),
            s.s.path("state").display()
        ),
        0o700,
    )
}

fn scripts_reporting_cwd(s: &Setup, pre_exit: i32) {
    for (path, phase, code) in [(&s.pre, "pre", pre_exit), (&s.post, "post", 0)] {
        fs::write(
            path,
            format!(
                "#!/bin/sh\necho \"{phase} cwd=$(pwd) phase=$QUIESCE_PHASE\" >> {}\nexit {code}\n",
                s.marker.display()
            ),
        )
        .unwrap();
    }
}

#[test]
fn hook_runs_quiesce_the_way_the_extension_runs_it() {
    require_root!();
    let s = Setup::new("hook-e2e");
    scripts_reporting_cwd(&s, 0);
    let bin = scratch_quiesce(&s);
    let env = [
        ("QUIESCE_BIN", bin.as_path()),
        ("QUIESCE_CONFIG", s.config.as_path()),
    ];

    let o = run_hook(&hook_source(), &["pre"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(s.scripts_ran(), "pre cwd=/ phase=pre\n");
    assert!(
        text(&o.stderr).contains("pre-script exited 0"),
        "{}",
        text(&o.stderr)
    );

    let o = run_hook(&hook_source(), &["post"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        s.scripts_ran(),
        "pre cwd=/ phase=pre\npost cwd=/ phase=post\n"
    );

    // A failing pre-script: the extension sees a non-zero status.
    scripts_reporting_cwd(&s, 3);
    let o = run_hook(&hook_source(), &["pre"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("Pre-ScriptExecutionFailed"),
        "{}",
        text(&o.stderr)
    );
}

// ------------------------------------------------------ bridge::check

/// The library's bridge check on a real, root-owned scratch set-up.
#[test]
fn bridge_check_accepts_a_correct_setup_and_refuses_a_loop() {
    require_root!();
    use quiesce::job::bridge::{self, BridgePaths};
    use std::time::Duration;
    let s = Setup::new("bridge-check");
    let hook = s.s.write(
        "lib/extension-hook",
        fs::read(hook_source()).unwrap(),
        0o700,
    );
    let ext_path = s.s.path("azure/VMSnapshotScriptPluginConfig.json");
    let ext_text = json!({
        "preScriptLocation": hook, "preScriptParams": ["pre"],
        "postScriptLocation": hook, "postScriptParams": ["post"],
        "timeoutInSeconds": 60
    })
    .to_string();
    let ext = quiesce::config::parse(&ext_path, ext_text.as_bytes(), None)
        .unwrap()
        .config;
    let paths = BridgePaths {
        hook: hook.clone(),
        own_config: s.config.clone(),
        own_apps_dir: s.s.path("no-apps.d"),
        own_explicit: Vec::new(),
    };
    let grace = Duration::from_secs(5);

    let f = bridge::check(&ext_path, &ext, &paths, None, grace).expect("bridge mode");
    assert_eq!(f.problems, vec![], "{f:?}");
    assert!(f.notes.iter().any(|n| n.contains("pre-script ok")), "{f:?}");

    // quiesce's own config pointing back at the hook: a loop.
    s.config_with(|m| {
        m.insert("postScriptLocation".into(), json!(hook));
    });
    let f = bridge::check(&ext_path, &ext, &paths, None, grace).unwrap();
    let names: Vec<_> = f.problems.iter().map(|p| p.code.name()).collect();
    assert_eq!(names, ["IncorrectJSONConfigFile"], "{f:?}");
    assert!(f.problems[0].detail.contains("loop"));

    // quiesce's own script fails the trust checks: reported as for any script.
    s.write_config(&s.default_config());
    fs::set_permissions(&s.pre, fs::Permissions::from_mode(0o755)).unwrap();
    let f = bridge::check(&ext_path, &ext, &paths, None, grace).unwrap();
    let names: Vec<_> = f.problems.iter().map(|p| p.code.name()).collect();
    assert_eq!(names, ["InsufficientPermissionforPre-Script"], "{f:?}");
}

// ------------------------------------------------------------ packages

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// The packages built by scripts/package.sh, or `None` (skip) when package
/// tests are off.
fn packages() -> Option<Packages> {
    if !package_tests_enabled() {
        eprintln!("SKIPPED: package tests need QUIESCE_PACKAGE_TESTS=1 (scripts/test.sh sets it after scripts/package.sh)");
        return None;
    }
    let dir = repo().join("target/packages");
    let find = |name: String| {
        let p = dir.join(&name);
        assert!(
            p.is_file(),
            "{} is missing: run scripts/package.sh first",
            p.display()
        );
        p
    };
    let arch = text(&run(Command::new("dpkg").arg("--print-architecture")).stdout);
    Some(Packages {
        deb: find(format!("quiesce_{VERSION}-1_{}.deb", arch.trim())),
        rpm: find(format!(
            "quiesce-{VERSION}-1.{}.rpm",
            std::env::consts::ARCH
        )),
    })
}

fn expected(deb: bool) -> BTreeMap<String, u32> {
    FILES
        .iter()
        .chain(if deb { DEB_ONLY } else { &[] })
        .map(|(p, m)| (p.to_string(), *m))
        .collect()
}

fn mode_of(perms: &str) -> u32 {
    perms[1..]
        .chars()
        .enumerate()
        .filter(|(_, c)| *c != '-')
        .map(|(i, _)| 1 << (8 - i))
        .sum()
}

#[test]
fn lintian_finds_no_errors_in_the_deb() {
    let Some(p) = packages() else { return };
    if !have("lintian", "lintian") {
        return;
    }
    let o = run(Command::new("lintian")
        .args(["--fail-on", "error", "--display-info"])
        .arg(&p.deb));
    let out = text(&o.stdout);
    eprintln!("{out}");
    assert!(
        o.status.success(),
        "lintian errors:\n{out}{}",
        text(&o.stderr)
    );
    assert!(!out.lines().any(|l| l.starts_with("E:")), "{out}");
}

#[test]
fn deb_contents_owners_modes_and_conffiles() {
    let Some(p) = packages() else { return };
    let o = run(Command::new("dpkg-deb").arg("-c").arg(&p.deb));
    assert!(o.status.success());
    let mut files = BTreeMap::new();
    for line in text(&o.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (perms, owner, path) = (f[0], f[1], f[5].trim_start_matches('.'));
        assert!(owner == "0/0" || owner == "root/root", "{line}");
        assert!(
            !path.starts_with("/etc/azure"),
            "installs under /etc/azure: {line}"
        );
        if perms.starts_with('d') {
            assert_eq!(mode_of(perms), 0o755, "{line}");
        } else {
            assert!(perms.starts_with('-'), "not a regular file: {line}");
            files.insert(path.to_string(), mode_of(perms));
        }
    }
    assert_eq!(files, expected(true));

    let o = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&p.deb)
        .arg("conffiles"));
    assert_eq!(text(&o.stdout).trim(), "/etc/quiesce/policy.json");

    // What is inside is what the sources say (a stale package fails here).
    let s = Scratch::new("deb-x");
    let root = s.path("root");
    assert!(
        run(Command::new("dpkg-deb").arg("-x").arg(&p.deb).arg(&root))
            .status
            .success()
    );
    for (inside, source) in [
        ("etc/quiesce/policy.json", "policies/script-policy.json"),
        ("usr/lib/quiesce/extension-hook", "packaging/extension-hook"),
        (
            "usr/share/bash-completion/completions/quiesce",
            "packaging/completions/quiesce.bash",
        ),
        (
            "usr/share/doc/quiesce/examples/pre-script.sh",
            "packaging/examples/pre-script.sh",
        ),
    ] {
        assert_eq!(
            fs::read(root.join(inside)).unwrap(),
            fs::read(repo().join(source)).unwrap(),
            "{inside} differs from {source}: rebuild with scripts/package.sh"
        );
    }
    let man = run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man8/quiesce.8.gz")));
    assert_eq!(man.stdout, fs::read(man_page()).unwrap(), "stale man page");
    let v = run(Command::new(root.join("usr/sbin/quiesce")).arg("--version"));
    assert_eq!(text(&v.stdout).trim(), format!("quiesce {VERSION}"));
}

#[test]
fn rpm_file_list_owners_and_modes() {
    let Some(p) = packages() else { return };
    if !have("rpm", "rpm") {
        return;
    }
    let o = run(Command::new("rpm").args(["-qlp", "--dump"]).arg(&p.rpm));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut files = BTreeMap::new();
    for line in text(&o.stdout).lines() {
        // path size mtime digest mode owner group isconfig isdoc rdev symlink
        let f: Vec<&str> = line.split_whitespace().collect();
        let (path, mode, owner, group, config) = (f[0], f[4], f[5], f[6], f[7]);
        assert_eq!((owner, group), ("root", "root"), "{line}");
        assert!(!path.starts_with("/etc/azure"), "{line}");
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(mode & 0o170000, 0o100000, "not a regular file: {line}");
        assert_eq!(config == "1", path == "/etc/quiesce/policy.json", "{line}");
        files.insert(path.to_string(), mode & 0o7777);
    }
    assert_eq!(files, expected(false));
    let o = run(Command::new("rpm")
        .args(["-qp", "--queryformat", "%{VERSION}"])
        .arg(&p.rpm));
    assert_eq!(text(&o.stdout), VERSION);
}

/// Everything under `dir` with its metadata and content, to prove that the
/// package never touches /etc/azure.
fn tree_state(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return vec!["<absent>".into()];
    };
    out.push(format!(
        "{} {:o} {}:{} {} {}",
        dir.display(),
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.mtime(),
        meta.mtime_nsec()
    ));
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            out.extend(tree_state(&e));
        }
    } else if meta.is_file() {
        out.push(format!("{:?}", fs::read(dir).unwrap_or_default()));
    }
    out
}

fn installed() -> bool {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "quiesce"]));
    text(&o.stdout) == "installed"
}

/// Purges the package and removes what the test added, on every path out.
struct InstalledPackage {
    run_dir_existed: bool,
}

impl Drop for InstalledPackage {
    fn drop(&mut self) {
        let _ = fs::remove_file(OWN_CONFIG);
        let _ = Command::new("dpkg").args(["--purge", "quiesce"]).output();
        if !self.run_dir_existed {
            let _ = fs::remove_dir_all("/run/quiesce");
        }
    }
}

fn installed_quiesce(args: &[&str], s: &Scratch) -> Output {
    run(Command::new("/usr/sbin/quiesce")
        .args(args)
        .arg("--host-config")
        .arg(s.path("no-host.conf"))
        .arg("--run-dir")
        .arg(s.path("run"))
        .arg("--syslog-socket")
        .arg(s.path("no-syslog.sock")))
}

fn status_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", text(&o.stdout), text(&o.stderr)))
}

fn error_names(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// The real cycle on this machine: `dpkg -i`, everything an operator would
/// check, the bridge end to end through the installed hook, `dpkg --purge`.
#[test]
fn deb_install_check_bridge_and_purge_cycle() {
    let Some(p) = packages() else { return };
    require_root!();
    if !have("man", "man-db") {
        return;
    }
    assert!(
        !installed(),
        "quiesce is already installed on this machine; this test installs and purges it, so it refuses to run"
    );
    let azure_before = tree_state(Path::new("/etc/azure"));
    let guard = InstalledPackage {
        run_dir_existed: Path::new("/run/quiesce").exists(),
    };
    let o = run(Command::new("dpkg")
        .arg("-i")
        .arg(&p.deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(o.status.success(), "dpkg -i: {}", text(&o.stderr));
    assert!(installed());

    // The installed file list, owners and modes.
    let listed: BTreeSet<String> = text(&run(Command::new("dpkg").args(["-L", "quiesce"])).stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for (path, mode) in expected(true) {
        assert!(listed.contains(&path), "{path} not in dpkg -L");
        let m = fs::symlink_metadata(&path).unwrap();
        assert!(m.is_file(), "{path}");
        assert_eq!((m.uid(), m.gid()), (0, 0), "{path} owner");
        assert_eq!(m.mode() & 0o7777, mode, "{path} mode");
    }
    for dir in OWN_DIRS {
        let m = fs::symlink_metadata(dir).unwrap();
        assert!(m.is_dir());
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755), "{dir}");
    }
    assert!(listed.iter().all(|p| !p.starts_with("/etc/azure")));

    let v = run(Command::new("/usr/sbin/quiesce").arg("--version"));
    assert_eq!(text(&v.stdout).trim(), format!("quiesce {VERSION}"));

    // man finds and renders the page, without warnings.
    let w = run(Command::new("man").args(["-w", "8", "quiesce"]));
    assert_eq!(text(&w.stdout).trim(), "/usr/share/man/man8/quiesce.8.gz");
    let m = run(Command::new("man")
        .args(["--warnings", "-l", "/usr/share/man/man8/quiesce.8.gz"])
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat"));
    assert!(m.status.success());
    assert_eq!(text(&m.stderr), "");
    assert!(text(&m.stdout).contains("BRIDGE MODE"));

    // `check` against the installed sample: scripts copied to a root-owned
    // scratch directory with the documented modes, the config pointed at them.
    let s = Scratch::new("pkg-sample");
    let examples = Path::new("/usr/share/doc/quiesce/examples");
    let pre = s.write(
        "scripts/pre-script.sh",
        fs::read(examples.join("pre-script.sh")).unwrap(),
        0o700,
    );
    let post = s.write(
        "scripts/post-script.sh",
        fs::read(examples.join("post-script.sh")).unwrap(),
        0o700,
    );
    let mut sample: Value = serde_json::from_slice(
        &fs::read(examples.join("VMSnapshotScriptPluginConfig.json")).unwrap(),
    )
    .unwrap();
    sample["preScriptLocation"] = json!(pre);
    sample["postScriptLocation"] = json!(post);
    let config = s.write(
        "VMSnapshotScriptPluginConfig.json",
        sample.to_string(),
        0o600,
    );
    let o = installed_quiesce(
        &["check", "--json", "--config", config.to_str().unwrap()],
        &s,
    );
    let v = status_json(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(v["result"], "success");

    // The installed policy conffile passes its trust check and is in force.
    let o = installed_quiesce(&["audit", "--json"], &s);
    let v = status_json(&o);
    assert!(
        !error_names(&v).contains(&"IncorrectPluginhostFile".to_string()),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("/etc/quiesce/policy.json"),
        "{}",
        text(&o.stderr)
    );

    // Bridge mode end to end through the installed hook and the default
    // paths: quiesce's own config in /etc/quiesce, scripts in scratch.
    let marker = s.path("ran");
    let own_pre = s.write(
        "own/pre.sh",
        format!(
            "#!/bin/sh\necho \"pre cwd=$(pwd)\" >> {}\n",
            marker.display()
        ),
        0o700,
    );
    let own_post = s.write(
        "own/post.sh",
        format!(
            "#!/bin/sh\necho \"post cwd=$(pwd)\" >> {}\n",
            marker.display()
        ),
        0o700,
    );
    let own = json!({
        "preScriptLocation": own_pre, "postScriptLocation": own_post,
        "timeoutInSeconds": 10
    });
    fs::write(OWN_CONFIG, own.to_string()).unwrap();
    fs::set_permissions(OWN_CONFIG, fs::Permissions::from_mode(0o600)).unwrap();
    // The extension's config, pointing at the hook as the README says.
    let ext = s.write(
        "azure/VMSnapshotScriptPluginConfig.json",
        json!({
            "pluginName": "ScriptRunner",
            "preScriptLocation": HOOK, "preScriptParams": ["pre"],
            "postScriptLocation": HOOK, "postScriptParams": ["post"],
            "timeoutInSeconds": 60
        })
        .to_string(),
        0o600,
    );
    // The installed hook passes quiesce's own trust checks as a script.
    let o = installed_quiesce(&["check", "--json", "--config", ext.to_str().unwrap()], &s);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let o = run_hook(Path::new(HOOK), &["pre"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run_hook(Path::new(HOOK), &["post"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        "pre cwd=/\npost cwd=/\n"
    );
    let o = run_hook(Path::new(HOOK), &["freeze"], &[]);
    assert_eq!(o.status.code(), Some(64));

    // A loop (quiesce's own config pointing back at the hook) is refused
    // by `check` run on the extension's config.
    fs::write(
        OWN_CONFIG,
        json!({"preScriptLocation": HOOK, "postScriptLocation": own_post}).to_string(),
    )
    .unwrap();
    let o = installed_quiesce(&["check", "--json", "--config", ext.to_str().unwrap()], &s);
    let v = status_json(&o);
    assert_eq!(
        (o.status.code(), error_names(&v)),
        (Some(2), vec!["IncorrectJSONConfigFile".to_string()]),
        "check must refuse a bridge loop (is quiesce::job::bridge::check wired into `quiesce check`?)\n{}",
        text(&o.stderr)
    );
    fs::remove_file(OWN_CONFIG).unwrap();

    // Purge: nothing of the package is left, /etc/azure never changed.
    let o = run(Command::new("dpkg").args(["--purge", "quiesce"]));
    assert!(o.status.success(), "dpkg --purge: {}", text(&o.stderr));
    assert!(!installed());
    for path in expected(true)
        .keys()
        .map(String::as_str)
        .chain(OWN_DIRS.iter().copied())
        .chain(RUNTIME_DIRS.iter().copied())
    {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    drop(guard);
    assert_eq!(
        tree_state(Path::new("/etc/azure")),
        azure_before,
        "/etc/azure changed"
    );
}

/// The boot-time recovery unit (SPEC §6.6) is valid: `systemd-analyze
/// verify` on it, with the installed binary's path present under a scratch
/// root (verify checks that ExecStart names an executable).
#[test]
fn recover_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let s = Scratch::new("unit");
    let sbin = s.mkdir("root/usr/sbin", 0o755);
    std::fs::copy(env!("CARGO_BIN_EXE_quiesce"), sbin.join("quiesce")).unwrap();
    let units = s.mkdir("root/etc/systemd/system", 0o755);
    let unit = units.join("quiesce-recover.service");
    std::fs::copy(repo().join("packaging/quiesce-recover.service"), &unit).unwrap();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", s.path("root").display()))
        .arg(&unit));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let body = std::fs::read_to_string(&unit).unwrap();
    // It waits for the state directory's filesystem, retries a post-script
    // that fails (its database not up yet) instead of dropping it, and
    // never holds up the boot while it does (SPEC §6.6).
    for line in [
        "Type=exec",
        "After=local-fs.target",
        "RequiresMountsFor=/var/lib/quiesce",
        "ExecStart=/usr/sbin/quiesce recover --retry",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(body.contains(line), "unit lacks {line}");
    }
}

// ------------------------------------------------- removal with pending posts

/// packaging/before-remove (the .deb's prerm and the .rpm's %preun on
/// removal, issue 25) against the built binary and a scratch state
/// directory: nothing pending, it says nothing; a post-script awaiting its
/// `post` refuses the removal, naming the record and the way out; with
/// QUIESCE_REMOVE_WITH_PENDING=yes it goes on, loudly, keeping the record;
/// a due post-script is run first, and then the removal goes on.
#[test]
fn before_remove_runs_what_is_due_and_refuses_to_drop_the_rest() {
    require_root!();
    let s = Setup::new("pkg-pending");
    s.post_logs_recovery("");
    // The post guard a separate `pre` leaves armed: ended with the test.
    let _guards = common::MarkerGuard(s.config.display().to_string());
    let state = s.s.path("state");
    let helper = |env: Option<&str>| {
        let mut cmd = Command::new("sh");
        cmd.arg(repo().join("packaging/before-remove"))
            .arg(&state)
            .arg(env!("CARGO_BIN_EXE_quiesce"))
            .args(common::private_args(&s.s.dir).into_iter().skip(4));
        cmd.arg("--run-dir").arg(s.s.path("run"));
        if let Some(v) = env {
            cmd.env("QUIESCE_REMOVE_WITH_PENDING", v);
        }
        run(&mut cmd)
    };
    let records = || common::pending_records(&state);

    let o = helper(None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "nothing pending, nothing said");

    assert_eq!(s.quiesce(&["pre"]).code, 0);
    assert_eq!(records().len(), 1);
    let o = helper(None);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("REFUSING TO BE REMOVED")
            && err.contains(&records()[0])
            && err.contains("QUIESCE_REMOVE_WITH_PENDING=yes")
            && err.contains("quiesce post"),
        "{err}"
    );
    assert_eq!(records().len(), 1, "the record is kept");
    assert_eq!(s.scripts_ran(), "pre\n", "its post is not due yet");

    let o = helper(Some("yes"));
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("WARNING") && err.contains(&records()[0]),
        "{err}"
    );
    assert_eq!(records().len(), 1, "forced: the record is still kept");

    // Settle it; then a pre whose post is due in a second, its guard gone
    // (as when the machine went down): the removal runs it first.
    assert_eq!(s.quiesce(&["post"]).code, 0);
    assert!(records().is_empty());
    assert_eq!(s.quiesce(&["--post-due", "1", "pre"]).code, 0);
    for pid in common::pids_with(&s.config.display().to_string()) {
        common::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = helper(None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(records().is_empty(), "{}", text(&o.stderr));
    assert!(
        s.scripts_ran().ends_with("pre\npost post-overdue\n"),
        "{}",
        s.scripts_ran()
    );
}

/// This machine's root seen through an overlay, in a mount namespace of its
/// own: dpkg and rpm install, refuse and purge there for real, and nothing
/// of it reaches the machine (the changes land in a scratch upper layer).
/// /proc, a few /dev nodes and tmpfs /run and /tmp are mounted inside; no
/// syslog or journal socket is there, so the trail goes nowhere.
struct Overlay {
    /// Holds the upper layer; removed once the namespace is gone.
    _s: Scratch,
    holder: std::process::Child,
    root: PathBuf,
}

impl Overlay {
    fn new(tag: &str) -> Overlay {
        let s = Scratch::new(tag);
        for d in ["upper", "work", "root"] {
            fs::create_dir(s.path(d)).unwrap();
        }
        let root = s.path("root");
        let script = r#"set -e
r=$1
mount -t overlay overlay -o lowerdir=/,upperdir=$2,workdir=$3 "$r"
mount -t proc proc "$r/proc"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for d in null zero full random urandom; do touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
# The checkout (its packages, the README's files) stays visible where it
# is, also when it lives under /tmp or /run, which the tmpfs mounts hide.
mkdir -p "$r$4"
mount --bind "$4" "$r$4"
touch "$r/run/overlay-ready"
exec sleep 2147483647"#;
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&root)
            .arg(s.path("upper"))
            .arg(s.path("work"))
            .arg(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let o = Overlay {
            _s: s,
            holder,
            root,
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !o.inside("/run/overlay-ready").exists() {
            assert!(std::time::Instant::now() < end, "overlay root not ready");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        o
    }

    /// `path` (absolute inside the overlay root) from outside.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(self.root.strip_prefix("/").unwrap())
            .join(path.trim_start_matches('/'))
    }

    /// Runs `args` chrooted into the overlay root, with `env`.
    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg("chroot")
            .arg(&self.root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    fn records(&self) -> Vec<String> {
        fs::read_dir(self.inside("/var/lib/quiesce"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("pending-post-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An application inside, and a `pre` run of it (its post now awaits a
    /// `post`: a pending record). Returns what finds its post guard.
    fn pending_pre(&self, tag: &str) -> common::MarkerGuard {
        let dir = format!("/etc/{tag}-{}", std::process::id());
        fs::create_dir(self.inside(&dir)).unwrap();
        fs::set_permissions(self.inside(&dir), fs::Permissions::from_mode(0o700)).unwrap();
        for (name, body) in [
            ("pre.sh", "#!/bin/sh\nexit 0\n"),
            ("post.sh", "#!/bin/sh\nexit 0\n"),
        ] {
            let p = self.inside(&format!("{dir}/{name}"));
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let config = format!("{dir}/c.json");
        let c = self.inside(&config);
        fs::write(
            &c,
            json!({"preScriptLocation": format!("{dir}/pre.sh"),
                   "postScriptLocation": format!("{dir}/post.sh")})
            .to_string(),
        )
        .unwrap();
        fs::set_permissions(&c, fs::Permissions::from_mode(0o600)).unwrap();
        let o = self.run(&[], &["/usr/sbin/quiesce", "--config", &config, "pre"]);
        assert!(o.status.success(), "pre: {}", text(&o.stderr));
        assert_eq!(self.records().len(), 1);
        common::MarkerGuard(config)
    }
}

impl Overlay {
    /// Kills every process in the overlay's mount namespace but its holder
    /// (the post guards a `pre` leaves armed), found by the namespace, not
    /// by name: nothing outside it is touched.
    fn kill_inside(&self) {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let ours = ns(&self.holder.id().to_string());
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(pid) = name.parse::<i32>() else {
                continue;
            };
            if pid as u32 != self.holder.id() && ours.is_some() && ns(&name) == ours {
                common::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.kill_inside();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The ```sh block of README.md that follows `after`.
fn readme_block(after: &str) -> String {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let rest = readme
        .split(after)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {after:?}"));
    let block = rest.split("```sh\n").nth(1).expect("a ```sh block");
    block.split("```").next().unwrap().to_string()
}

/// An operator following only the README, on the installed package: the
/// single config's sample, the PostgreSQL sample and the apps.d set are
/// installed by the README's own commands and pass `check`; with no
/// PostgreSQL server running, `check` still passes (it runs nothing, as the
/// README says) and `pre` fails with 300, showing the client's error and
/// naming last-pre.json. In an overlay root. (issue 25)
#[test]
fn the_readme_set_ups_work_as_written() {
    let Some(p) = packages() else { return };
    require_root!("it mounts an overlay root in a mount namespace");
    let o = Overlay::new("pkg-readme");
    let r = o.run(
        &[],
        &["dpkg", "-i", "--no-triggers", p.deb.to_str().unwrap()],
    );
    assert!(r.status.success(), "dpkg -i: {}", text(&r.stderr));
    let src = repo().display().to_string();
    let sh = |block: &str| {
        let script = format!("set -e\ncd '{src}'\n{block}");
        o.run(&[], &["sh", "-c", &script])
    };
    let quiet = [
        "--syslog-socket",
        "/nonexistent",
        "--journal-socket",
        "/nonexistent",
    ];

    let r = sh(&readme_block(
        "Installed as the single config (for PostgreSQL",
    ));
    assert!(
        r.status.success(),
        "PostgreSQL set-up:\n{}",
        text(&r.stderr)
    );
    let mut pre = vec!["/usr/sbin/quiesce"];
    pre.extend(quiet);
    pre.extend(["pre", "--json"]);
    let r = o.run(&[], &pre);
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pre-script stderr, last")
            && err.contains("  | pre-script (PostgreSQL): error:")
            && err.contains("Pre-ScriptExecutionFailed (300)")
            && err.contains("its whole tail in /var/lib/quiesce/last-pre.json"),
        "{err}"
    );
    let mut post = vec!["/usr/sbin/quiesce"];
    post.extend(quiet);
    post.push("post");
    o.run(&[], &post);

    let r = sh(&readme_block("**Set-up with one application**"));
    assert!(r.status.success(), "one application:\n{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("a snapshot would be application-consistent"));

    let r = sh(&readme_block("**Set-up with `apps.d`.**"));
    let err = text(&r.stderr);
    assert!(r.status.success(), "apps.d:\n{err}");
    assert!(
        err.contains("applications (2) from the apps directory /etc/quiesce/apps.d"),
        "{err}"
    );
}

/// dpkg -r refuses while a post-script is pending; forced, it removes the
/// binary with a loud warning and keeps the record; dpkg -P keeps it too,
/// and says so. The .rpm does what the .deb does. In an overlay root: the
/// machine's own packages are untouched. (issue 25)
#[test]
fn removing_the_packages_never_drops_a_pending_post_script_silently() {
    let Some(p) = packages() else { return };
    require_root!("it mounts an overlay root in a mount namespace");
    if !have("rpm", "rpm") {
        return;
    }
    let o = Overlay::new("pkg-overlay");
    let deb = p.deb.to_str().unwrap();
    let r = o.run(&[], &["dpkg", "-i", "--no-triggers", deb]);
    assert!(r.status.success(), "dpkg -i: {}", text(&r.stderr));
    let _guard = o.pending_pre("qdeb");
    let status = || {
        text(
            &o.run(&[], &["dpkg-query", "-W", "-f=${Status}", "quiesce"])
                .stdout,
        )
    };

    let r = o.run(&[], &["dpkg", "-r", "quiesce"]);
    let err = text(&r.stderr);
    assert!(!r.status.success(), "dpkg -r went ahead: {err}");
    assert!(
        err.contains("REFUSING TO BE REMOVED") && err.contains(&o.records()[0]),
        "{err}"
    );
    // dpkg marks it for removal ("deinstall"), but it stays installed.
    assert!(status().ends_with(" ok installed"), "{}: {err}", status());
    assert!(o.inside("/usr/sbin/quiesce").is_file());

    let force = [("QUIESCE_REMOVE_WITH_PENDING", "yes")];
    let r = o.run(&force, &["dpkg", "-r", "quiesce"]);
    let err = text(&r.stderr);
    assert!(r.status.success(), "forced dpkg -r: {err}");
    assert!(
        err.contains("WARNING: removing quiesce with 1 post-script(s) still pending"),
        "{err}"
    );
    assert!(!o.inside("/usr/sbin/quiesce").exists());
    assert_eq!(o.records().len(), 1, "remove keeps the record");

    let r = o.run(&[], &["dpkg", "-P", "quiesce"]);
    let err = text(&r.stderr);
    assert!(r.status.success(), "dpkg -P: {err}");
    assert!(err.contains("purge keeps /var/lib/quiesce"), "{err}");
    assert_eq!(o.records().len(), 1, "purge keeps the record");
    assert!(fs::read_dir(o.inside("/var/lib/quiesce"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("last-")));
    fs::remove_dir_all(o.inside("/var/lib/quiesce")).unwrap();

    // The RPM: the same refusal, the same way past it.
    let rpm = p.rpm.to_str().unwrap();
    let r = o.run(&[], &["rpm", "-i", "--nodeps", rpm]);
    assert!(r.status.success(), "rpm -i: {}", text(&r.stderr));
    let _guard = o.pending_pre("qrpm");
    let r = o.run(&[], &["rpm", "-e", "quiesce"]);
    let err = text(&r.stderr);
    assert!(!r.status.success(), "rpm -e went ahead: {err}");
    assert!(err.contains("REFUSING TO BE REMOVED"), "{err}");
    assert!(o.inside("/usr/sbin/quiesce").is_file());
    let r = o.run(&force, &["rpm", "-e", "quiesce"]);
    let err = text(&r.stderr);
    assert!(r.status.success(), "forced rpm -e: {err}");
    assert!(err.contains("WARNING"), "{err}");
    assert!(!o.inside("/usr/sbin/quiesce").exists());
    assert_eq!(o.records().len(), 1, "rpm -e keeps the record");
}

/// Benchmarks, like tests, keep a run's state in their scratch directory:
/// every place scripts/bench.sh and its helpers build a quiesce command
/// line names the state, metrics and journal options (a bench run once
/// left 52 pending post-script records in the machine's /var/lib/quiesce,
/// with configs in a scratch directory it then deleted). (issue 25)
#[test]
fn the_benchmarks_keep_their_state_in_their_scratch_directory() {
    for (file, builder) in [
        ("scripts/bench.sh", "quiesce_argv()"),
        ("scripts/bench/freeze.py", "def isolated(run_dir)"),
        ("scripts/bench/presync.py", "def isolated(run_dir)"),
        ("scripts/bench/stall.py", "def isolated(args, command)"),
        ("scripts/bench/group.py", "def isolated(q, d, mount, cmd"),
    ] {
        let text = fs::read_to_string(repo().join(file)).unwrap();
        let body = text
            .split(builder)
            .nth(1)
            .unwrap_or_else(|| panic!("{file} has no {builder}"));
        let body = &body[..body.find("\n}").or(body.find("\n\n")).unwrap()];
        for opt in [
            "--state-dir",
            "--metrics-dir",
            "--journal-socket",
            "--run-dir",
        ] {
            assert!(body.contains(opt), "{file}: {builder} lacks {opt}");
        }
        // Every quiesce command line is built by it.
        let uses = text.matches("isolated(").count() + text.matches("QARGV[@]").count();
        assert!(uses >= 2, "{file}: quiesce run without {builder}?");
    }
}
