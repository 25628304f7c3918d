//! Fuzzing the parsers that read operator files (issue 7): the config JSON,
//! the plugin-host INI, `vmbackup.conf`, mountinfo, and a script's `#!`
//! line (issue 26). Property-based, so it
//! runs in the normal suite: no panic on any input, and every rejection is a
//! named error that says which key or line and which rule.
//!
//! `FUZZ_CASES=N` raises the number of cases per property (default 3000).

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use quiesce::config::{self, ConfigError, KNOWN_KEYS};
use quiesce::freeze::mounts;
use serde_json::{json, Map, Value};
use std::path::Path;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn runner() -> TestRunner {
    TestRunner::new(PtConfig {
        cases: cases(),
        failure_persistence: None,
        ..PtConfig::default()
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("/etc/azure/pre.sh")),
        Just(json!("false")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A config object made of known keys (and a few unknown ones) with values
/// of any type: exercises every type rule of SPEC §3.
fn config_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(String::from),
        "[a-zA-Z]{1,20}",
    ];
    prop::collection::vec((key, any_json()), 0..14).prop_map(|pairs| {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

/// Every refusal names something: the file, and for a field error the key
/// and the rule.
fn assert_named(e: &ConfigError) {
    let text = e.to_string();
    assert!(text.contains("/etc/azure/c.json"), "{text}");
    if let ConfigError::Field { key, rule, .. } = e {
        assert!(!rule.is_empty() && text.contains(key.as_str()), "{text}");
    }
}

#[test]
fn config_parser_never_panics_on_bytes() {
    let mut r = runner();
    r.run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
        if let Err(e) = config::parse(Path::new("/etc/azure/c.json"), &bytes, None) {
            assert_named(&e);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn config_parser_on_json_shaped_input() {
    let mut r = runner();
    r.run(
        &(config_object(), proptest::option::of(1u64..4000)),
        |(v, host)| {
            let text = serde_json::to_vec(&v).unwrap();
            match config::parse(Path::new("/etc/azure/c.json"), &text, host) {
                Ok(loaded) => {
                    let c = loaded.config;
                    // Accepted values respect the rules of SPEC §3.
                    prop_assert!(c.timeout_secs >= 1 && c.timeout_secs <= 1800);
                    if let Some(h) = host {
                        prop_assert!(c.timeout_secs <= h);
                    }
                    prop_assert!((1..=5).contains(&c.poll_secs));
                    let obj = v.as_object().unwrap();
                    prop_assert!(obj["preScriptLocation"].is_string());
                    prop_assert!(obj["postScriptLocation"].is_string());
                    for key in ["continueBackupOnFailure", "fsFreezeEnabled"] {
                        if let Some(b) = obj.get(key) {
                            prop_assert!(b.is_boolean(), "{key} accepted as {b}");
                        }
                    }
                }
                Err(e) => assert_named(&e),
            }
            Ok(())
        },
    )
    .unwrap();
}

#[test]
fn config_parser_on_mutated_valid_files() {
    let valid = serde_json::to_string_pretty(&json!({
        "pluginName": "ScriptRunner",
        "preScriptLocation": "/etc/azure/pre.sh",
        "postScriptLocation": "/etc/azure/post.sh",
        "preScriptParams": ["", ""],
        "postScriptParams": ["", ""],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": 30,
        "continueBackupOnFailure": true,
        "fsFreezeEnabled": true,
        "ScriptsExecutionPollTimeSeconds": 2
    }))
    .unwrap()
    .into_bytes();
    assert!(config::parse(Path::new("/etc/azure/c.json"), &valid, None).is_ok());
    let mut r = runner();
    // Byte flips, insertions and truncations of a real file.
    let edits = prop::collection::vec((0usize..valid.len(), any::<u8>(), 0u8..3), 1..6);
    r.run(&edits, |edits| {
        let mut b = valid.clone();
        for (at, byte, kind) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match kind {
                0 => b[at] = byte,
                1 => b.insert(at, byte),
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        if let Err(e) = config::parse(Path::new("/etc/azure/c.json"), &b, None) {
            assert_named(&e);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn host_config_parser_never_panics() {
    let mut r = runner();
    let line = prop_oneof![
        Just("[pre_post]".to_string()),
        Just("timeoutInSeconds: 30".to_string()),
        Just("numberOfPlugins: 2".to_string()),
        // A count no file backs is refused before it is allocated (issue 26).
        Just("numberOfPlugins: 10000000000".to_string()),
        "numberOfPlugins: [0-9]{1,12}",
        "plugin(Name|Path|ConfigPath)[0-9x]{0,2}: /?[a-z]{0,6}",
        "[a-zA-Z_]{0,10}[:=]? ?[0-9a-z]{0,6}",
        ".{0,20}",
    ];
    r.run(&prop::collection::vec(line, 0..8), |lines| {
        let text = lines.join("\n");
        match config::parse_host_config(Path::new("/h.conf"), text.as_bytes()) {
            Ok(h) => {
                prop_assert!(h.timeout.is_none_or(|t| t >= 1));
                match h.plugins(Path::new("/h.conf")) {
                    Ok(Some(list)) => {
                        prop_assert!(!list.is_empty());
                        prop_assert!(list.iter().all(|p| p.config.is_absolute()));
                    }
                    Ok(None) => {}
                    Err(e) => prop_assert!(e.to_string().starts_with("/h.conf"), "{e}"),
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("/h.conf"), "{e}"),
        }
        Ok(())
    })
    .unwrap();
    r.run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
        let _ = config::parse_host_config(Path::new("/h.conf"), &bytes);
        Ok(())
    })
    .unwrap();
}

#[test]
fn mountinfo_and_vmbackup_parsers_never_panic() {
    let mut r = runner();
    let field = prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{1,3}:[0-9]{1,3}",
        "/[a-z\\\\0-9 ]{0,10}",
        Just("-".to_string()),
        Just("ext4".to_string()),
        Just("rw,relatime".to_string()),
        Just("shared:1".to_string()),
        ".{0,6}",
    ];
    let line = prop::collection::vec(field, 0..12).prop_map(|f| f.join(" "));
    r.run(&prop::collection::vec(line, 0..6), |lines| {
        let text = lines.join("\n");
        match mounts::parse_mountinfo(&text) {
            Ok(infos) => {
                let plan = mounts::plan_discovered(&infos, &[], &NoLoops);
                prop_assert_eq!(plan.entries.len(), infos.len());
            }
            Err(e) => prop_assert!(e.to_string().contains("line"), "{e}"),
        }
        let _ = mounts::parse_mounts_to_skip(&text);
        Ok(())
    })
    .unwrap();
}

struct NoLoops;
impl mounts::BlockInfo for NoLoops {
    fn loop_backing_file(&self, _major: u32, _minor: u32) -> Option<std::path::PathBuf> {
        None
    }
}

/// A script's `#!` line, read as the kernel reads it (issue 26): no panic on
/// any bytes; what it yields is a name of the first 256 bytes with no blank,
/// NUL or newline in it, and an argument without NUL, newline or blanks at
/// its ends.
#[test]
fn shebang_parser_never_panics_and_yields_what_the_kernel_would() {
    use quiesce::job::interpreter::{parse_shebang, BINPRM_BUF_SIZE};
    use std::os::unix::ffi::OsStrExt;
    let mut r = runner();
    let line = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        "#![ \t]{0,3}/[a-z/]{0,300}([ \t]{1,2}[ -~]{0,300})?(\r?\n.{0,10})?"
            .prop_map(String::into_bytes),
    ];
    r.run(&line, |bytes| {
        let mut content = b"#!".to_vec();
        content.extend(bytes.strip_prefix(b"#!").unwrap_or(&bytes));
        if let Some(Ok(s)) = parse_shebang(&content) {
            let name = s.interpreter.as_os_str().as_bytes();
            prop_assert!(!name.is_empty() && name.len() < BINPRM_BUF_SIZE - 2);
            prop_assert!(!name.iter().any(|b| matches!(b, b' ' | b'\t' | 0 | b'\n')));
            if let Some(arg) = &s.arg {
                // Empty when a blank is followed by the buffer's NUL padding
                // ("#!/bin/sh " with no newline): the kernel passes "" then.
                let arg = arg.as_bytes();
                prop_assert!(arg.len() < BINPRM_BUF_SIZE - 3);
                prop_assert!(!arg.iter().any(|b| matches!(b, 0 | b'\n')));
                prop_assert!(arg.first().is_none_or(|b| !matches!(b, b' ' | b'\t')));
            }
        }
        Ok(())
    })
    .unwrap();
}
