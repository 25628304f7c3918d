//! A script's interpreter is trust-checked like the script (SPEC.md §4,
//! issue 26 item 1): the `#!` program at every level, `/bin/sh` for a
//! script run through the shell, and for `#!/usr/bin/env NAME` the program
//! found on the scripts' PATH and every PATH directory searched before it.
//! Each test shows what an operator sees — `check`'s exit, error and
//! lines, and that `pre` runs nothing — and that the same set-up with a
//! trustworthy interpreter runs, so the failure is the interpreter's.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{chown, Run, Setup, NOBODY};
use serde_json::{json, Value};

/// `staff` on Debian: the non-root group of the issue's `/usr/local/sbin`.
const STAFF: u32 = 50;

fn python3() -> Option<PathBuf> {
    let p = Path::new("/usr/bin/python3");
    if p.exists() {
        Some(p.to_path_buf())
    } else {
        eprintln!("SKIPPED: /usr/bin/python3 missing (scripts/test.sh installs python3)");
        None
    }
}

fn write_pre(s: &Setup, text: &str) {
    fs::write(&s.pre, text).unwrap();
    fs::set_permissions(&s.pre, fs::Permissions::from_mode(0o700)).unwrap();
}

fn pin_pre(s: &Setup) {
    use sha2::{Digest, Sha256};
    let sha = quiesce::integrity::hex(&Sha256::digest(fs::read(&s.pre).unwrap()));
    s.config_with(|m| {
        m.insert("preScriptSha256".into(), json!(sha));
    });
}

fn ctx(run: &Run) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    )
}

fn errors(run: &Run) -> Vec<(String, Option<u64>)> {
    run.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["code"].as_u64()))
        .collect()
}

fn first_message(run: &Run) -> String {
    run.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn interpreters(v: &Value) -> Vec<Value> {
    v["applications"][0]["preScript"]["interpreters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const E306: (&str, Option<u64>) = ("InsufficientPermissionforPre-Script", Some(306));
const E302: (&str, Option<u64>) = ("Pre-ScriptNotFound", Some(302));

fn want(e: (&str, Option<u64>)) -> Vec<(String, Option<u64>)> {
    vec![(e.0.to_string(), e.1)]
}

/// `check` passes and `pre` runs the script (the set-up is sound).
fn assert_runs(s: &Setup, what: &str) {
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(check.code, 0, "{what}: {}", ctx(&check));
    let before = s.scripts_ran().lines().count();
    let pre = s.quiesce(&["pre", "--json"]);
    assert_eq!(pre.code, 0, "{what}: {}", ctx(&pre));
    assert_eq!(
        s.scripts_ran().lines().count(),
        before + 1,
        "{what}: the pre-script did not run"
    );
}

/// `check` exits 2 with `code` naming `names` (every one), and `pre`
/// refuses with the same error and runs nothing.
fn assert_refused(s: &Setup, code: (&str, Option<u64>), names: &[&str], what: &str) {
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(check.code, 2, "{what}: {}", ctx(&check));
    assert_eq!(errors(&check), want(code), "{what}: {}", ctx(&check));
    let msg = first_message(&check);
    for n in names {
        assert!(msg.contains(n), "{what}: {msg:?} does not name {n:?}");
        assert!(
            check.stderr.contains(n) && check.stderr.contains("action:"),
            "{what}: stderr does not name {n}:\n{}",
            check.stderr
        );
    }
    assert!(
        check.stderr.contains("would NOT be application-consistent"),
        "{}",
        check.stderr
    );
    let before = s.scripts_ran();
    let pre = s.quiesce(&["pre", "--json"]);
    assert_eq!(pre.code, 2, "{what}: {}", ctx(&pre));
    assert_eq!(errors(&pre), want(code), "{what}: {}", ctx(&pre));
    assert_eq!(s.scripts_ran(), before, "{what}: pre ran something");
}

/// A python script whose `#!` names `interp`; it appends "pre" to the marker.
fn python_pre(s: &Setup, interp: &str) {
    write_pre(
        s,
        &format!(
            "#!{interp}\nopen({:?}, 'a').write('pre\\n')\n",
            s.marker.display().to_string()
        ),
    );
}

/// The issue's case: `#!/opt/app/venv/bin/python3` where the venv belongs to
/// the application's user. The user could rewrite "python3" and `pre` would
/// run it as root; a pin on the script does not change that.
#[test]
fn an_interpreter_in_a_directory_a_user_owns_is_306_and_nothing_runs() {
    require_root!();
    let Some(py) = python3() else { return };
    let s = Setup::new("interp-venv");
    let bin = s.s.mkdir("opt/app/venv/bin", 0o755);
    let venv = bin.parent().unwrap().to_path_buf();
    let interp = bin.join("python3");
    // What `python3 -m venv` makes: a link to the system's interpreter.
    symlink(&py, &interp).unwrap();
    python_pre(&s, &interp.display().to_string());

    assert_runs(&s, "root-owned venv");
    let v = s.quiesce(&["check", "--json"]).json();
    let list = interpreters(&v);
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["path"], interp.display().to_string());
    assert_eq!(
        list[0]["resolved"],
        fs::canonicalize(&py).unwrap().display().to_string()
    );
    assert!(list[0]["namedBy"].as_str().unwrap().contains("#! line of"));
    let human = s.quiesce(&["check"]);
    assert!(
        human
            .stderr
            .contains(&format!("pre-script interpreter ok: {}", interp.display())),
        "{}",
        human.stderr
    );

    for dir in [&venv, &bin] {
        chown(dir, NOBODY);
    }
    let named = [interp.display().to_string(), "uid 65534".to_string()];
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    assert_refused(&s, E306, &named, "venv owned by nobody");
    pin_pre(&s);
    assert_refused(&s, E306, &named, "pinned, venv owned by nobody");

    // As resolved: the venv is root's again, but its python3 links into a
    // directory the user owns.
    for dir in [&venv, &bin] {
        chown(dir, 0);
    }
    let home = s.s.mkdir("home/alice", 0o755);
    chown(&home, NOBODY);
    symlink(&py, home.join("python3")).unwrap();
    fs::remove_file(&interp).unwrap();
    symlink(home.join("python3"), &interp).unwrap();
    let home_s = home.display().to_string();
    assert_refused(
        &s,
        E306,
        &[&interp.display().to_string(), &home_s, "uid 65534"],
        "link into a user's directory",
    );
}

/// `unshare` wrapped around quiesce: a private mount namespace in which a
/// scratch directory (root:staff, `mode`) is bind-mounted over
/// `/usr/local/bin`, which the scripts' PATH searches before `/usr/bin`. No
/// real system directory is changed; the mount dies with the namespace.
fn with_usr_local_bin(s: &Setup, mode: u32, args: &[&str]) -> Run {
    let dir = s.s.mkdir("usr-local-bin", mode);
    std::os::unix::fs::chown(&dir, Some(0), Some(STAFF)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /usr/local/bin && shift && exec \"$@\"")
        .arg("sh")
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_quiesce"))
        .args(s.global_args())
        .args(args)
        .output()
        .expect("unshare (util-linux) runs");
    Run::from(out)
}

/// The issue's second case: `#!/usr/bin/env python3` with a PATH directory
/// searched before python3's that a non-root group can write (`/usr/local/sbin`
/// `root:staff 2775` on older Debian): a python3 put there would run as root.
#[test]
fn an_env_interpreter_behind_a_group_writable_path_directory_is_306() {
    require_root!("bind-mounts in a private mount namespace");
    if python3().is_none() {
        return;
    }
    let s = Setup::new("interp-env-path");
    python_pre(&s, "/usr/bin/env python3");
    assert_runs(&s, "env python3");
    let v = s.quiesce(&["check", "--json"]).json();
    let list = interpreters(&v);
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(list[0]["path"], "/usr/bin/env");
    assert_eq!(list[1]["path"], "/usr/bin/python3");
    assert_eq!(
        list[1]["shadowing"],
        json!(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin"])
    );

    // The namespace itself changes nothing: a 0755 directory there passes.
    let ok = with_usr_local_bin(&s, 0o755, &["check", "--json"]);
    assert_eq!(ok.code, 0, "{}", ctx(&ok));

    let check = with_usr_local_bin(&s, 0o2775, &["check", "--json"]);
    assert_eq!(check.code, 2, "{}", ctx(&check));
    assert_eq!(errors(&check), want(E306), "{}", ctx(&check));
    let msg = first_message(&check);
    for n in [
        "/usr/local/bin",
        "/usr/bin/python3",
        "2775",
        "python3 put there",
    ] {
        assert!(msg.contains(n), "{msg:?} does not name {n:?}");
    }
    pin_pre(&s);
    let pre = with_usr_local_bin(&s, 0o2775, &["pre", "--json"]);
    assert_eq!(pre.code, 2, "{}", ctx(&pre));
    assert_eq!(errors(&pre), want(E306), "{}", ctx(&pre));
    assert_eq!(s.scripts_ran(), "pre\n", "pre ran the script");
}

/// An interpreter that is itself a `#!` script has its own interpreter
/// checked: the wrapper is root's, the shell it names is in a user's
/// directory.
#[test]
fn a_nested_interpreter_is_checked_at_every_level() {
    require_root!();
    let s = Setup::new("interp-nested");
    let tools = s.s.mkdir("opt/tools", 0o755);
    let sh = tools.join("sh");
    symlink("/bin/sh", &sh).unwrap();
    let wrapper = s.s.write(
        "opt/wrap/run",
        format!("#!{}\nexec /bin/sh \"$@\"\n", sh.display()),
        0o755,
    );
    write_pre(
        &s,
        &format!(
            "#!{}\necho pre >> '{}'\n",
            wrapper.display(),
            s.marker.display()
        ),
    );
    assert_runs(&s, "nested, all root's");
    let list = interpreters(&s.quiesce(&["check", "--json"]).json());
    let paths: Vec<&str> = list.iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [wrapper.display().to_string(), sh.display().to_string()]
    );
    assert_eq!(
        list[1]["namedBy"],
        format!("#! line of {}", wrapper.display())
    );

    chown(&tools, NOBODY);
    assert_refused(
        &s,
        E306,
        &[
            &sh.display().to_string(),
            &format!("#! line of {}", wrapper.display()),
            "uid 65534",
        ],
        "second level in a user's directory",
    );
}

/// The kernel follows five `#!` files in one exec (the script and four
/// interpreters that are scripts); the check agrees, exactly.
#[test]
fn nesting_is_refused_where_the_kernel_refuses_it() {
    require_root!();
    let s = Setup::new("interp-depth");
    // i0 is a shell script that runs the script past the chain's files
    // the kernel put before it in argv; i<n> is "#!i<n-1>".
    let mut prev = s.s.write(
        "chain/i0",
        "#!/bin/sh\nwhile case \"$1\" in */chain/i*) true;; *) false;; esac; do shift; done\nexec /bin/sh \"$@\"\n",
        0o755,
    );
    let mut chain = vec![prev.clone()];
    for n in 1..=4 {
        prev = s.s.write(
            &format!("chain/i{n}"),
            format!("#!{}\n", prev.display()),
            0o755,
        );
        chain.push(prev.clone());
    }
    let body = format!("echo pre >> '{}'\n", s.marker.display());
    // script -> i3 -> i2 -> i1 -> i0 -> /bin/sh: five #! files.
    write_pre(&s, &format!("#!{}\n{body}", chain[3].display()));
    assert_runs(&s, "five #! files");
    let kernel = Command::new(&s.pre).output();
    assert!(kernel.is_ok(), "the kernel refused five: {kernel:?}");
    // script -> i4 -> ... -> i0: six.
    write_pre(&s, &format!("#!{}\n{body}", chain[4].display()));
    let kernel = Command::new(&s.pre).output().unwrap_err();
    assert_eq!(kernel.raw_os_error(), Some(libc::ELOOP), "{kernel}");
    assert_refused(&s, E302, &["nested deeper", "ELOOP"], "six #! files");
}

#[test]
fn a_missing_interpreter_is_the_scripts_not_found_error() {
    require_root!();
    let s = Setup::new("interp-missing");
    write_pre(&s, "#!/opt/nowhere/python9\nprint(1)\n");
    assert_refused(
        &s,
        E302,
        &["/opt/nowhere/python9", "does not exist"],
        "missing interpreter",
    );
    // A CRLF file names "/bin/sh\r", as the kernel reads it.
    write_pre(&s, "#!/bin/sh\r\necho pre\r\n");
    assert_refused(&s, E302, &["/bin/sh\\r", "CRLF"], "CRLF #! line");
    write_pre(&s, "#!/usr/bin/env no-such-program-quiesce\n");
    assert_refused(
        &s,
        E302,
        &["no-such-program-quiesce", "/usr/local/sbin:"],
        "env finds nothing",
    );
}

/// `env` forms: `NAME` and `-S NAME ARGS` run; the whole argument without
/// `-S` is one name (what env would look for); other forms are refused.
#[test]
fn env_forms_run_as_env_runs_them_or_are_refused() {
    require_root!();
    let s = Setup::new("interp-env-forms");
    let body = format!("echo pre >> '{}'\n", s.marker.display());
    for line in ["/usr/bin/env bash", "/usr/bin/env -S bash -eu", "/bin/sh"] {
        write_pre(&s, &format!("#!{line}\n{body}"));
        assert_runs(&s, line);
    }
    write_pre(&s, &format!("#!/usr/bin/env bash -eu\n{body}"));
    assert_refused(&s, E302, &["\"bash -eu\"", "-S"], "no -S");
    write_pre(&s, &format!("#!/usr/bin/env -S PATH=/tmp bash\n{body}"));
    assert_refused(&s, E306, &["VAR=value", "absolute path"], "assignment");
}

/// A 0600 script runs as `/bin/sh PATH`: `/bin/sh` is its interpreter, its
/// `#!` line a comment; `check` says so.
#[test]
fn a_script_without_the_execute_bit_has_bin_sh_checked() {
    require_root!();
    let s = Setup::new("interp-sh");
    write_pre(
        &s,
        &format!(
            "#!/opt/nowhere/python9\necho pre >> '{}'\n",
            s.marker.display()
        ),
    );
    fs::set_permissions(&s.pre, fs::Permissions::from_mode(0o600)).unwrap();
    assert_runs(&s, "0600 through /bin/sh");
    let list = interpreters(&s.quiesce(&["check", "--json"]).json());
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["path"], "/bin/sh");
    assert_eq!(
        list[0]["resolved"],
        fs::canonicalize("/bin/sh").unwrap().display().to_string()
    );
}

/// The post-script's interpreter maps to the post-script's rows (307, 303),
/// in the extension's pre-check order after the pre-script's.
#[test]
fn a_post_scripts_interpreter_is_307_or_303() {
    require_root!();
    let s = Setup::new("interp-post");
    let tools = s.s.mkdir("opt/tools", 0o755);
    symlink("/bin/sh", tools.join("sh")).unwrap();
    chown(&tools, NOBODY);
    fs::write(&s.post, format!("#!{}/sh\necho post\n", tools.display())).unwrap();
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(check.code, 2, "{}", ctx(&check));
    assert_eq!(
        errors(&check),
        want(("InsufficientPermissionforPost-Script", Some(307)))
    );
    write_pre(&s, "#!/opt/nowhere/sh\n");
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(
        errors(&check),
        vec![
            ("Pre-ScriptNotFound".to_string(), Some(302)),
            (
                "InsufficientPermissionforPost-Script".to_string(),
                Some(307)
            ),
        ],
        "{}",
        ctx(&check)
    );
    fs::write(&s.post, "#!/opt/nowhere/sh\n").unwrap();
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(
        errors(&check)[1],
        ("Post-ScriptNotFound".to_string(), Some(303))
    );
}
