//! A stock dispatcher's directory taken over as applications (SPEC.md
//! §10): qemu-ga's `/etc/qemu/fsfreeze-hook.d` and VMware's
//! `/etc/vmware-tools/backupScripts.d` hold one script per application,
//! each called with `freeze` and `thaw`. With `--takeover-dir`, each script
//! the dispatcher would run is one application: its pre-script the file
//! with `freeze`, its post-script the same file with `thaw`, in the
//! dispatcher's order, under every check of §4 (a script must be
//! root-owned, mode 700, in root's directories) — so an existing set-up
//! keeps working under quiesce with one wrapper, and gains its timeout,
//! supervision and post-script guarantee.
//!
//! Each application's config is generated in the extension's format into
//! `STATE_DIR/takeover/` (root's, 0600, rewritten only when it changes), so
//! a pending post-script's record names a config that outlives a reboot,
//! and its recovery checks it like any other.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{ErrorCode, Fix, Problem};
use crate::freeze::state::RunDir;

/// Whose ignore rules decide which files of the directory run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// qemu's stock `fsfreeze-hook`: every executable of the directory's
    /// glob (`*`: no hidden files), but backups and package-manager
    /// leftovers (`*~`, `*.bak`, `*.orig`, `*.rpm*`, `*.sample`,
    /// `*.dpkg-*`).
    QemuGa,
    /// open-vm-tools' `scriptOps.c`: every regular file, hidden ones too;
    /// one it cannot run fails its quiesce (here: its pre-check fails).
    Vmware,
}

/// The directory taken over, and where its applications' configs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub dir: PathBuf,
    pub rules: Rules,
    /// `STATE_DIR/takeover`.
    pub configs: PathBuf,
}

/// Seconds each script may take: the stock dispatchers have no timeout,
/// and quiesce's budget must have one (the extension's default).
pub const TIMEOUT_SECS: u64 = 60;

/// Why qemu's dispatcher skips `name`, if it does.
fn qemu_ignores(name: &[u8], executable: bool) -> Option<&'static str> {
    let ends = |s: &str| name.ends_with(s.as_bytes());
    let has = |s: &str| name.windows(s.len()).any(|w| w == s.as_bytes());
    if name.starts_with(b".") {
        Some("a hidden file (the dispatcher's * does not match it)")
    } else if ends("~")
        || ends(".bak")
        || ends(".orig")
        || ends(".sample")
        || has(".rpm")
        || has(".dpkg-")
    {
        Some("a backup or package-manager leftover")
    } else if !executable {
        Some("not executable (the dispatcher skips it)")
    } else {
        None
    }
}

/// The scripts and the files the dispatcher skips (with why).
pub type Listing = (Vec<PathBuf>, Vec<(PathBuf, &'static str)>);

/// The scripts the dispatcher would run, in its order (bytewise, as the C
/// locale's glob and vmtoolsd's sort), and the others with why not. The
/// directory decides what runs as root: it must be root's (305 otherwise).
pub fn scripts(t: &Takeover) -> Result<Listing, Problem> {
    let bad = |why: String| {
        Problem::new(
            ErrorCode::IncorrectJSONConfigFile,
            format!(
                "takeover directory {}: {why}; nothing was run",
                t.dir.display()
            ),
        )
        .with_fix(Fix::RealDirectory(t.dir.clone()))
    };
    drop(crate::integrity::open_trusted_dir(&t.dir).map_err(|e| bad(e.rule()))?);
    let entries = std::fs::read_dir(&t.dir).map_err(|e| bad(format!("cannot list it ({e})")))?;
    let mut run = BTreeMap::new();
    let mut ignored = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        let name = e.file_name();
        let executable = md.permissions().mode() & 0o111 != 0;
        match (t.rules, qemu_ignores(name.as_bytes(), executable)) {
            (Rules::QemuGa, Some(why)) => ignored.push((path, why)),
            _ => {
                run.insert(name.as_bytes().to_vec(), path);
            }
        }
    }
    ignored.sort();
    Ok((run.into_values().collect(), ignored))
}

/// The generated config of `script` (the extension's format).
fn config_of(script: &Path) -> serde_json::Value {
    let name = script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    json!({
        "pluginName": "ScriptRunner",
        "appName": name,
        "preScriptLocation": script,
        "preScriptParams": ["freeze"],
        "postScriptLocation": script,
        "postScriptParams": ["thaw"],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": TIMEOUT_SECS,
        "continueBackupOnFailure": false,
        "fsFreezeEnabled": true
    })
}

/// The config file name of `script` in the configs directory.
fn config_name(script: &Path) -> String {
    let raw = script.file_name().map_or(OsStr::new("script"), |n| n);
    let name = raw.to_string_lossy().replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
        "_",
    );
    if name.as_bytes() == raw.as_bytes() {
        return format!("{name}.json");
    }
    // Two names that read the same once made safe stay two files.
    let hex: String = raw.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}-{hex}.json")
}

/// Each script's config, written (when it changed) and returned in order.
pub fn configs(t: &Takeover, scripts: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let dir = RunDir::new(&t.configs);
    let mut out = Vec::new();
    for s in scripts {
        let name = config_name(s);
        let value = config_of(s);
        let path = dir.file(&name);
        let wanted = serde_json::to_vec_pretty(&value).expect("json serialises");
        if std::fs::read(&path).ok().as_deref() != Some(wanted.as_slice()) {
            dir.write_json_durable(&name, &value).map_err(|e| {
                Problem::new(
                    ErrorCode::IncorrectJSONConfigFile,
                    format!(
                        "cannot write the generated config of {} ({e}); nothing was run",
                        s.display()
                    ),
                )
                .with_fix(Fix::CreateDirectory {
                    path: t.configs.clone(),
                    option: "--state-dir",
                })
            })?;
        }
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemus_ignore_rules() {
        assert_eq!(qemu_ignores(b"10-db", true), None);
        assert!(qemu_ignores(b"10-db", false).is_some());
        for n in [
            "x~",
            "x.bak",
            "x.orig",
            "x.rpmnew",
            "x.sample",
            "x.dpkg-old",
            ".hidden",
        ] {
            assert!(qemu_ignores(n.as_bytes(), true).is_some(), "{n}");
        }
    }

    #[test]
    fn a_generated_config_runs_the_script_with_freeze_and_thaw() {
        let v = config_of(Path::new("/etc/qemu/fsfreeze-hook.d/10-db"));
        assert_eq!(v["preScriptParams"][0], "freeze");
        assert_eq!(v["postScriptParams"][0], "thaw");
        assert_eq!(v["appName"], "10-db");
        assert_eq!(config_name(Path::new("/d/10-db")), "10-db.json");
        assert_ne!(
            config_name(Path::new("/d/a.sh")),
            config_name(Path::new("/d/a_sh"))
        );
    }
}
