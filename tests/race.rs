//! What can change the script that runs, and what a pin guarantees
//! (SPEC.md §4, issue 10).
//!
//! An unpinned script is executed by its configured path. That is safe
//! because every directory above it must be root-owned and not group- or
//! world-writable: only root can change what the path names, and root is not
//! the attacker this defends against. The tests here play the attacker as
//! `nobody`: every rename, symbolic-link or parent-directory swap fails on a
//! path that passes the checks, and a path that `nobody` could change is
//! refused before anything runs. A pin is the answer to root itself
//! rewriting the file: the pinned script runs exactly its hashed bytes, even
//! when the file is rewritten in place after the check.

mod common;

use common::{Scratch, NOBODY};
use serde_json::{json, Value};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const GOOD: &str = "#!/bin/sh\necho good\n";
const EVIL: &str = "#!/bin/sh\necho evil\n";

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A script tree that `nobody` can traverse and read (so the only thing
/// between it and the script is the ownership and mode of each directory),
/// and a directory of `nobody`'s own holding its evil twins.
struct Arena {
    /// Root-owned 0755, under /run (root-owned 0755).
    base: PathBuf,
    config: PathBuf,
    /// `<base>/d`, root-owned 0755.
    dir: PathBuf,
    /// `<base>/d/pre.sh`, root-owned 0700.
    script: PathBuf,
    /// `<base>/nobody`, owned by nobody: `evil.sh` and `d/pre.sh`.
    own: PathBuf,
}

impl Arena {
    fn new(tag: &str) -> Arena {
        let base = PathBuf::from(format!("/run/quiesce-race-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let _ = std::fs::remove_dir_all(format!("{}-cfg", base.display()));
        let mkdir = |p: &Path, mode: u32| {
            std::fs::create_dir_all(p).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let write = |p: &Path, body: &str, mode: u32| {
            std::fs::write(p, body).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mkdir(&base, 0o755);
        let dir = base.join("d");
        mkdir(&dir, 0o755);
        let script = dir.join("pre.sh");
        write(&script, GOOD, 0o700);
        let post = dir.join("post.sh");
        write(&post, "#!/bin/sh\nexit 0\n", 0o700);
        let own = base.join("nobody");
        mkdir(&own.join("d"), 0o755);
        write(&own.join("evil.sh"), EVIL, 0o755);
        write(&own.join("d/pre.sh"), EVIL, 0o755);
        for p in [
            &own,
            &own.join("d"),
            &own.join("evil.sh"),
            &own.join("d/pre.sh"),
        ] {
            common::chown(p, NOBODY);
        }
        // Outside `base`, whose weakening must only touch the script path.
        let cfg_dir = PathBuf::from(format!("{}-cfg", base.display()));
        mkdir(&cfg_dir, 0o700);
        let config = cfg_dir.join("config.json");
        let cfg = json!({
            "pluginName": "ScriptRunner",
            "preScriptLocation": script,
            "postScriptLocation": post,
            "timeoutInSeconds": 10,
            "continueBackupOnFailure": true,
            "fsFreezeEnabled": true
        });
        write(&config, &cfg.to_string(), 0o600);
        Arena {
            base,
            config,
            dir,
            script,
            own,
        }
    }

    fn run_pre(&self) -> Value {
        let out = common::quiesce_bin()
            .arg("--config")
            .arg(&self.config)
            .arg("--host-config")
            .arg(self.base.join("no-host.conf"))
            .args(common::private_args(self.config.parent().unwrap()))
            .args(["pre", "--json"])
            .output()
            .unwrap();
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    /// Every swap an attacker would try, each made as `nobody`; returns the
    /// names of those that succeeded.
    fn swaps_as_nobody(&self) -> Vec<&'static str> {
        let (script, dir, own) = (cpath(&self.script), cpath(&self.dir), cpath(&self.own));
        let evil = cpath(&self.own.join("evil.sh"));
        let link = cpath(&self.dir.join(".link"));
        let twin = cpath(&self.own.join("d"));
        let aside = cpath(&self.base.join("d.old"));
        let tries: [(&'static str, Swap); 7] = [
            (
                "rename over the script",
                Swap::Rename(evil.clone(), script.clone()),
            ),
            (
                "symbolic link next to it",
                Swap::Symlink(evil.clone(), link),
            ),
            ("write into the script", Swap::Write(script.clone())),
            ("unlink the script", Swap::Unlink(script.clone())),
            ("exchange its directory", Swap::Exchange(dir.clone(), twin)),
            (
                "rename its directory aside",
                Swap::Rename(dir.clone(), aside),
            ),
            ("rename its directory away", Swap::Rename(dir, own)),
        ];
        tries
            .iter()
            .filter(|(_, swap)| as_nobody(swap))
            .map(|(name, _)| *name)
            .collect()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        common::end_quiesce_processes_of(self.config.parent().unwrap());
        common::end_quiesce_processes_of(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(self.config.parent().unwrap());
    }
}

enum Swap {
    Rename(CString, CString),
    Symlink(CString, CString),
    Write(CString),
    Unlink(CString),
    Exchange(CString, CString),
}

/// Runs one swap in a child that became `nobody`; true when it succeeded.
fn as_nobody(swap: &Swap) -> bool {
    // SAFETY: fork(2); the child makes only raw, async-signal-safe syscalls
    // on the CStrings built before the fork, then _exit(2)s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child; see above. Exit 0 = the swap succeeded.
        unsafe {
            if libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                libc::_exit(2);
            }
            let r = match swap {
                Swap::Rename(a, b) => libc::rename(a.as_ptr(), b.as_ptr()),
                Swap::Symlink(a, b) => libc::symlink(a.as_ptr(), b.as_ptr()),
                Swap::Write(p) => libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_TRUNC).min(0),
                Swap::Unlink(p) => libc::unlink(p.as_ptr()),
                Swap::Exchange(a, b) => libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                ) as i32,
            };
            libc::_exit(if r == 0 { 0 } else { 1 })
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 2,
        "setuid failed"
    );
    libc::WEXITSTATUS(status) == 0
}

fn printed(v: &Value) -> String {
    v["phases"]["pre"]["attempts"][0]["stdoutTail"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn nobody_cannot_swap_a_script_whose_path_passes_the_checks() {
    require_root!();
    let a = Arena::new("swap");
    assert_eq!(a.swaps_as_nobody(), Vec::<&str>::new());
    let v = a.run_pre();
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(printed(&v), "good\n");
}

#[test]
fn a_path_nobody_could_change_is_refused_before_anything_runs() {
    require_root!();
    type Weaken = (&'static str, fn(&Arena));
    let weaken: [Weaken; 4] = [
        ("script directory owned by nobody", |a| {
            common::chown(&a.dir, NOBODY)
        }),
        ("script directory 0777", |a| chmod(&a.dir, 0o777)),
        ("script directory sticky 1777", |a| chmod(&a.dir, 0o1777)),
        ("grandparent owned by nobody", |a| {
            common::chown(&a.base, NOBODY)
        }),
    ];
    for (what, f) in weaken {
        let a = Arena::new("weak");
        f(&a);
        // The run refuses the path while it is still intact...
        let v = a.run_pre();
        assert_eq!(v["errors"][0]["code"], 306, "{what}: {v}");
        assert_eq!(printed(&v), "", "{what}: something ran");
        // ...because nobody can now change what it names...
        assert!(
            !a.swaps_as_nobody().is_empty(),
            "{what}: nobody still could not swap anything"
        );
        // ...and after nobody's swaps nothing runs either.
        let v = a.run_pre();
        let code = v["errors"][0]["code"].as_i64();
        assert!(matches!(code, Some(302 | 306)), "{what}: {v}");
        assert_eq!(printed(&v), "", "{what}: something ran after the swap");
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `quiesce snapshot` without a freeze, whose pre-script rewrites the
/// post-script in place (same inode) after the pre-check hashed it: what
/// the post-script then prints.
fn post_after_in_place_rewrite(pin: bool) -> String {
    let s = Scratch::new(if pin { "inplace-pin" } else { "inplace" });
    let post = s.write("scripts/post.sh", "#!/bin/sh\necho checked\n", 0o700);
    s.mkdir("scripts", 0o700);
    let pre = s.write(
        "scripts/pre.sh",
        format!(
            "#!/bin/sh\nprintf '#!/bin/sh\\necho rewritten\\n' > '{}'\n",
            post.display()
        ),
        0o700,
    );
    let ino = std::fs::metadata(&post).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let mut cfg = json!({
        "pluginName": "ScriptRunner",
        "preScriptLocation": pre,
        "postScriptLocation": post,
        "timeoutInSeconds": 10,
        "continueBackupOnFailure": true,
        "fsFreezeEnabled": false
    });
    if pin {
        let sha: String = sha256_hex(b"#!/bin/sh\necho checked\n");
        cfg["postScriptSha256"] = json!(sha);
    }
    let config = s.write("config.json", cfg.to_string(), 0o600);
    let out = common::quiesce_bin()
        .arg("--config")
        .arg(&config)
        .arg("--host-config")
        .arg(s.path("no-host.conf"))
        .args(common::private_args(&s.dir))
        .args(["snapshot", "--json", "--", "true"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], json!([]), "{v}");
    // The rewrite really happened, in place.
    assert_eq!(
        std::fs::read_to_string(&post).unwrap(),
        "#!/bin/sh\necho rewritten\n"
    );
    assert_eq!(
        std::fs::metadata(&post)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        ino.ok()
    );
    v["phases"]["post"]["attempts"][0]["stdoutTail"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn a_pinned_script_runs_its_hashed_bytes_even_when_rewritten_in_place() {
    require_root!();
    assert_eq!(post_after_in_place_rewrite(true), "checked\n");
    // Without a pin the path runs what it holds at the exec: the documented
    // limit (a root process rewriting a script is not defended against).
    assert_eq!(post_after_in_place_rewrite(false), "rewritten\n");
}
