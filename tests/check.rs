//! `quiesce check` against every row of SPEC.md §3 (config) and §4 (trust
//! checks, error table), with real files, modes, owners and symlinks. Each
//! case asserts what an operator sees: exit code, the errors' names and codes
//! in pre-check order, the warnings, and that no script ran.

mod common;

use common::{chown, Setup, NOBODY};
use serde_json::json;
use std::fs;
use std::os::unix::fs::PermissionsExt;

struct Case {
    name: &'static str,
    arrange: fn(&Setup),
    exit: i32,
    errors: &'static [(&'static str, Option<u64>)],
    /// A substring one warning must contain.
    warning: Option<&'static str>,
    /// A substring the first error's message must contain.
    message: Option<&'static str>,
}

const OK: &[(&str, Option<u64>)] = &[];
const E305: &[(&str, Option<u64>)] = &[("IncorrectJSONConfigFile", Some(305))];
const E302: &[(&str, Option<u64>)] = &[("Pre-ScriptNotFound", Some(302))];
const E303: &[(&str, Option<u64>)] = &[("Post-ScriptNotFound", Some(303))];
const E306: &[(&str, Option<u64>)] = &[("InsufficientPermissionforPre-Script", Some(306))];
const E307: &[(&str, Option<u64>)] = &[("InsufficientPermissionforPost-Script", Some(307))];
const E304: &[(&str, Option<u64>)] = &[("IncorrectPluginhostFile", Some(304))];
const E312: &[(&str, Option<u64>)] = &[("ScriptChecksumMismatch", Some(312))];

fn set(s: &Setup, key: &str, v: serde_json::Value) {
    s.config_with(|m| {
        m.insert(key.into(), v);
    });
}

fn remove(s: &Setup, key: &str) {
    s.config_with(|m| {
        m.remove(key);
    });
}

fn chmod(p: &std::path::Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_of(p: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    quiesce::integrity::hex(&Sha256::digest(fs::read(p).unwrap()))
}

fn cases() -> Vec<Case> {
    vec![
        // ---- §3: a valid file, the extension's sample, defaults -------------
        Case {
            name: "sample config passes",
            arrange: |_| {},
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "only the two required keys",
            arrange: |s| {
                s.write_config(&json!({"preScriptLocation": s.pre, "postScriptLocation": s.post}))
            },
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "other pluginName is a warning",
            arrange: |s| set(s, "pluginName", json!("Other")),
            exit: 0,
            errors: OK,
            warning: Some("pluginName"),
            message: None,
        },
        Case {
            name: "missing preScriptLocation",
            arrange: |s| remove(s, "preScriptLocation"),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("preScriptLocation"),
        },
        Case {
            name: "missing postScriptLocation",
            arrange: |s| remove(s, "postScriptLocation"),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("postScriptLocation"),
        },
        Case {
            name: "preScriptLocation not a string",
            arrange: |s| set(s, "preScriptLocation", json!(5)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("must be a string"),
        },
        Case {
            name: "empty preScriptLocation",
            arrange: |s| set(s, "preScriptLocation", json!("")),
            exit: 2,
            errors: E302,
            warning: None,
            message: Some("preScriptLocation is empty"),
        },
        Case {
            name: "relative preScriptLocation",
            arrange: |s| set(s, "preScriptLocation", json!("scripts/pre.sh")),
            exit: 2,
            errors: E302,
            warning: None,
            message: Some("not an absolute path"),
        },
        Case {
            name: "empty postScriptLocation",
            arrange: |s| set(s, "postScriptLocation", json!("")),
            exit: 2,
            errors: E303,
            warning: None,
            message: None,
        },
        Case {
            name: "numeric params become text",
            arrange: |s| set(s, "preScriptParams", json!(["a", 1, 2.5, ""])),
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "boolean param",
            arrange: |s| set(s, "preScriptParams", json!(["a", true])),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("element 1"),
        },
        Case {
            name: "object param",
            arrange: |s| set(s, "postScriptParams", json!([{}])),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("postScriptParams"),
        },
        Case {
            name: "params not an array",
            arrange: |s| set(s, "preScriptParams", json!("a b")),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("must be an array"),
        },
        Case {
            name: "negative retries",
            arrange: |s| set(s, "preScriptNoOfRetries", json!(-1)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("preScriptNoOfRetries"),
        },
        Case {
            name: "retries as a string",
            arrange: |s| set(s, "postScriptNoOfRetries", json!("2")),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("postScriptNoOfRetries"),
        },
        Case {
            name: "fractional retries",
            arrange: |s| set(s, "preScriptNoOfRetries", json!(1.5)),
            exit: 2,
            errors: E305,
            warning: None,
            message: None,
        },
        // The extension reads numbers as numbers and null as absent: what it
        // runs correctly must keep working, with a warning naming the key.
        Case {
            name: "timeoutInSeconds 30.0 is the integer 30",
            arrange: |s| set(s, "timeoutInSeconds", json!(30.0)),
            exit: 0,
            errors: OK,
            warning: Some("\"timeoutInSeconds\" is written 30.0; read as the integer 30"),
            message: None,
        },
        Case {
            name: "timeoutInSeconds 1e3 is the integer 1000",
            arrange: |s| {
                s.write_config_text(format!(
                    r#"{{"preScriptLocation":"{}","postScriptLocation":"{}","timeoutInSeconds":1e3}}"#,
                    s.pre.display(),
                    s.post.display()
                ))
            },
            exit: 0,
            errors: OK,
            warning: Some("read as the integer 1000"),
            message: None,
        },
        Case {
            name: "timeoutInSeconds 3600.0 is clamped like 3600",
            arrange: |s| set(s, "timeoutInSeconds", json!(3600.0)),
            exit: 0,
            errors: OK,
            warning: Some("1800 is used"),
            message: None,
        },
        Case {
            name: "timeoutInSeconds 30.5 stays an error naming the key",
            arrange: |s| set(s, "timeoutInSeconds", json!(30.5)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("timeoutInSeconds"),
        },
        Case {
            name: "retries 2.0 is the integer 2",
            arrange: |s| set(s, "postScriptNoOfRetries", json!(2.0)),
            exit: 0,
            errors: OK,
            warning: Some("\"postScriptNoOfRetries\" is written 2.0"),
            message: None,
        },
        Case {
            name: "poll time 4.0 is the integer 4",
            arrange: |s| set(s, "ScriptsExecutionPollTimeSeconds", json!(4.0)),
            exit: 0,
            errors: OK,
            warning: Some("\"ScriptsExecutionPollTimeSeconds\" is written 4.0"),
            message: None,
        },
        Case {
            name: "appName null is absent",
            arrange: |s| set(s, "appName", json!(null)),
            exit: 0,
            errors: OK,
            warning: Some("\"appName\" is null; treated as absent"),
            message: None,
        },
        Case {
            name: "preScriptSha256 null is absent",
            arrange: |s| set(s, "preScriptSha256", json!(null)),
            exit: 0,
            errors: OK,
            warning: Some("\"preScriptSha256\" is null"),
            message: None,
        },
        Case {
            name: "timeoutInSeconds null is absent",
            arrange: |s| set(s, "timeoutInSeconds", json!(null)),
            exit: 0,
            errors: OK,
            warning: Some("\"timeoutInSeconds\" is null"),
            message: None,
        },
        Case {
            name: "preScriptLocation null is missing",
            arrange: |s| set(s, "preScriptLocation", json!(null)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("preScriptLocation\" is required"),
        },
        Case {
            name: "zero timeout",
            arrange: |s| set(s, "timeoutInSeconds", json!(0)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("timeoutInSeconds"),
        },
        Case {
            name: "timeout above 1800 is clamped with a warning",
            arrange: |s| set(s, "timeoutInSeconds", json!(5000)),
            exit: 0,
            errors: OK,
            warning: Some("1800 is used"),
            message: None,
        },
        Case {
            name: "string \"false\" is not a boolean",
            arrange: |s| set(s, "continueBackupOnFailure", json!("false")),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("continueBackupOnFailure"),
        },
        Case {
            name: "fsFreezeEnabled as a number",
            arrange: |s| set(s, "fsFreezeEnabled", json!(1)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("fsFreezeEnabled"),
        },
        Case {
            name: "poll time outside 1..5 is a warning",
            arrange: |s| set(s, "ScriptsExecutionPollTimeSeconds", json!(9)),
            exit: 0,
            errors: OK,
            warning: Some("outside 1..5"),
            message: None,
        },
        Case {
            name: "poll time zero is a warning",
            arrange: |s| set(s, "ScriptsExecutionPollTimeSeconds", json!(0)),
            exit: 0,
            errors: OK,
            warning: Some("outside 1..5"),
            message: None,
        },
        Case {
            name: "poll time as a string",
            arrange: |s| set(s, "ScriptsExecutionPollTimeSeconds", json!("3")),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("ScriptsExecutionPollTimeSeconds"),
        },
        Case {
            name: "appName as a number",
            arrange: |s| set(s, "appName", json!(3)),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("appName"),
        },
        // SPEC §3 (revised, issue 25): a run ignores an unknown key, as the
        // extension does; check, the operator's gate, refuses a near miss
        // of a known key — the setting it meant is silently lost.
        Case {
            name: "a near miss of a known key fails check",
            arrange: |s| set(s, "timeoutInSecond", json!(5)),
            exit: 2,
            errors: E305,
            warning: Some("did you mean \"timeoutInSeconds\""),
            message: Some("\"timeoutInSecond\" is a near miss of \"timeoutInSeconds\""),
        },
        Case {
            name: "a misspelt continueBackupOnFailure fails check, naming what a run uses",
            arrange: |s| set(s, "continueBackupOnFailur", json!(false)),
            exit: 2,
            errors: E305,
            warning: Some("did you mean \"continueBackupOnFailure\""),
            message: Some("a run uses continueBackupOnFailure=true"),
        },
        Case {
            name: "an unknown key near no known key is only a warning",
            arrange: |s| set(s, "ourTicketNumber", json!("OPS-1234")),
            exit: 0,
            errors: OK,
            warning: Some("unknown key \"ourTicketNumber\" ignored"),
            message: None,
        },
        Case {
            name: "duplicate key",
            arrange: |s| {
                s.write_config_text(format!(
                r#"{{"preScriptLocation":"{0}","postScriptLocation":"{1}","timeoutInSeconds":5,"timeoutInSeconds":6}}"#,
                s.pre.display(), s.post.display()))
            },
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("duplicate key \"timeoutInSeconds\""),
        },
        Case {
            name: "trailing garbage",
            arrange: |s| {
                s.write_config_text(format!(
                    r#"{{"preScriptLocation":"{0}","postScriptLocation":"{1}"}} x"#,
                    s.pre.display(),
                    s.post.display()
                ))
            },
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("not valid JSON"),
        },
        Case {
            name: "invalid UTF-8",
            arrange: |s| {
                let mut b = br#"{"appName":"x"#.to_vec();
                b.extend_from_slice(&[0xff, 0xfe]);
                b.extend_from_slice(
                    format!(
                        r#"","preScriptLocation":"{0}","postScriptLocation":"{1}"}}"#,
                        s.pre.display(),
                        s.post.display()
                    )
                    .as_bytes(),
                );
                s.write_config_text(b);
            },
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("UTF-8"),
        },
        Case {
            name: "file over 64 KiB",
            arrange: |s| set(s, "appName", json!("x".repeat(70 * 1024))),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("larger than 65536"),
        },
        Case {
            name: "top level is an array",
            arrange: |s| s.write_config_text("[]"),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("must be a JSON object"),
        },
        Case {
            name: "empty file",
            arrange: |s| s.write_config_text(""),
            exit: 2,
            errors: E305,
            warning: None,
            message: None,
        },
        // ---- §4: the config file's own trust check ---------------------------
        Case {
            name: "config missing",
            arrange: |s| fs::remove_file(&s.config).unwrap(),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("does not exist"),
        },
        Case {
            name: "config mode 644",
            arrange: |s| chmod(&s.config, 0o644),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("0644"),
        },
        Case {
            name: "config mode 700 (executable)",
            arrange: |s| chmod(&s.config, 0o700),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("executable"),
        },
        Case {
            name: "config mode 400",
            arrange: |s| chmod(&s.config, 0o400),
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "config owned by nobody",
            arrange: |s| chown(&s.config, NOBODY),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("uid 65534"),
        },
        Case {
            name: "config is a symlink",
            arrange: |s| {
                let real = s.s.path("real.json");
                fs::rename(&s.config, &real).unwrap();
                s.s.symlink(&real, "VMSnapshotScriptPluginConfig.json");
            },
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("symbolic link"),
        },
        // ---- §4: scripts --------------------------------------------------------
        Case {
            name: "pre-script missing",
            arrange: |s| fs::remove_file(&s.pre).unwrap(),
            exit: 2,
            errors: E302,
            warning: None,
            message: Some("does not exist"),
        },
        Case {
            name: "post-script missing",
            arrange: |s| fs::remove_file(&s.post).unwrap(),
            exit: 2,
            errors: E303,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script is a directory",
            arrange: |s| {
                fs::remove_file(&s.pre).unwrap();
                fs::create_dir(&s.pre).unwrap();
            },
            exit: 2,
            errors: E302,
            warning: None,
            message: Some("not a regular file"),
        },
        Case {
            name: "pre-script's directory missing",
            arrange: |s| set(s, "preScriptLocation", json!(s.s.path("nodir/pre.sh"))),
            exit: 2,
            errors: E302,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script mode 755",
            arrange: |s| chmod(&s.pre, 0o755),
            exit: 2,
            errors: E306,
            warning: None,
            message: Some("0755"),
        },
        Case {
            name: "pre-script mode 770",
            arrange: |s| chmod(&s.pre, 0o770),
            exit: 2,
            errors: E306,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script mode 704",
            arrange: |s| chmod(&s.pre, 0o704),
            exit: 2,
            errors: E306,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script mode 600 accepted",
            arrange: |s| chmod(&s.pre, 0o600),
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script mode 500 accepted",
            arrange: |s| chmod(&s.pre, 0o500),
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "post-script mode 775",
            arrange: |s| chmod(&s.post, 0o775),
            exit: 2,
            errors: E307,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script owned by nobody",
            arrange: |s| chown(&s.pre, NOBODY),
            exit: 2,
            errors: E306,
            warning: None,
            message: Some("uid 65534"),
        },
        Case {
            name: "post-script owned by nobody",
            arrange: |s| chown(&s.post, NOBODY),
            exit: 2,
            errors: E307,
            warning: None,
            message: None,
        },
        Case {
            name: "pre-script is a symlink to a good script",
            arrange: |s| {
                let real = s.s.write("scripts/real-pre.sh", "#!/bin/sh\n", 0o700);
                fs::remove_file(&s.pre).unwrap();
                std::os::unix::fs::symlink(&real, &s.pre).unwrap();
            },
            exit: 2,
            errors: E306,
            warning: None,
            message: Some("symbolic link"),
        },
        Case {
            name: "pre-script is a dangling symlink",
            arrange: |s| {
                fs::remove_file(&s.pre).unwrap();
                std::os::unix::fs::symlink(s.s.path("nowhere"), &s.pre).unwrap();
            },
            exit: 2,
            errors: E306,
            warning: None,
            message: Some("symbolic link"),
        },
        Case {
            name: "script directory world-writable",
            arrange: |s| chmod(&s.s.path("scripts"), 0o777),
            exit: 2,
            errors: &[
                ("InsufficientPermissionforPre-Script", Some(306)),
                ("InsufficientPermissionforPost-Script", Some(307)),
            ],
            warning: None,
            message: Some("group- or world-writable"),
        },
        Case {
            name: "script directory sticky world-writable (like /tmp)",
            arrange: |s| chmod(&s.s.path("scripts"), 0o1777),
            exit: 2,
            errors: &[
                ("InsufficientPermissionforPre-Script", Some(306)),
                ("InsufficientPermissionforPost-Script", Some(307)),
            ],
            warning: None,
            message: Some("sticky"),
        },
        Case {
            name: "script directory group-writable",
            arrange: |s| chmod(&s.s.path("scripts"), 0o770),
            exit: 2,
            errors: &[
                ("InsufficientPermissionforPre-Script", Some(306)),
                ("InsufficientPermissionforPost-Script", Some(307)),
            ],
            warning: None,
            message: None,
        },
        Case {
            name: "script directory owned by nobody",
            arrange: |s| chown(&s.s.path("scripts"), NOBODY),
            exit: 2,
            errors: &[
                ("InsufficientPermissionforPre-Script", Some(306)),
                ("InsufficientPermissionforPost-Script", Some(307)),
            ],
            warning: None,
            message: Some("directory"),
        },
        Case {
            name: "path through a symlinked directory into an insecure one",
            arrange: |s| {
                let bad = s.s.mkdir("insecure", 0o777);
                fs::copy(&s.pre, bad.join("pre.sh")).unwrap();
                chmod(&bad.join("pre.sh"), 0o700);
                s.s.symlink(&bad, "via");
                set(s, "preScriptLocation", json!(s.s.path("via/pre.sh")));
            },
            exit: 2,
            errors: E306,
            warning: None,
            message: Some("insecure"),
        },
        Case {
            name: "path through a symlinked directory into a secure one",
            arrange: |s| {
                s.s.symlink(&s.s.path("scripts"), "via");
                set(s, "preScriptLocation", json!(s.s.path("via/pre.sh")));
            },
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        // ---- pins ------------------------------------------------------------
        Case {
            name: "matching pin",
            arrange: |s| {
                set(
                    s,
                    "preScriptSha256",
                    json!(sha256_of(&s.pre).to_uppercase()),
                )
            },
            exit: 0,
            errors: OK,
            warning: None,
            message: None,
        },
        Case {
            name: "pin mismatch",
            arrange: |s| set(s, "postScriptSha256", json!("0".repeat(64))),
            exit: 2,
            errors: E312,
            warning: None,
            message: Some("postScriptSha256"),
        },
        Case {
            name: "malformed pin",
            arrange: |s| set(s, "preScriptSha256", json!("abc")),
            exit: 2,
            errors: E305,
            warning: None,
            message: Some("64 hexadecimal"),
        },
        // ---- plugin-host file --------------------------------------------------
        Case {
            name: "plugin-host timeout clamps the config's",
            arrange: |s| {
                fs::write(&s.host_config, "[pre_post]\ntimeoutInSeconds: 5\n").unwrap();
                chmod(&s.host_config, 0o644);
            },
            exit: 0,
            errors: OK,
            warning: Some("plugin-host file's 5"),
            message: None,
        },
        Case {
            name: "plugin-host file malformed",
            arrange: |s| {
                fs::write(&s.host_config, "[pre_post]\ntimeoutInSeconds: soon\n").unwrap();
                chmod(&s.host_config, 0o644);
            },
            exit: 2,
            errors: E304,
            warning: None,
            message: Some("timeoutInSeconds"),
        },
        Case {
            name: "plugin-host file world-writable",
            arrange: |s| {
                fs::write(&s.host_config, "[pre_post]\ntimeoutInSeconds: 60\n").unwrap();
                chmod(&s.host_config, 0o666);
            },
            exit: 2,
            errors: E304,
            warning: None,
            message: Some("plugin-host"),
        },
        Case {
            name: "plugin-host file owned by nobody",
            arrange: |s| {
                fs::write(&s.host_config, "[pre_post]\ntimeoutInSeconds: 60\n").unwrap();
                chmod(&s.host_config, 0o644);
                chown(&s.host_config, NOBODY);
            },
            exit: 2,
            errors: E304,
            warning: None,
            message: None,
        },
        // ---- order: every problem listed, in the extension's order --------------
        Case {
            name: "pre missing and post insecure: both, pre first",
            arrange: |s| {
                fs::remove_file(&s.pre).unwrap();
                chmod(&s.post, 0o777);
            },
            exit: 2,
            errors: &[
                ("Pre-ScriptNotFound", Some(302)),
                ("InsufficientPermissionforPost-Script", Some(307)),
            ],
            warning: None,
            message: None,
        },
        Case {
            name: "bad config hides the scripts",
            arrange: |s| {
                set(s, "fsFreezeEnabled", json!("yes"));
                fs::remove_file(&s.pre).unwrap();
            },
            exit: 2,
            errors: E305,
            warning: Some("continueBackupOnFailure is unknown"),
            message: None,
        },
    ]
}

#[test]
fn check_table() {
    require_root!();
    let mut failures = Vec::new();
    for case in cases() {
        let s = Setup::new("check");
        (case.arrange)(&s);
        let run = s.quiesce(&["check", "--json"]);
        let json = run.json();
        let got: Vec<(String, Option<u64>)> = json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["code"].as_u64()))
            .collect();
        let want: Vec<(String, Option<u64>)> = case
            .errors
            .iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect();
        let mut why = Vec::new();
        if run.code != case.exit {
            why.push(format!("exit {} (want {})", run.code, case.exit));
        }
        if got != want {
            why.push(format!("errors {got:?} (want {want:?})"));
        }
        if let Some(w) = case.warning {
            if !run.warnings().iter().any(|x| x.contains(w)) {
                why.push(format!(
                    "no warning containing {w:?} in {:?}",
                    run.warnings()
                ));
            }
        }
        if let Some(m) = case.message {
            let first = json["errors"][0]["message"].as_str().unwrap_or("");
            if !first.contains(m) {
                why.push(format!("first message {first:?} lacks {m:?}"));
            }
        }
        for e in json["errors"].as_array().unwrap() {
            if e["action"].as_str().unwrap_or("").is_empty() {
                why.push("an error without a recommended action".into());
            }
        }
        if json["operation"] != "check"
            || json["result"] != if case.exit == 0 { "success" } else { "failure" }
        {
            why.push(format!(
                "operation/result {} {}",
                json["operation"], json["result"]
            ));
        }
        if !s.scripts_ran().is_empty() {
            why.push("check executed a script".into());
        }
        // The human output names each error with its code and action.
        for (name, _) in case.errors {
            if !run.stderr.contains(name) || !run.stderr.contains("action:") {
                why.push(format!(
                    "stderr lacks {name} or its action:\n{}",
                    run.stderr
                ));
            }
        }
        if !why.is_empty() {
            failures.push(format!("{}: {}", case.name, why.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn usage_errors_exit_64() {
    let s = Setup::new("usage");
    for args in [&["bogus"][..], &["check", "--no-such-flag"][..], &[][..]] {
        let run = s.quiesce(args);
        assert_eq!(run.code, 64, "{args:?}: {}", run.stderr);
    }
    assert_eq!(s.quiesce(&["--help"]).code, 0);
    assert_eq!(s.quiesce(&["check", "--help"]).code, 0);
}

#[test]
fn human_check_output_without_json_keeps_stdout_empty() {
    require_root!();
    let s = Setup::new("human");
    let run = s.quiesce(&["check"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("would be application-consistent"));
}

#[test]
fn check_refuses_a_broken_or_insecure_policy_with_304() {
    require_root!();
    let s = Setup::new("policy");
    let good = std::fs::read_to_string("policies/script-policy.json").unwrap();
    // A rule without its comment is refused (policy as reviewed data).
    let broken = good.replacen("\"comment\"", "\"note\"", 2);
    let broken_path = s.s.write("broken-policy.json", broken, 0o644);
    let insecure_path = s.s.write("insecure-policy.json", &good, 0o666);
    let good_path = s.s.write("policy.json", &good, 0o644);
    let run = s.quiesce(&["check", "--json", "--policy", good_path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for bad in [&broken_path, &insecure_path] {
        let run = s.quiesce(&["check", "--json", "--policy", bad.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert_eq!(
            run.error_names(),
            ["IncorrectPluginhostFile"],
            "{}",
            run.stderr
        );
        assert_eq!(run.json()["errors"][0]["code"], 304);
        assert_eq!(s.scripts_ran(), "");
    }
}

// ---------------------------------------------------------------------------
// Bridge mode with an apps directory (issue 25): `quiesce check` and
// `quiesce --bridge check`, whose applications are quiesce's own set,
// recognise the extension's config pointing at the hook and verify it.

/// README "Bridge mode" steps 1-2 with the two-application set: quiesce's
/// own apps directory (timeouts 30 and 60), the extension's config naming
/// a copy of the packaged hook, with `ext_timeout`.
struct Bridge {
    s: Setup,
    apps_dir: std::path::PathBuf,
    ext: std::path::PathBuf,
}

impl Bridge {
    fn new(tag: &str, ext_timeout: u64) -> Bridge {
        let s = Setup::new(tag);
        let apps_dir = s.s.mkdir("apps.d", 0o700);
        for (name, timeout) in [("10-app.json", 30), ("20-postgresql.json", 60)] {
            let mut c = s.default_config();
            c["timeoutInSeconds"] = json!(timeout);
            s.s.write(&format!("apps.d/{name}"), c.to_string(), 0o600);
        }
        let hook = s.s.write(
            "lib/extension-hook",
            std::fs::read("packaging/extension-hook").unwrap(),
            0o700,
        );
        let ext = s.s.write(
            "azure/VMSnapshotScriptPluginConfig.json",
            json!({
                "pluginName": "ScriptRunner",
                "preScriptLocation": hook, "preScriptParams": ["pre"],
                "postScriptLocation": hook, "postScriptParams": ["post"],
                "preScriptNoOfRetries": 0, "postScriptNoOfRetries": 0,
                "timeoutInSeconds": ext_timeout
            })
            .to_string(),
            0o600,
        );
        Bridge { s, apps_dir, ext }
    }

    /// `quiesce [--bridge] check --json`, with no --config: the applications
    /// come from the apps directory, as on the operator's machine.
    fn check(&self, bridge: bool) -> common::Run {
        let mut cmd = common::quiesce_bin();
        cmd.args(common::private_args(&self.s.s.dir))
            .arg("--host-config")
            .arg(&self.s.host_config)
            .arg("--apps-dir")
            .arg(&self.apps_dir)
            .arg("--extension-config")
            .arg(&self.ext);
        if bridge {
            cmd.arg("--bridge");
        }
        common::Run::from(cmd.args(["check", "--json"]).output().unwrap())
    }
}

#[test]
fn check_verifies_bridge_mode_with_an_apps_directory() {
    require_root!();
    // (30 + 5) + (60 + 5) + 3 = 103 s, but the extension gives 50.
    let b = Bridge::new("bridge-apps-short", 50);
    for bridge in [false, true] {
        let run = b.check(bridge);
        let ctx = format!("--bridge={bridge}\n{}", run.stderr);
        assert_eq!(run.code, 2, "{ctx}");
        assert_eq!(run.error_names(), ["IncorrectJSONConfigFile"], "{ctx}");
        let e = &run.json()["errors"][0];
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("need 103 s")
                && msg.contains(&format!("timeoutInSeconds in {} is 50 s", b.ext.display())),
            "{ctx}"
        );
        assert_eq!(
            e["action"],
            format!("fix \"timeoutInSeconds\" in {}", b.ext.display()),
            "{ctx}"
        );
        assert!(run.stderr.contains("bridge mode: the extension"), "{ctx}");
        assert!(
            run.stderr
                .contains("a snapshot would NOT be application-consistent"),
            "{ctx}"
        );
        assert_eq!(b.s.scripts_ran(), "");
    }
    // The README's 103 s fits: ready, and check says it is bridge mode.
    let b = Bridge::new("bridge-apps-fits", 103);
    for bridge in [false, true] {
        let run = b.check(bridge);
        assert_eq!(run.code, 0, "--bridge={bridge}\n{}", run.stderr);
        assert!(
            run.stderr
                .contains("budget per phase 103 s of the extension's 103 s"),
            "{}",
            run.stderr
        );
    }
}

/// A typo in the extension's own config is the operator's too: check, in
/// bridge mode, refuses it as it refuses one in quiesce's configs; an
/// insecure hook is refused like any script the extension runs as root.
#[test]
fn check_in_bridge_mode_refuses_a_typo_or_an_insecure_hook_in_the_extensions_config() {
    require_root!();
    let b = Bridge::new("bridge-ext-typo", 103);
    let mut ext: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b.ext).unwrap()).unwrap();
    ext["fsFreezeEnabeld"] = json!(false);
    std::fs::write(&b.ext, ext.to_string()).unwrap();
    let run = b.check(false);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let e = &run.json()["errors"][0];
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("\"fsFreezeEnabeld\" is a near miss of \"fsFreezeEnabled\""),
        "{}",
        run.stderr
    );
    assert_eq!(
        e["action"],
        format!(
            "rename \"fsFreezeEnabeld\" to \"fsFreezeEnabled\" in {}",
            b.ext.display()
        )
    );

    let b = Bridge::new("bridge-ext-hook", 103);
    let hook = b.s.s.path("lib/extension-hook");
    chmod(&hook, 0o755);
    let run = b.check(false);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.error_names(),
        [
            "InsufficientPermissionforPre-Script",
            "InsufficientPermissionforPost-Script"
        ],
        "{}",
        run.stderr
    );
}

/// Runs keep the extension's behaviour: an unknown key, a near miss
/// included, is ignored with a warning naming the known key.
#[test]
fn a_run_still_goes_on_past_a_near_miss_with_a_warning() {
    require_root!();
    let s = Setup::new("typo-run");
    set(&s, "continueBackupOnFailur", json!(false));
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.scripts_ran(), "pre\n");
    assert!(
        run.stderr
            .contains("unknown key \"continueBackupOnFailur\" ignored; did you mean \"continueBackupOnFailure\"?"),
        "{}",
        run.stderr
    );
    let check = s.quiesce(&["check", "--json"]);
    assert_eq!(check.code, 2, "{}", check.stderr);
}

// ---------------------------------------------------------------------------
// Smaller things an operator reads (issue 25).

/// `--help` gives each default once.
#[test]
fn help_gives_the_post_due_default_once() {
    let s = Setup::new("help-default");
    let run = s.quiesce(&["--help"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.matches("[default: 1860").count(),
        1,
        "{}",
        run.stdout
    );
}

/// A phase of 3 s starts with "3 s left", not 2 (the microseconds already
/// spent are not a whole second gone).
#[test]
fn a_phase_starts_with_its_whole_timeout_left() {
    require_root!();
    let s = Setup::new("secs-left");
    set(&s, "timeoutInSeconds", json!(3));
    let run = s.quiesce(&["pre"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("attempt 1/1 (3 s left)"),
        "{}",
        run.stderr
    );
}

/// `check --mount M` lists the mounts it skips, so it does not also say
/// that -v would list them.
#[test]
fn check_with_mount_lists_the_skipped_mounts_without_pointing_at_v() {
    require_root!();
    if !common::scratchfs::have_mkfs("ext4") {
        eprintln!("SKIPPED: mkfs.ext4 not installed (scripts/test.sh installs e2fsprogs)");
        return;
    }
    let s = Setup::new("check-mount-list");
    let fs_ = common::scratchfs::ScratchFs::new(&s.s.dir, "a", "ext4");
    let run = s.quiesce(&["check", "--mount", fs_.path()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let skipped = run
        .stderr
        .lines()
        .filter(|l| l.contains(": skip — "))
        .count();
    assert!(
        run.stderr.contains(&format!(
            "1 filesystem(s) would be frozen, {skipped} mount(s) skipped\n"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("-v lists them"), "{}", run.stderr);
}
