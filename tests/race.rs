//! The race attack of issue 7: while `quiesce pre` checks and executes the
//! configured pre-script, an attacker keeps swapping what the path names —
//! (a) `rename(2)` of a prepared file over the path, (b) replacing the path
//! with a symbolic link to the evil file, (c) swapping a parent directory for
//! one holding the evil script. Every file and directory is root-owned with a
//! correct mode, so the trust checks alone cannot catch the swap (the attacker
//! plays a root process changing files while a run is under way); only the
//! open-once descriptor and the identity re-check can.
//!
//! The property: the file that runs is always the file that was checked. The
//! script prints its own identity (`good`/`evil`); the test maps it to the
//! SHA-256 of that content and compares it with `phases.pre.sha256` of the
//! same run's status, which is the hash of the checked descriptor. A run
//! where they differ is a WIN for the attacker. With a `preScriptSha256` pin
//! of the good script, evil must never run at all.
//!
//! Bounded in time: `RACE_SECONDS` (default 1.7) per attack and variant,
//! three attacks per variant, the two variants one after the other (~10 s).

mod common;

use common::Scratch;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GOOD: &str = "#!/bin/sh\necho good\n";
const EVIL: &str = "#!/bin/sh\necho evil\n";
const POST: &str = "#!/bin/sh\nexit 0\n";

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// `rename(2)` of a prepared hard link of the evil (then good) file over
    /// the path: the path always exists, its inode flips.
    Rename,
    /// The path becomes a symbolic link to the evil file, then the good file
    /// again (both by rename over the path).
    Symlink,
    /// The script's directory is exchanged (`renameat2(RENAME_EXCHANGE)`)
    /// with a directory holding an evil `pre.sh`: the path's last component
    /// never changes, a parent does.
    ParentDir,
}

const ATTACKS: [Attack; 3] = [Attack::Rename, Attack::Symlink, Attack::ParentDir];

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn budget() -> Duration {
    let secs = std::env::var("RACE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.7);
    Duration::from_secs_f64(secs)
}

struct Arena {
    s: Scratch,
    config: PathBuf,
    /// The configured pre-script path: `<dir>/d/pre.sh`.
    script: PathBuf,
    good_master: PathBuf,
    evil_master: PathBuf,
}

impl Arena {
    fn new(tag: &str, pin: Option<&str>) -> Arena {
        let s = Scratch::new(tag);
        let good_master = s.write("m/good", GOOD, 0o700);
        let evil_master = s.write("m/evil", EVIL, 0o700);
        s.mkdir("m", 0o700);
        s.mkdir("d", 0o700);
        s.mkdir("e", 0o700);
        let script = s.path("d/pre.sh");
        std::fs::hard_link(&good_master, &script).unwrap();
        // The evil twin directory of the parent-directory attack.
        std::fs::hard_link(&evil_master, s.path("e/pre.sh")).unwrap();
        let post = s.write("post/post.sh", POST, 0o700);
        s.mkdir("post", 0o700);
        let mut cfg = serde_json::json!({
            "pluginName": "ScriptRunner",
            "preScriptLocation": script,
            "postScriptLocation": post,
            "preScriptParams": [],
            "postScriptParams": [],
            "timeoutInSeconds": 10,
            "continueBackupOnFailure": true,
            "fsFreezeEnabled": true
        });
        if let Some(p) = pin {
            cfg["preScriptSha256"] = Value::String(p.to_string());
        }
        let config = s.write(
            "config.json",
            serde_json::to_string_pretty(&cfg).unwrap(),
            0o600,
        );
        Arena {
            s,
            config,
            script,
            good_master,
            evil_master,
        }
    }

    /// Puts the good script back at the configured path.
    fn restore(&self) {
        let d = self.s.path("d");
        if !d.join("pre.sh").exists()
            || std::fs::read(d.join("pre.sh")).unwrap_or_default() != GOOD.as_bytes()
        {
            // After a parent-directory attack `d` may hold the evil script.
            if std::fs::read(d.join("pre.sh")).unwrap_or_default() == EVIL.as_bytes() {
                exchange(&d, &self.s.path("e")).unwrap();
            } else {
                let tmp = d.join(".restore");
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(&self.good_master, &tmp).unwrap();
                std::fs::rename(&tmp, d.join("pre.sh")).unwrap();
            }
        }
        assert_eq!(std::fs::read(&self.script).unwrap(), GOOD.as_bytes());
    }

    fn run_pre(&self, runner: usize) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_quiesce"))
            .arg("--config")
            .arg(&self.config)
            .arg("--host-config")
            .arg(self.s.path("no-host.conf"))
            .arg("--run-dir")
            .arg(self.s.path(&format!("run{runner}")))
            .arg("--syslog-socket")
            .arg(self.s.path("no-syslog.sock"))
            .args(["pre", "--json"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Atomically exchanges two directory entries (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    // SAFETY: two valid NUL-terminated paths; renameat2 takes no ownership.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Replaces `target` with a new entry made by `make(tmp)`, by rename(2).
fn replace_with(tmp: &Path, target: &Path, make: impl Fn(&Path) -> std::io::Result<()>) {
    let _ = std::fs::remove_file(tmp);
    make(tmp).unwrap();
    std::fs::rename(tmp, target).unwrap();
}

/// The attacker: swaps until `stop`, counting swaps.
fn attacker(arena: &Arena, attack: Attack, stop: Arc<AtomicBool>, swaps: Arc<AtomicU64>) {
    let d = arena.s.path("d");
    let e = arena.s.path("e");
    let tmp = d.join(".tmp");
    let good = arena.good_master.clone();
    let evil = arena.evil_master.clone();
    let target = arena.script.clone();
    // A pause after every swap: each state holds for tens of microseconds,
    // still far shorter than a run's check-to-exec window, and the runs keep
    // some CPU.
    let pause = || std::thread::sleep(Duration::from_micros(20));
    while !stop.load(Ordering::Relaxed) {
        match attack {
            Attack::Rename => {
                replace_with(&tmp, &target, |t| std::fs::hard_link(&evil, t));
                pause();
                replace_with(&tmp, &target, |t| std::fs::hard_link(&good, t));
            }
            Attack::Symlink => {
                replace_with(&tmp, &target, |t| std::os::unix::fs::symlink(&evil, t));
                pause();
                replace_with(&tmp, &target, |t| std::fs::hard_link(&good, t));
            }
            Attack::ParentDir => {
                // Twice: back to the good directory at the end of a round.
                exchange(&d, &e).unwrap();
                pause();
                exchange(&d, &e).unwrap();
            }
        }
        swaps.fetch_add(2, Ordering::Relaxed);
        pause();
    }
}

#[derive(Default, Debug)]
struct Tally {
    iterations: u64,
    swaps: u64,
    /// Runs of each printed identity.
    ran: BTreeMap<String, u64>,
    /// Refusals by "code kind".
    refused: BTreeMap<String, u64>,
    wins: u64,
    win_samples: Vec<String>,
    /// Outcomes that are neither a clean refusal nor a clean run.
    anomalies: Vec<String>,
}

fn refusal_kind(e: &Value) -> String {
    let code = e["code"].as_i64().unwrap_or(-1);
    let name = e["name"].as_str().unwrap_or("?");
    let msg = e["message"].as_str().unwrap_or("");
    let why = if msg.contains("changed after it was checked") {
        "changed after it was checked"
    } else if msg.contains("symbolic link") {
        "symbolic link"
    } else if msg.contains("does not exist") {
        "does not exist"
    } else if code == 312 {
        "checksum mismatch"
    } else {
        "other"
    };
    format!("{code} {name}: {why}")
}

/// Judges one run's outcome into `t`.
fn judge(t: &mut Tally, pin: bool, code: i32, out: &str, err: &str) {
    let good_sha = sha256_hex(GOOD.as_bytes());
    let evil_sha = sha256_hex(EVIL.as_bytes());
    t.iterations += 1;
    let v: Value = match serde_json::from_str(out) {
        Ok(v) => v,
        Err(_) => {
            t.anomalies
                .push(format!("exit {code}, stdout not JSON: {out:?} {err}"));
            return;
        }
    };
    let status_sha = v["phases"]["pre"]["sha256"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let printed: Vec<String> = v["phases"]["pre"]["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["stdoutTail"].as_str())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(who) = printed.first() {
        *t.ran.entry(who.clone()).or_default() += 1;
        let ran_sha = match who.as_str() {
            "good" => &good_sha,
            "evil" => &evil_sha,
            other => {
                t.anomalies.push(format!("unknown identity {other:?}"));
                return;
            }
        };
        // Pinned: evil must never run at all. Always: what ran is what was
        // hashed.
        let win = (pin && who == "evil") || *ran_sha != status_sha;
        if win {
            t.wins += 1;
            if t.win_samples.len() < 3 {
                let checked = if status_sha == good_sha {
                    "good"
                } else if status_sha == evil_sha {
                    "evil"
                } else {
                    "?"
                };
                t.win_samples.push(format!(
                    "{who} ran, {checked} was checked (sha256 {status_sha})"
                ));
            }
        }
        if code != 0 || !v["errors"].as_array().is_some_and(|e| e.is_empty()) {
            t.anomalies
                .push(format!("ran {who} but exit {code}, errors {}", v["errors"]));
        }
        return;
    }
    match v["errors"].as_array().and_then(|e| e.first()) {
        Some(e) => {
            let kind = refusal_kind(e);
            if kind.ends_with("other") && t.anomalies.len() < 20 {
                t.anomalies.push(format!("refused: {e}"));
            }
            *t.refused.entry(kind).or_default() += 1;
        }
        None => t
            .anomalies
            .push(format!("exit {code}, nothing ran and no error: {out}")),
    }
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.iterations += o.iterations;
        self.swaps += o.swaps;
        self.wins += o.wins;
        for (k, n) in o.ran {
            *self.ran.entry(k).or_default() += n;
        }
        for (k, n) in o.refused {
            *self.refused.entry(k).or_default() += n;
        }
        let room = 3usize.saturating_sub(self.win_samples.len());
        self.win_samples
            .extend(o.win_samples.into_iter().take(room));
        self.anomalies.extend(o.anomalies);
    }
}

/// Concurrent `quiesce pre` runs per attack (each with its own run dir).
const RUNNERS: usize = 2;

/// One attack for the time budget; returns the tally.
fn attack_for(tag: &str, attack: Attack, pin: bool) -> Tally {
    let good_sha = sha256_hex(GOOD.as_bytes());
    let arena = Arc::new(Arena::new(tag, pin.then_some(good_sha.as_str())));
    // Sanity before the attack: the good script runs and is hashed as such.
    let (code, out, err) = arena.run_pre(0);
    assert_eq!(code, 0, "baseline run failed: {out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["phases"]["pre"]["sha256"], good_sha.as_str());

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let th = {
        let (arena, stop, swaps) = (Arc::clone(&arena), Arc::clone(&stop), Arc::clone(&swaps));
        std::thread::spawn(move || attacker(&arena, attack, stop, swaps))
    };
    let end = Instant::now() + budget();
    let runners: Vec<_> = (0..RUNNERS)
        .map(|n| {
            let arena = Arc::clone(&arena);
            std::thread::spawn(move || {
                let mut t = Tally::default();
                while Instant::now() < end {
                    let (code, out, err) = arena.run_pre(n);
                    judge(&mut t, pin, code, &out, &err);
                }
                t
            })
        })
        .collect();
    let mut t = Tally::default();
    for r in runners {
        t.merge(r.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    th.join().unwrap();
    t.swaps = swaps.load(Ordering::Relaxed);
    arena.restore();
    eprintln!(
        "race {:?}{}: iterations={} swaps={} ran={:?} refused={:?} wins={}{}",
        attack,
        if pin { " (pinned)" } else { "" },
        t.iterations,
        t.swaps,
        t.ran,
        t.refused,
        t.wins,
        if t.win_samples.is_empty() {
            String::new()
        } else {
            format!(" e.g. {:?}", t.win_samples)
        }
    );
    for a in t.anomalies.iter().take(5) {
        eprintln!("  anomaly: {a}");
    }
    t
}

fn run_all(pin: bool) {
    // One variant at a time: two attacks at once would share the CPUs.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut total = Tally::default();
    let mut wins_by = Vec::new();
    for (i, a) in ATTACKS.into_iter().enumerate() {
        let t = attack_for(&format!("race{}{i}", if pin { "p" } else { "" }), a, pin);
        assert!(t.swaps > 0, "{a:?}: the attacker never swapped");
        wins_by.push((a, t.wins));
        total.merge(t);
    }
    eprintln!(
        "race total{}: iterations={} swaps={} ran={:?} refused={:?} anomalies={} wins={} {:?}",
        if pin { " (pinned)" } else { "" },
        total.iterations,
        total.swaps,
        total.ran,
        total.refused,
        total.anomalies.len(),
        total.wins,
        wins_by
    );
    assert!(
        total.ran.get("good").copied().unwrap_or(0) > 0,
        "the good script never ran: the attack made every run fail, nothing was measured"
    );
    assert_eq!(
        total.wins, 0,
        "the attacker won {} time(s): a file other than the checked one ran ({wins_by:?})",
        total.wins
    );
    assert!(
        total.anomalies.is_empty(),
        "outcomes that are neither a clean run nor a named refusal: {:?}",
        &total.anomalies[..total.anomalies.len().min(5)]
    );
}

#[test]
fn the_file_that_runs_is_the_file_that_was_checked() {
    require_root!();
    run_all(false);
}

#[test]
fn with_a_pin_the_evil_script_never_runs() {
    require_root!();
    run_all(true);
}
