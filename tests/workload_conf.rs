//! The extension's workload.conf beside quiesce's own applications (SPEC
//! §3.2), without a database server: one more application, last; a
//! template that names no workload is none; what it names wrong is its own
//! named error, and the other application is unaffected. (Real servers:
//! tests/databases.rs.)

mod common;

use common::{entry_names, private_args, quiesce_bin, Run, Scratch};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A script application whose scripts exit 0.
fn script_app(s: &Scratch) -> PathBuf {
    let pre = s.write("app/pre.sh", "#!/bin/sh\nexit 0\n", 0o700);
    let post = s.write("app/post.sh", "#!/bin/sh\nexit 0\n", 0o700);
    s.write(
        "app.json",
        format!(
            r#"{{"preScriptLocation": "{}", "postScriptLocation": "{}", "appName": "app"}}"#,
            pre.display(),
            post.display()
        ),
        0o600,
    )
}

fn check(s: &Scratch, config: &Path, wc: &Path) -> (Run, Value) {
    let run = Run::from(
        quiesce_bin()
            .arg("--config")
            .arg(config)
            .arg("--host-config")
            .arg(s.path("no-host.conf"))
            .arg("--workload-conf")
            .arg(wc)
            .args(private_args(&s.dir))
            .args(["check", "--json"])
            .output()
            .unwrap(),
    );
    let v = run.json();
    (run, v)
}

#[test]
fn workload_conf_is_one_more_application_with_its_own_named_errors() {
    require_root!();
    let s = Scratch::new("wlconf");
    let app = script_app(&s);

    // The extension's empty template: no workload, no application.
    let wc = s.write(
        "workload.conf",
        "[workload]\n#workload_name valid values- mysql, oracle, mariadb, postgres\nworkload_name = \ncommand_path = \ncredString = \nipc_folder = \ntimeout = \nlinux_user = \n",
        0o600,
    );
    let (run, v) = check(&s, &app, &wc);
    assert_eq!(entry_names(&v, "applications"), ["app"], "{}", run.stderr);
    assert!(run.stderr.contains("names no workload"), "{}", run.stderr);

    // oracle: one more application, last, refused by name (503); the
    // script application is checked as before.
    s.write(
        "workload.conf",
        "[workload]\nworkload_name = oracle\ncredString = oracle\n",
        0o600,
    );
    let (run, v) = check(&s, &app, &wc);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(entry_names(&v, "applications").len(), 2, "{v}");
    assert_eq!(entry_names(&v, "applications")[0], "app", "{v}");
    assert_eq!(
        entry_names(&v, "errors"),
        ["WorkloadInvalidName"],
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("(503)"), "{}", run.stderr);
    assert_eq!(v["applications"][0]["errors"], serde_json::json!([]), "{v}");

    // A server that is not there: the probe (sandboxed, like a script)
    // says so by name (506), naming the client's own message.
    s.write(
        "workload.conf",
        "[workload]\nworkload_name = mariadb\ncredString = -u root -S /nonexistent/mysqld.sock\n",
        0o600,
    );
    let (run, v) = check(&s, &app, &wc);
    assert_eq!(
        entry_names(&v, "errors"),
        ["WorkloadConnectionError"],
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/nonexistent/mysqld.sock"),
        "{}",
        run.stderr
    );
    assert_eq!(
        entry_names(&v, "applications")[1],
        "workload.conf (mariadb)",
        "{v}"
    );

    // World-writable: refused before it is read (501).
    std::fs::set_permissions(&wc, std::os::unix::fs::PermissionsExt::from_mode(0o602)).unwrap();
    let (run, v) = check(&s, &app, &wc);
    assert_eq!(
        entry_names(&v, "errors"),
        ["WorkloadConfigError"],
        "{}",
        run.stderr
    );
}
