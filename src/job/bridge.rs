//! Bridge mode: the Azure Backup extension keeps doing the freeze, and its
//! pre/post "scripts" are quiesce's hook, which runs quiesce's own config
//! under full supervision, sandbox and audit.
//!
//! The extension runs `sh <preScriptLocation> <preScriptParams...>` as root.
//! An operator points both locations of the extension's config at
//! [`HOOK_PATH`] with params `["pre"]` / `["post"]`; the hook execs
//! `quiesce --config` [`BRIDGE_CONFIG_PATH`] `pre|post`, and its exit status
//! is what the extension sees. `quiesce check` uses this module to recognise
//! that set-up ([`detect`]) and to verify it ([`verify`], or [`check`] for
//! the whole job): the phase parameters, that quiesce's own timeout fits
//! inside the extension's, and that quiesce's own config does not point back
//! at the hook (a loop: hook → quiesce → hook → …).
//!
//! Every finding about a config file's content is `IncorrectJSONConfigFile`
//! (305): the fix is always a key of a config file, which the message names,
//! and the extension uses the same row for a config it cannot act on.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::{ErrorCode, Fix, Problem};
use crate::job::apps;
use crate::job::phase::Phase;
use crate::job::preflight as precheck;

/// Where the packages install the hook.
pub const HOOK_PATH: &str = "/usr/lib/quiesce/extension-hook";
/// quiesce's own config in bridge mode (the extension's format), when it
/// has no apps directory.
pub use crate::config::BRIDGE_CONFIG_PATH;
/// A line every copy of the hook carries, so a copy at another path is still
/// recognised as the hook (and still refused as quiesce's own script).
pub const HOOK_MARKER_LINE: &str = "# quiesce: extension-hook (bridge mode, see quiesce(8))";
/// What quiesce needs around its scripts' budget: start-up and trust checks
/// before the first attempt, reaping, the holders' clean-up and the report
/// after the last. Generous: being killed by the extension mid-clean-up is
/// what this margin exists to prevent.
pub const START_STOP_MARGIN: Duration = Duration::from_secs(3);
/// Only the head of a script is searched for [`HOOK_MARKER_LINE`].
const MARKER_SEARCH_BYTES: u64 = 4096;

/// Where the hook and quiesce's own bridge config are (the packaged paths by
/// default; tests point them at scratch files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePaths {
    pub hook: PathBuf,
    pub own_config: PathBuf,
    /// quiesce's own applications, when the directory exists.
    pub own_apps_dir: PathBuf,
    /// quiesce's own applications named on the command line of a
    /// `--bridge` run (the hook passes `QUIESCE_CONFIG` on as `--config`);
    /// when given, they are the set, as for that run.
    pub own_explicit: Vec<PathBuf>,
}

impl Default for BridgePaths {
    fn default() -> Self {
        BridgePaths {
            hook: HOOK_PATH.into(),
            own_config: BRIDGE_CONFIG_PATH.into(),
            own_apps_dir: crate::config::DEFAULT_APPS_DIR.into(),
            own_explicit: Vec::new(),
        }
    }
}

impl BridgePaths {
    /// The set a `quiesce --bridge` run with these sources would run: the
    /// packaged hook's, with the run's `--apps-dir` (and `--config`, when
    /// the run is `--bridge`).
    pub fn of(sources: &apps::AppSources) -> BridgePaths {
        BridgePaths {
            own_apps_dir: sources.apps_dir.clone(),
            own_explicit: if sources.bridge {
                sources.explicit.clone()
            } else {
                Vec::new()
            },
            ..BridgePaths::default()
        }
    }
}

/// The extension's config runs quiesce's hook for at least one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeSetup {
    /// The extension's config file (named in messages).
    pub extension_path: PathBuf,
    /// The extension's config as loaded (clamps already applied).
    pub extension: Config,
    /// The hook path this set-up was recognised against.
    pub hook: PathBuf,
    /// `preScriptLocation` names the hook.
    pub pre_hooked: bool,
    /// `postScriptLocation` names the hook.
    pub post_hooked: bool,
}

/// What the bridge verification found. `problems` make `check` fail (a
/// snapshot would not be application-consistent); `warnings` do not;
/// `notes` are the human lines that describe the set-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// Recognises bridge mode: the extension's config (`extension`, loaded from
/// `extension_path`) has a script location that names the hook — the same
/// path, a path that resolves to the same file, or a copy of the hook (its
/// marker line). `None`: standalone mode, nothing to verify.
pub fn detect(
    extension_path: &Path,
    extension: &Config,
    paths: &BridgePaths,
) -> Option<BridgeSetup> {
    let pre_hooked = names_hook(&extension.pre.location, &paths.hook);
    let post_hooked = names_hook(&extension.post.location, &paths.hook);
    (pre_hooked || post_hooked).then(|| BridgeSetup {
        extension_path: extension_path.to_path_buf(),
        extension: extension.clone(),
        hook: paths.hook.clone(),
        pre_hooked,
        post_hooked,
    })
}

/// Verifies a recognised set-up against quiesce's own config `own` (loaded
/// from `own_path`). `kill_grace` is the policy's grace period between
/// SIGTERM and SIGKILL of a timed-out script: part of the worst case.
pub fn verify(
    setup: &BridgeSetup,
    own_path: &Path,
    own: &Config,
    kill_grace: Duration,
) -> Findings {
    verify_set(setup, &[(own_path.to_path_buf(), own.clone())], kill_grace)
}

/// Verifies a recognised set-up against quiesce's own applications (SPEC
/// §3.1: the hook's `pre` runs all of them in order, its `post` all of them
/// in reverse, inside one extension timeout each).
pub fn verify_set(
    setup: &BridgeSetup,
    own: &[(PathBuf, Config)],
    kill_grace: Duration,
) -> Findings {
    let mut out = Findings::default();
    let ext = &setup.extension;
    let ext_path = setup.extension_path.display();
    let bad = |detail: String, path: &Path, key: String| {
        Problem::new(ErrorCode::IncorrectJSONConfigFile, detail).with_fix(Fix::Key {
            path: path.to_path_buf(),
            key,
        })
    };
    verify_hook_params(setup, own, &mut out);

    for (own_path, own) in own {
        let own_disp = own_path.display();
        // A loop: quiesce's own config runs the hook, which runs quiesce again.
        for phase in [Phase::Pre, Phase::Post] {
            let loc = &own_script(own, phase).location;
            if names_hook(loc, &setup.hook) {
                out.problems.push(bad(
                    format!(
                        "{own_disp}: {}ScriptLocation {} is the quiesce extension hook: quiesce would run the hook, which runs quiesce again (a loop); point it at the application's {}-script",
                        phase.name(),
                        loc.display(),
                        phase.name()
                    ),
                    own_path,
                    format!("{}ScriptLocation", phase.name()),
                ));
            }
        }
        // The extension decides what follows a failure and whether to freeze.
        if own.continue_on_failure != ext.continue_on_failure {
            out.warnings.push(format!(
                "{own_disp}: continueBackupOnFailure={} is not used in bridge mode; the extension's ({}, in {ext_path}) decides what follows a failed script",
                own.continue_on_failure, ext.continue_on_failure
            ));
        }
        if own.fs_freeze_enabled != ext.fs_freeze_enabled {
            out.warnings.push(format!(
                "{own_disp}: fsFreezeEnabled={} is not used in bridge mode; the extension freezes (fsFreezeEnabled={} in {ext_path})",
                own.fs_freeze_enabled, ext.fs_freeze_enabled
            ));
        }
    }

    let need = verify_budget(setup, own, kill_grace, &mut out);
    let own_disp: Vec<String> = own.iter().map(|(p, _)| p.display().to_string()).collect();
    out.notes.push(format!(
        "bridge mode: the extension ({ext_path}) runs {} pre|post, which runs quiesce --bridge ({}); budget per phase {need} s of the extension's {} s",
        setup.hook.display(),
        own_disp.join(", "),
        ext.timeout_secs
    ));
    out
}

/// Both phases through the hook, each with its own phase name.
fn verify_hook_params(setup: &BridgeSetup, own: &[(PathBuf, Config)], out: &mut Findings) {
    let ext = &setup.extension;
    let ext_path = setup.extension_path.display();
    let bad = |detail: String, key: String| {
        Problem::new(ErrorCode::IncorrectJSONConfigFile, detail).with_fix(Fix::Key {
            path: setup.extension_path.clone(),
            key,
        })
    };
    for (phase, hooked, other_hooked, script) in [
        (Phase::Pre, setup.pre_hooked, setup.post_hooked, &ext.pre),
        (Phase::Post, setup.post_hooked, setup.pre_hooked, &ext.post),
    ] {
        let name = phase.name();
        if !hooked {
            if !other_hooked {
                continue;
            }
            // Half a bridge leaves quiesce's pre and post unpaired: what
            // quiesce's pre-script paused (and the holders it left) would
            // never be resumed by quiesce's post-script.
            out.problems.push(bad(
                format!(
                    "{ext_path}: {name}ScriptLocation is {} but the other phase runs the quiesce hook {}; in bridge mode both phases must run the hook (params [\"pre\"] and [\"post\"]), or neither",
                    script.location.display(),
                    setup.hook.display()
                ),
                format!("{name}ScriptLocation"),
            ));
            continue;
        }
        let args = phase_args(&script.params);
        if args != [name] {
            out.problems.push(bad(
                format!(
                    "{ext_path}: {name}ScriptLocation runs the quiesce hook, so {name}ScriptParams must be [\"{name}\"], not {:?}",
                    script.params
                ),
                format!("{name}ScriptParams"),
            ));
        }
        if script.retries > 0 {
            let own_retries = own
                .iter()
                .map(|(_, c)| own_script(c, phase).retries)
                .max()
                .unwrap_or(0);
            let where_ = match own {
                [(p, _)] => p.display().to_string(),
                _ => "quiesce's own configs".to_string(),
            };
            out.warnings.push(format!(
                "{ext_path}: {name}ScriptNoOfRetries is {}: in bridge mode set the retries in {where_} and 0 in the extension's config, or a failing {name}-script runs {} times",
                script.retries,
                (u64::from(script.retries) + 1) * (u64::from(own_retries) + 1)
            ));
        }
    }
}

/// One budget per phase, all attempts included (SPEC §3), then the kill
/// grace of a timeout — for each application, as they run one after
/// another — then start and stop. Returns what the phase needs.
fn verify_budget(
    setup: &BridgeSetup,
    own: &[(PathBuf, Config)],
    kill_grace: Duration,
    out: &mut Findings,
) -> u64 {
    let ext_path = setup.extension_path.display();
    let grace = kill_grace.as_secs();
    let margin = START_STOP_MARGIN.as_secs();
    let need: u64 = own.iter().map(|(_, c)| c.timeout_secs + grace).sum::<u64>() + margin;
    let room = setup.extension.timeout_secs;
    if need <= room {
        return need;
    }
    let problem = match own {
        [(own_path, c)] => {
            let fit = room.saturating_sub(grace + margin);
            let fix = if fit >= 1 {
                format!("lower it to at most {fit} or raise the extension's to at least {need}")
            } else {
                format!("raise the extension's timeoutInSeconds to at least {need}")
            };
            format!(
                "{}: timeoutInSeconds {} plus the kill grace ({grace} s) and {margin} s to start and stop needs {need} s, but the extension's timeoutInSeconds in {ext_path} is {room} s: the extension would kill quiesce before it has reaped and reported; {fix}",
                own_path.display(),
                c.timeout_secs,
            )
        }
        _ => {
            let each: Vec<String> = own
                .iter()
                .map(|(p, c)| format!("{} {} s", p.display(), c.timeout_secs))
                .collect();
            format!(
                "quiesce's {} applications run one after another in each phase: their timeoutInSeconds ({}) plus the kill grace ({grace} s) of each and {margin} s to start and stop need {need} s, but the extension's timeoutInSeconds in {ext_path} is {room} s: the extension would kill quiesce before the last application's script has run; raise the extension's timeoutInSeconds to at least {need} or lower the applications' timeouts",
                own.len(),
                each.join(", ")
            )
        }
    };
    out.problems.push(
        Problem::new(ErrorCode::IncorrectJSONConfigFile, problem).with_fix(Fix::Key {
            path: setup.extension_path.clone(),
            key: "timeoutInSeconds".into(),
        }),
    );
    need
}

/// The whole bridge check for `quiesce check`: recognise the set-up, load
/// and trust-check quiesce's own applications (the apps directory when it
/// exists, else quiesce's own config) and both scripts of each, verify.
/// `None` in standalone mode. `host_timeout` is the plugin-host file's cap
/// (it applies to both sets, as both runs read the same file).
pub fn check(
    extension_path: &Path,
    extension: &Config,
    paths: &BridgePaths,
    host_timeout: Option<u64>,
    kill_grace: Duration,
) -> Option<Findings> {
    let setup = detect(extension_path, extension, paths)?;
    let mut out = Findings::default();
    let unusable = |p: Problem| {
        Problem {
        detail: format!(
            "bridge mode: {} runs the quiesce hook, but quiesce's own configuration cannot be used: {}",
            extension_path.display(),
            p.detail
        ),
        ..p
    }
    };
    let own_set = if paths.own_explicit.is_empty() {
        apps::own_set(&paths.own_apps_dir, &paths.own_config)
    } else {
        Ok(paths.own_explicit.clone())
    };
    let own_paths = match own_set {
        Ok(p) => p,
        Err(p) => {
            out.problems.push(unusable(p));
            return Some(out);
        }
    };
    let mut own = Vec::new();
    for path in own_paths {
        match precheck::load_config(&path, host_timeout) {
            Ok((loaded, _digest)) => {
                out.problems.extend(precheck::typos(&path, &loaded));
                out.warnings.extend(loaded.warnings);
                own.push((path, loaded.config));
            }
            Err(p) => out.problems.push(unusable(p)),
        }
    }
    if own.is_empty() {
        return Some(out);
    }
    let verified = verify_set(&setup, &own, kill_grace);
    out.problems.extend(verified.problems);
    out.warnings.extend(verified.warnings);
    out.notes.extend(verified.notes);
    for (path, config) in &own {
        for phase in [Phase::Pre, Phase::Post] {
            match precheck::check_script(phase, own_script(config, phase)) {
                Ok(s) => out.notes.push(format!(
                    "bridge mode: quiesce's {}-script ok: {} (sha256 {})",
                    phase.name(),
                    s.file.path.display(),
                    s.sha256
                )),
                Err(p) => out.problems.push(Problem {
                    detail: format!("{}: {}", path.display(), p.detail),
                    ..p
                }),
            }
        }
    }
    Some(out)
}

fn own_script(own: &Config, phase: Phase) -> &crate::config::ScriptConfig {
    match phase {
        Phase::Pre => &own.pre,
        Phase::Post => &own.post,
    }
}

/// The hook's arguments as it sees them: trailing empty strings dropped (the
/// shipped sample's `["", ""]` style; the hook ignores them too).
fn phase_args(params: &[String]) -> Vec<&str> {
    let keep = params
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    params[..keep].iter().map(String::as_str).collect()
}

/// Whether `script` is the hook: the same path, the same file through links
/// (path resolution or a hard link), or a copy carrying the marker line.
/// Identification only; trust is the pre-check's job.
pub fn names_hook(script: &Path, hook: &Path) -> bool {
    if script.as_os_str().is_empty() {
        return false;
    }
    if script == hook {
        return true;
    }
    if let (Ok(a), Ok(b)) = (script.canonicalize(), hook.canonicalize()) {
        if a == b {
            return true;
        }
    }
    if let (Ok(a), Ok(b)) = (std::fs::metadata(script), std::fs::metadata(hook)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return true;
        }
    }
    carries_marker(script)
}

fn carries_marker(path: &Path) -> bool {
    // Regular files only: never block opening a FIFO named by a config.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        _ => return false,
    }
    let mut head = Vec::new();
    match File::open(path) {
        Ok(f) => {
            if f.take(MARKER_SEARCH_BYTES).read_to_end(&mut head).is_err() {
                return false;
            }
        }
        Err(_) => return false,
    }
    String::from_utf8_lossy(&head)
        .lines()
        .any(|l| l.trim_end() == HOOK_MARKER_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory for identity tests (no trust check involved, so
    /// any owner and the system temp directory are fine).
    struct Tmp(PathBuf);
    impl Tmp {
        fn new() -> Tmp {
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!(
                "quiesce-bridge-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Tmp(d)
        }
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HOOK_TEXT: &str = concat!(
        "#!/bin/sh\n",
        "# quiesce: extension-hook (bridge mode, see quiesce(8))\n",
        "exec /usr/sbin/quiesce \"$1\"\n"
    );

    fn cfg(pre: &Path, pre_params: &str, post: &Path, post_params: &str, extra: &str) -> Config {
        let text = format!(
            r#"{{"preScriptLocation":"{}","preScriptParams":{pre_params},
                "postScriptLocation":"{}","postScriptParams":{post_params}{extra}}}"#,
            pre.display(),
            post.display()
        );
        parse(Path::new("/x.json"), text.as_bytes(), None)
            .unwrap()
            .config
    }

    fn paths(hook: &Path) -> BridgePaths {
        BridgePaths {
            hook: hook.to_path_buf(),
            own_config: "/etc/quiesce/VMSnapshotScriptPluginConfig.json".into(),
            own_apps_dir: "/nonexistent/apps.d".into(),
            own_explicit: Vec::new(),
        }
    }

    const EXT: &str = "/etc/azure/VMSnapshotScriptPluginConfig.json";
    const OWN: &str = "/etc/quiesce/VMSnapshotScriptPluginConfig.json";
    const GRACE: Duration = Duration::from_secs(5);

    fn bridged(t: &Tmp, ext_extra: &str) -> (PathBuf, BridgeSetup) {
        let hook = t.file("extension-hook", HOOK_TEXT);
        let ext = cfg(&hook, r#"["pre"]"#, &hook, r#"["post"]"#, ext_extra);
        let setup = detect(Path::new(EXT), &ext, &paths(&hook)).expect("bridge recognised");
        (hook, setup)
    }

    fn own(t: &Tmp, extra: &str) -> Config {
        let pre = t.file("pre.sh", "#!/bin/sh\n");
        let post = t.file("post.sh", "#!/bin/sh\n");
        cfg(&pre, "[]", &post, "[]", extra)
    }

    fn names(f: &Findings) -> Vec<&'static str> {
        f.problems.iter().map(|p| p.code.name()).collect()
    }

    #[test]
    fn standalone_config_is_not_a_bridge() {
        let t = Tmp::new();
        let hook = t.file("extension-hook", HOOK_TEXT);
        let c = own(&t, "");
        assert_eq!(detect(Path::new(EXT), &c, &paths(&hook)), None);
    }

    #[test]
    fn recognised_by_path_link_hard_link_and_copy() {
        let t = Tmp::new();
        let hook = t.file("extension-hook", HOOK_TEXT);
        let link = t.0.join("link");
        symlink(&hook, &link).unwrap();
        let hard = t.0.join("hard");
        std::fs::hard_link(&hook, &hard).unwrap();
        let copy = t.file("copy.sh", HOOK_TEXT);
        let dotted = t.0.join(".").join("extension-hook");
        for p in [&hook, &link, &hard, &copy, &dotted] {
            assert!(names_hook(p, &hook), "{}", p.display());
        }
        let other = t.file(
            "other.sh",
            "#!/bin/sh\n# mentions quiesce: extension-hook\n",
        );
        assert!(!names_hook(&other, &hook));
        assert!(!names_hook(Path::new(""), &hook));
        assert!(!names_hook(&t.0.join("missing"), &hook));
        // The packaged path is recognised even where it is not installed.
        assert!(names_hook(Path::new(HOOK_PATH), Path::new(HOOK_PATH)));
    }

    #[test]
    fn the_shipped_hook_carries_the_marker() {
        let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/extension-hook");
        assert!(
            carries_marker(&hook),
            "{} lacks {HOOK_MARKER_LINE:?}",
            hook.display()
        );
    }

    #[test]
    fn a_correct_bridge_passes_with_a_note() {
        let t = Tmp::new();
        let (_, setup) = bridged(&t, r#","timeoutInSeconds":60"#);
        assert!(setup.pre_hooked && setup.post_hooked);
        let f = verify(
            &setup,
            Path::new(OWN),
            &own(&t, r#","timeoutInSeconds":30"#),
            GRACE,
        );
        assert_eq!(f.problems, vec![]);
        assert_eq!(f.warnings, Vec::<String>::new());
        assert!(
            f.notes[0].contains("38 s of the extension's 60 s"),
            "{:?}",
            f.notes
        );
    }

    #[test]
    fn trailing_empty_params_are_accepted() {
        let t = Tmp::new();
        let hook = t.file("extension-hook", HOOK_TEXT);
        let ext = cfg(
            &hook,
            r#"["pre",""]"#,
            &hook,
            r#"["post","",""]"#,
            r#","timeoutInSeconds":60"#,
        );
        let setup = detect(Path::new(EXT), &ext, &paths(&hook)).unwrap();
        let f = verify(&setup, Path::new(OWN), &own(&t, ""), GRACE);
        assert_eq!(f.problems, vec![]);
    }

    #[test]
    fn wrong_or_swapped_params_are_problems() {
        let t = Tmp::new();
        let hook = t.file("extension-hook", HOOK_TEXT);
        for (pre, post) in [
            (r#"["post"]"#, r#"["pre"]"#),
            (r#"[]"#, r#"["post"]"#),
            (r#"["", ""]"#, r#"["post"]"#),
            (r#"["pre", "-v"]"#, r#"["post"]"#),
        ] {
            let ext = cfg(&hook, pre, &hook, post, r#","timeoutInSeconds":60"#);
            let setup = detect(Path::new(EXT), &ext, &paths(&hook)).unwrap();
            let f = verify(&setup, Path::new(OWN), &own(&t, ""), GRACE);
            assert!(!f.problems.is_empty(), "{pre} {post}");
            assert!(names(&f).iter().all(|n| *n == "IncorrectJSONConfigFile"));
            assert!(
                f.problems[0].detail.contains("ScriptParams must be"),
                "{}",
                f.problems[0]
            );
        }
    }

    #[test]
    fn half_a_bridge_is_a_problem() {
        let t = Tmp::new();
        let hook = t.file("extension-hook", HOOK_TEXT);
        let plain = t.file("post.sh", "#!/bin/sh\n");
        let ext = cfg(
            &hook,
            r#"["pre"]"#,
            &plain,
            "[]",
            r#","timeoutInSeconds":60"#,
        );
        let setup = detect(Path::new(EXT), &ext, &paths(&hook)).unwrap();
        assert!(setup.pre_hooked && !setup.post_hooked);
        let f = verify(&setup, Path::new(OWN), &own(&t, ""), GRACE);
        assert_eq!(names(&f), ["IncorrectJSONConfigFile"]);
        assert!(f.problems[0].detail.contains("postScriptLocation"));
        assert!(f.problems[0]
            .detail
            .contains("both phases must run the hook"));
    }

    #[test]
    fn a_loop_is_refused_for_each_phase() {
        let t = Tmp::new();
        let (hook, setup) = bridged(&t, r#","timeoutInSeconds":60"#);
        let link = t.0.join("hook-link");
        symlink(&hook, &link).unwrap();
        let post = t.file("post.sh", "#!/bin/sh\n");
        let looped = cfg(&link, "[]", &post, "[]", "");
        let f = verify(&setup, Path::new(OWN), &looped, GRACE);
        assert_eq!(names(&f), ["IncorrectJSONConfigFile"]);
        let d = &f.problems[0].detail;
        assert!(
            d.contains(OWN) && d.contains("preScriptLocation") && d.contains("loop"),
            "{d}"
        );

        let both = cfg(&hook, r#"["pre"]"#, &hook, r#"["post"]"#, "");
        let f = verify(&setup, Path::new(OWN), &both, GRACE);
        assert_eq!(f.problems.len(), 2);
        assert!(f.problems[1].detail.contains("postScriptLocation"));
    }

    #[test]
    fn own_timeout_must_leave_room_inside_the_extensions() {
        let t = Tmp::new();
        let (_, setup) = bridged(&t, r#","timeoutInSeconds":30"#);
        // 22 + 5 + 3 = 30: exactly fits.
        let f = verify(
            &setup,
            Path::new(OWN),
            &own(&t, r#","timeoutInSeconds":22"#),
            GRACE,
        );
        assert_eq!(f.problems, vec![]);
        // 23 + 5 + 3 = 31 > 30.
        let f = verify(
            &setup,
            Path::new(OWN),
            &own(&t, r#","timeoutInSeconds":23"#),
            GRACE,
        );
        assert_eq!(names(&f), ["IncorrectJSONConfigFile"]);
        let d = &f.problems[0].detail;
        assert!(
            d.contains("timeoutInSeconds 23") && d.contains("is 30 s"),
            "{d}"
        );
        assert!(d.contains("at most 22"), "{d}");
        // 7 s leave no room for even a 1 s timeout: 1 + 5 + 3 = 9.
        let (_, small) = bridged(&t, r#","timeoutInSeconds":7"#);
        let f = verify(
            &small,
            Path::new(OWN),
            &own(&t, r#","timeoutInSeconds":1"#),
            GRACE,
        );
        let d = &f.problems[0].detail;
        assert!(
            d.contains("raise the extension's timeoutInSeconds to at least 9"),
            "{d}"
        );
    }

    #[test]
    fn several_own_applications_share_the_extensions_timeout() {
        let t = Tmp::new();
        let (_, setup) = bridged(&t, r#","timeoutInSeconds":60"#);
        let a = (
            PathBuf::from("/etc/quiesce/apps.d/10-app.json"),
            own(&t, r#","timeoutInSeconds":20"#),
        );
        let b = (
            PathBuf::from("/etc/quiesce/apps.d/20-db.json"),
            own(&t, r#","timeoutInSeconds":27"#),
        );
        // (20 + 5) + (27 + 5) + 3 = 60: exactly fits.
        let f = verify_set(&setup, &[a.clone(), b.clone()], GRACE);
        assert_eq!(f.problems, vec![], "{f:?}");
        assert!(
            f.notes[0].contains("10-app.json, /etc/quiesce/apps.d/20-db.json"),
            "{:?}",
            f.notes
        );
        let b = (b.0, own(&t, r#","timeoutInSeconds":28"#));
        let f = verify_set(&setup, &[a, b], GRACE);
        assert_eq!(names(&f), ["IncorrectJSONConfigFile"]);
        let d = &f.problems[0].detail;
        assert!(
            d.contains("2 applications run one after another")
                && d.contains("10-app.json 20 s, /etc/quiesce/apps.d/20-db.json 28 s")
                && d.contains("need 61 s")
                && d.contains("at least 61"),
            "{d}"
        );
    }

    #[test]
    fn extension_retries_and_unused_own_flags_are_warnings() {
        let t = Tmp::new();
        let (_, setup) = bridged(
            &t,
            r#","timeoutInSeconds":60,"preScriptNoOfRetries":2,"continueBackupOnFailure":false"#,
        );
        let f = verify(
            &setup,
            Path::new(OWN),
            &own(&t, r#","preScriptNoOfRetries":1,"fsFreezeEnabled":false"#),
            GRACE,
        );
        assert_eq!(f.problems, vec![]);
        assert_eq!(f.warnings.len(), 3, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("runs 6 times"), "{}", f.warnings[0]);
        assert!(f.warnings[1].contains("continueBackupOnFailure"));
        assert!(f.warnings[2].contains("fsFreezeEnabled"));
    }

    #[test]
    fn check_reports_an_unusable_own_config() {
        let t = Tmp::new();
        let (hook, setup) = bridged(&t, r#","timeoutInSeconds":60"#);
        let p = BridgePaths {
            hook,
            own_config: t.0.join("absent.json"),
            own_apps_dir: t.0.join("no-apps.d"),
            own_explicit: Vec::new(),
        };
        let f = check(Path::new(EXT), &setup.extension, &p, None, GRACE).unwrap();
        assert_eq!(names(&f), ["IncorrectJSONConfigFile"]);
        assert!(
            f.problems[0].detail.starts_with("bridge mode: "),
            "{}",
            f.problems[0]
        );
        assert!(f.problems[0].detail.contains("absent.json"));
        // Standalone: nothing to say.
        let plain = own(&t, "");
        assert_eq!(check(Path::new(EXT), &plain, &p, None, GRACE), None);
    }
}
