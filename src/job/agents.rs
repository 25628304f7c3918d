//! `quiesce check --hook AGENT` (SPEC.md §10): whether the agent is
//! installed and set up to call quiesce. Each agent's own configuration is
//! read the way the agent reads it; nothing is changed or executed.
//!
//! - qemu-ga calls a hook only when started with `-F` (Debian's unit starts
//!   it without): every running qemu-ga is found in `/proc`, its hook read
//!   from its command line (`-F`, `-FPATH`, `--fsfreeze-hook[=PATH]`) or
//!   from `/etc/qemu/qemu-ga.conf`'s `fsfreeze-hook`.
//! - vmtoolsd runs `backupScripts.d` unless `[vmbackup] execScripts` is
//!   false in `/etc/vmware-tools/tools.conf`.
//! - Google's guest agent runs `/etc/google/snapshots/{pre,post}.sh` only
//!   with `[Snapshots] enabled = true` in `/etc/default/instance_configs.cfg`.
//! - AWS DLM runs what its SSM document says: only the agent's presence can
//!   be seen from the guest.

use std::path::{Path, PathBuf};

use crate::error::{ErrorCode, Problem};
use crate::job::hook::Agent;

/// What `check --hook` found: lines to say, and what keeps the agent from
/// calling quiesce.
#[derive(Debug, Default)]
pub struct AgentFindings {
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
}

impl AgentFindings {
    fn problem(&mut self, detail: String) {
        self.problems
            .push(Problem::new(ErrorCode::AgentHookMissing, detail));
    }
}

/// qemu-ga's default hook (`-F` without a path).
pub const QEMU_GA_DEFAULT_HOOK: &str = "/etc/qemu/fsfreeze-hook";
/// Where the packages install the wrappers.
pub const WRAPPERS_DIR: &str = "/usr/share/quiesce/hooks";

/// Whether `path` is one of quiesce's wrappers for `agent`: its head names
/// quiesce and a line of it runs `… hook [OPTIONS] AGENT`.
pub fn is_wrapper(path: &Path, agent: Agent) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    head.contains("quiesce") && head.lines().any(|l| runs_hook(l, agent))
}

/// Whether a shell line runs the hook for `agent`.
fn runs_hook(line: &str, agent: Agent) -> bool {
    let line = line.trim_start();
    if line.starts_with('#') {
        return false;
    }
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
        .collect();
    words
        .iter()
        .position(|w| *w == "hook")
        .is_some_and(|i| words[i + 1..].contains(&agent.name()))
}

/// Checks that `agent` is present and calls quiesce.
pub fn check(agent: Agent) -> AgentFindings {
    let mut f = AgentFindings::default();
    match agent {
        Agent::QemuGa => qemu_ga(&mut f),
        Agent::Vmware => vmware(&mut f),
        Agent::Gce => gce(&mut f),
        Agent::AwsDlm => aws(&mut f),
    }
    f
}

fn installed(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The hook a qemu-ga command line names: `Some(None)` without `-F`,
/// `Some(Some(path))` with it.
pub fn qemu_ga_hook(argv: &[String]) -> Option<PathBuf> {
    for a in argv.iter().skip(1) {
        if a == "-F" || a == "--fsfreeze-hook" {
            return Some(QEMU_GA_DEFAULT_HOOK.into());
        }
        if let Some(p) = a.strip_prefix("--fsfreeze-hook=") {
            return Some(p.into());
        }
        if let Some(p) = a.strip_prefix("-F") {
            if !p.starts_with('-') && !p.is_empty() {
                return Some(p.into());
            }
        }
    }
    None
}

/// Running processes whose `comm` is `name`: pid and argv.
fn processes(name: &str) -> Vec<(i32, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (pid, argv)
        })
        .collect()
}

fn qemu_ga(f: &mut AgentFindings) {
    match installed(&["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]) {
        Some(p) => f.notes.push(format!("qemu-ga installed: {}", p.display())),
        None => f.problem("qemu-ga is not installed (package qemu-guest-agent)".into()),
    }
    let running = processes("qemu-ga");
    if running.is_empty() {
        f.problem("qemu-ga is not running: the host's freeze requests reach no agent".into());
    }
    let conf_hook = ini_value(
        Path::new("/etc/qemu/qemu-ga.conf"),
        "general",
        "fsfreeze-hook",
    );
    for (pid, argv) in running {
        let hook = qemu_ga_hook(&argv).or_else(|| conf_hook.clone().map(PathBuf::from));
        match hook {
            None => f.problem(format!(
                "qemu-ga (pid {pid}) runs without -F: it calls no fsfreeze hook, so no pre-script runs before its freeze; start it with -F{WRAPPERS_DIR}/qemu-ga (a drop-in for qemu-guest-agent.service, see the README)"
            )),
            Some(h) if is_wrapper(&h, Agent::QemuGa) => f.notes.push(format!(
                "qemu-ga (pid {pid}) calls {} : quiesce's hook",
                h.display()
            )),
            Some(h) => f.problem(format!(
                "qemu-ga (pid {pid}) calls {}, which is not quiesce's wrapper (the stock dispatcher has no timeout and exits 0 when a script fails); point -F at {WRAPPERS_DIR}/qemu-ga",
                h.display()
            )),
        }
    }
}

fn vmware(f: &mut AgentFindings) {
    match installed(&["/usr/bin/vmtoolsd", "/usr/sbin/vmtoolsd"]) {
        Some(p) => f.notes.push(format!("vmtoolsd installed: {}", p.display())),
        None => f.problem("vmtoolsd is not installed (package open-vm-tools)".into()),
    }
    let conf = Path::new("/etc/vmware-tools/tools.conf");
    if ini_value(conf, "vmbackup", "execScripts").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        f.problem(format!(
            "{}: [vmbackup] execScripts = false: vmtoolsd runs no backup script",
            conf.display()
        ));
    }
    let dir = Path::new("/etc/vmware-tools/backupScripts.d");
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    let ours: Vec<&PathBuf> = files
        .iter()
        .filter(|p| is_wrapper(p, Agent::Vmware))
        .collect();
    if ours.is_empty() {
        f.problem(format!(
            "no file of {} runs quiesce: copy {WRAPPERS_DIR}/vmware there",
            dir.display()
        ));
    }
    for other in files.iter().filter(|p| !is_wrapper(p, Agent::Vmware)) {
        f.notes.push(format!(
            "{} also runs there, outside quiesce (vmtoolsd runs every regular file, with no timeout of its own)",
            other.display()
        ));
    }
}

fn gce(f: &mut AgentFindings) {
    match installed(&["/usr/bin/google_guest_agent", "/usr/bin/google-guest-agent"]) {
        Some(p) => f
            .notes
            .push(format!("Google's guest agent installed: {}", p.display())),
        None => f.problem("Google's guest agent is not installed (google-guest-agent)".into()),
    }
    let cfg = Path::new("/etc/default/instance_configs.cfg");
    if !ini_value(cfg, "Snapshots", "enabled").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        f.problem(format!(
            "{}: [Snapshots] enabled = true is missing: the agent runs no snapshot script",
            cfg.display()
        ));
    }
    for (name, call) in [("pre.sh", "pre"), ("post.sh", "post")] {
        let p = Path::new("/etc/google/snapshots").join(name);
        if !is_wrapper(&p, Agent::Gce) {
            f.problem(format!(
                "{} is not quiesce's wrapper (install {WRAPPERS_DIR}/gce there: it is called with {call} and the disk list)",
                p.display()
            ));
        }
    }
}

fn aws(f: &mut AgentFindings) {
    match installed(&[
        "/usr/bin/amazon-ssm-agent",
        "/snap/amazon-ssm-agent/current/amazon-ssm-agent",
    ]) {
        Some(p) => f.notes.push(format!(
            "amazon-ssm-agent installed: {} (the DLM policy's SSM document must run {WRAPPERS_DIR}/aws-dlm; that is configured in AWS, not here)",
            p.display()
        )),
        None => f.problem("amazon-ssm-agent is not installed: DLM pre and post scripts run through it".into()),
    }
}

/// The value of `key` in section `[section]` of an INI file, as the
/// agents' parsers read it (`key = value` or `key=value`, `#`/`;`
/// comments).
pub fn ini_value(path: &Path, section: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    ini_lookup(&text, section, key)
}

fn ini_lookup(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.trim().to_string();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_hook_of_a_qemu_ga_command_line() {
        let d = Some(PathBuf::from(QEMU_GA_DEFAULT_HOOK));
        assert_eq!(qemu_ga_hook(&argv(&["qemu-ga"])), None);
        assert_eq!(qemu_ga_hook(&argv(&["qemu-ga", "-F"])), d);
        assert_eq!(qemu_ga_hook(&argv(&["qemu-ga", "--fsfreeze-hook"])), d);
        assert_eq!(
            qemu_ga_hook(&argv(&["qemu-ga", "-m", "x", "-F/a/hook"])),
            Some("/a/hook".into())
        );
        assert_eq!(
            qemu_ga_hook(&argv(&["qemu-ga", "--fsfreeze-hook=/b"])),
            Some("/b".into())
        );
        assert_eq!(qemu_ga_hook(&argv(&["qemu-ga", "-f", "/pid"])), None);
    }

    #[test]
    fn a_wrapper_line_runs_the_agents_hook() {
        assert!(runs_hook(
            "exec /usr/bin/quiesce hook qemu-ga \"$@\"",
            Agent::QemuGa
        ));
        assert!(runs_hook(
            "exec '/x/quiesce' '--config' '/c' 'hook' '--mount' '/m' qemu-ga \"$@\"",
            Agent::QemuGa
        ));
        assert!(!runs_hook(
            "exec /usr/bin/quiesce hook gce \"$@\"",
            Agent::QemuGa
        ));
        assert!(!runs_hook("# exec quiesce hook qemu-ga", Agent::QemuGa));
        assert!(runs_hook(
            "exec \"$bin\" hook gce \"$call\" \"$@\"",
            Agent::Gce
        ));
        assert!(!runs_hook(
            "for f in fsfreeze-hook.d/*; do \"$f\" \"$@\"; done",
            Agent::QemuGa
        ));
    }

    #[test]
    fn ini_values_as_the_agents_read_them() {
        let text = "[Snapshots]\n# x\nenabled = true\n[vmbackup]\nexecScripts=false\n";
        assert_eq!(
            ini_lookup(text, "Snapshots", "enabled").as_deref(),
            Some("true")
        );
        assert_eq!(
            ini_lookup(text, "vmbackup", "execScripts").as_deref(),
            Some("false")
        );
        assert_eq!(ini_lookup(text, "Snapshots", "execScripts"), None);
    }
}
