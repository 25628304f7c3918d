//! The applications of a run (SPEC.md §3.1): where they come from, their
//! order and names, and each one's pre-check.
//!
//! Without `--config` on the command line, in this order of precedence:
//! the plugin-host file's `numberOfPlugins` list (the extension's own
//! multi-plugin model), else every `*.json` of the apps directory in lexical
//! order, else the single default config. `--config` given once or more
//! names the applications explicitly, in order, and nothing else is read.
//! `--takeover-dir` makes a stock dispatcher's directory the set (each script
//! one application, SPEC §10), unless `--config` is given.
//! In bridge mode (`--bridge`, the extension hook) the plugin-host list is
//! the extension's own — its configs run the hook — so it is not read.
//!
//! What decides which scripts run as root fails closed: an apps directory
//! that anyone but root could change, or a plugin list the extension itself
//! could not load, refuses the run before anything runs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::preflight::{self, HostFile, Prechecked};
use super::takeover::{self, Takeover};
use crate::config;
use crate::error::{ErrorCode, Fix, Problem};

pub use crate::config::DEFAULT_APPS_DIR;

/// Where a run's applications may come from (the command line).
#[derive(Debug, Clone)]
pub struct AppSources {
    /// `--config`, as given (empty: not given).
    pub explicit: Vec<PathBuf>,
    /// `--apps-dir`.
    pub apps_dir: PathBuf,
    /// `--host-config`.
    pub host_config: PathBuf,
    /// `--bridge`: quiesce's own set, run by the extension hook.
    pub bridge: bool,
    /// `--extension-config`: the Azure extension's own config. It is no
    /// application of quiesce's own set; `check` reads it to recognise
    /// bridge mode (its script locations naming quiesce's hook).
    pub extension_config: PathBuf,
    /// `--workload-conf`: the extension's workload.conf (SPEC §3.2).
    pub workload_conf: PathBuf,
    /// `--takeover-dir`: a stock dispatcher's directory, each script one
    /// application (SPEC §10).
    pub takeover: Option<Takeover>,
}

impl AppSources {
    /// The single config used when no other source applies.
    pub fn default_config(&self) -> PathBuf {
        if self.bridge {
            config::BRIDGE_CONFIG_PATH.into()
        } else {
            config::DEFAULT_CONFIG_PATH.into()
        }
    }
}

/// Which source the applications came from (`applicationSource` in the
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// `--config`, given or the default.
    Config,
    /// The plugin-host file's `numberOfPlugins` list.
    PluginHost,
    /// The apps directory.
    AppsDir,
    /// workload.conf alone: nothing else names an application.
    WorkloadConf,
    /// A stock dispatcher's directory taken over (`--takeover-dir`).
    Takeover,
}

/// The source, and what it skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub source: SourceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Entries of the apps directory that are not applications.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<PathBuf>,
    /// Human lines about the choice (said by `check`).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Source {
    fn new(source: SourceKind, path: Option<&Path>) -> Source {
        Source {
            source,
            path: path.map(Path::to_path_buf),
            ignored: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// One application of the run, pre-checked.
#[derive(Debug)]
pub struct App {
    /// Its place in application order (0-based).
    pub index: usize,
    pub name: String,
    pub config_path: PathBuf,
    pub pc: Prechecked,
}

impl App {
    /// `continueBackupOnFailure`, or `true` when the config could not be read.
    pub fn continue_on_failure(&self) -> bool {
        self.pc.continue_on_failure()
    }

    /// `fsFreezeEnabled`, or `true` when the config could not be read.
    pub fn fs_freeze_enabled(&self) -> bool {
        self.pc.config.as_ref().is_none_or(|c| c.fs_freeze_enabled)
    }
}

/// The applications of a run, in application order.
#[derive(Debug)]
pub struct Apps {
    pub source: Source,
    pub list: Vec<App>,
    /// Warnings about the set itself (two applications, one script pair).
    pub warnings: Vec<String>,
}

impl Apps {
    /// More than one application: the status keeps them in `applications`
    /// only, and the trail names each on its own records.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// Every application passed its pre-check.
    pub fn passed(&self) -> bool {
        self.list.iter().all(|a| a.pc.passed())
    }
}

/// Finds the applications and pre-checks each (nothing is executed). A
/// source that fails closed is the error: nothing may run.
pub fn precheck(sources: &AppSources) -> Result<Apps, Problem> {
    let host = preflight::load_host(&sources.host_config);
    let (mut source, mut listed) = list(sources, &host)?;
    with_workload_conf(sources, &mut source, &mut listed);
    let single = listed.len() == 1;
    let mut list: Vec<App> = listed
        .into_iter()
        .enumerate()
        .map(|(index, (host_name, config_path))| {
            let pc = if config_path == sources.workload_conf {
                // Checked as workload.conf whatever it holds (a link or a
                // FIFO there is its own 501, not a JSON config's 305).
                super::workload_conf::check(&config_path, &host)
            } else {
                preflight::check_app(&config_path, &host)
            };
            let name = app_name(&pc, host_name.as_deref(), &config_path, single);
            App {
                index,
                name,
                config_path,
                pc,
            }
        })
        .collect();
    disambiguate(&mut list);
    let warnings = shared_script_pairs(&list);
    Ok(Apps {
        source,
        list,
        warnings,
    })
}

/// The listed applications (with the plugin-host name, when any) and the
/// source they came from.
type Listed = Vec<(Option<String>, PathBuf)>;

fn list(sources: &AppSources, host: &HostFile) -> Result<(Source, Listed), Problem> {
    if !sources.explicit.is_empty() {
        let listed = sources.explicit.iter().map(|p| (None, p.clone())).collect();
        return Ok((Source::new(SourceKind::Config, None), listed));
    }
    if let Some(t) = &sources.takeover {
        return taken_over(t);
    }
    if !sources.bridge {
        let plugins = host.plugins().map_err(|e| {
            Problem::new(
                ErrorCode::IncorrectPluginhostFile,
                format!("plugin-host file: {e}; nothing was run"),
            )
            .with_fix(Fix::HostFile(sources.host_config.clone()))
        })?;
        if let Some(plugins) = plugins {
            let mut s = Source::new(SourceKind::PluginHost, Some(&sources.host_config));
            s.notes.push(format!(
                "applications ({}) from the plugin-host file {} (numberOfPlugins)",
                plugins.len(),
                sources.host_config.display()
            ));
            let listed = plugins.into_iter().map(|p| (p.name, p.config)).collect();
            return Ok((s, listed));
        }
    }
    dir_or_single(&sources.apps_dir, &sources.default_config())
}

/// workload.conf, when it names a workload (SPEC §3.2): one more
/// application, last — or the only one, when the single default config it
/// would join does not exist. Bridge mode leaves it to the extension.
fn with_workload_conf(sources: &AppSources, source: &mut Source, listed: &mut Listed) {
    let wc = &sources.workload_conf;
    let listed_already = listed.iter().any(|(_, p)| p == wc);
    if sources.bridge || listed_already || std::fs::symlink_metadata(wc).is_err() {
        return;
    }
    // Read here only to decide; the pre-check reads it again, checked.
    let names = config::workload_conf::peek(wc)
        .map(|t| config::workload_conf::names_a_workload(&t))
        .unwrap_or(true);
    if !names {
        source.notes.push(format!(
            "{} names no workload (workload_name is empty): not an application",
            wc.display()
        ));
        return;
    }
    let alone = sources.explicit.is_empty()
        && source.source == SourceKind::Config
        && listed.len() == 1
        && listed[0].1 == sources.default_config()
        && !listed[0].1.exists();
    if alone {
        listed.clear();
        let mut s = Source::new(SourceKind::WorkloadConf, Some(wc));
        s.notes = std::mem::take(&mut source.notes);
        *source = s;
    }
    source.notes.push(format!(
        "application from {} (the extension's workload path), run by quiesce's built-in method",
        wc.display()
    ));
    listed.push((None, wc.clone()));
}

/// The applications of a dispatcher's directory taken over: one generated
/// config per script it would run, in its order.
fn taken_over(t: &Takeover) -> Result<(Source, Listed), Problem> {
    let (scripts, ignored) = takeover::scripts(t)?;
    let configs = takeover::configs(t, &scripts)?;
    let mut s = Source::new(SourceKind::Takeover, Some(&t.dir));
    s.notes.push(format!(
        "applications ({}) taken over from the dispatcher's directory {}: {}",
        scripts.len(),
        t.dir.display(),
        scripts
            .iter()
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (path, why) in ignored {
        s.notes.push(format!("ignored {} ({why})", path.display()));
        s.ignored.push(path);
    }
    Ok((s, configs.into_iter().map(|c| (None, c)).collect()))
}

/// quiesce's own set in bridge mode, for `check`: the apps directory's
/// applications when it has any, else the single config.
pub fn own_set(apps_dir: &Path, single: &Path) -> Result<Vec<PathBuf>, Problem> {
    Ok(dir_or_single(apps_dir, single)?
        .1
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// The applications of the apps directory when it exists and has any, else
/// the single config.
fn dir_or_single(apps_dir: &Path, single_config: &Path) -> Result<(Source, Listed), Problem> {
    let mut s = Source::new(SourceKind::AppsDir, Some(apps_dir));
    if let Some(files) = read_apps_dir(apps_dir, &mut s)? {
        if !files.is_empty() {
            let names: Vec<String> = files.iter().map(|f| stem(f)).collect();
            s.notes.insert(
                0,
                format!(
                    "applications ({}) from the apps directory {}: {}",
                    files.len(),
                    apps_dir.display(),
                    names.join(", ")
                ),
            );
            return Ok((s, files.into_iter().map(|f| (None, f)).collect()));
        }
        s.notes.push(format!(
            "the apps directory {} holds no *.json application; using the single configuration",
            apps_dir.display()
        ));
    }
    let mut single = Source::new(SourceKind::Config, None);
    single.notes = s.notes;
    single.ignored = s.ignored;
    Ok((single, vec![(None, single_config.to_path_buf())]))
}

/// Why an entry of the apps directory is not an application, if it is not.
fn ignored_because(name: &OsStr) -> Option<&'static str> {
    let n = name.as_bytes();
    let ends = |s: &str| n.ends_with(s.as_bytes());
    let has = |s: &str| n.windows(s.len()).any(|w| w == s.as_bytes());
    if n.starts_with(b".") {
        Some("a hidden file")
    } else if ends("~") || ends(".bak") || ends(".sample") || has(".dpkg-") || has(".rpm") {
        Some("a package-manager leftover or backup")
    } else if !ends(".json") {
        Some("not a *.json file")
    } else {
        None
    }
}

/// The applications of the apps directory, in lexical order; `None` when
/// it does not exist. The directory decides which scripts run as root: it
/// must be a real directory, root-owned and not group- or world-writable,
/// like every directory above it (305, naming it, refuses the run).
fn read_apps_dir(dir: &Path, source: &mut Source) -> Result<Option<Vec<PathBuf>>, Problem> {
    let bad = |why: String, fix: Fix| {
        Problem::new(
            ErrorCode::IncorrectJSONConfigFile,
            format!("apps directory {}: {why}; nothing was run", dir.display()),
        )
        .with_fix(fix)
    };
    let unreadable = || Fix::Unreadable(dir.to_path_buf());
    let real = || Fix::RealDirectory(dir.to_path_buf());
    if !dir.is_absolute() {
        return Err(bad("it is not an absolute path".into(), real()));
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot inspect it ({e})"), unreadable())),
        Ok(md) if md.file_type().is_symlink() => {
            return Err(bad(
                "it is a symbolic link; configure the real path".into(),
                real(),
            ))
        }
        Ok(md) if !md.is_dir() => return Err(bad("it is not a directory".into(), real())),
        Ok(_) => {}
    }
    // Checked on the descriptor that is then listed.
    let file = crate::integrity::open_trusted_dir(dir).map_err(|e| bad(e.rule(), e.fix()))?;
    let entries = nix::dir::Dir::from_fd(file.into_raw_fd())
        .map_err(|e| bad(format!("cannot list it ({e})"), unreadable()))?;
    let mut apps = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("cannot list it ({e})"), unreadable()))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = dir.join(name);
        match ignored_because(name) {
            None => {
                apps.insert(name.as_bytes().to_vec(), path);
            }
            Some(why) => {
                source
                    .notes
                    .push(format!("ignored {} ({why})", path.display()));
                source.ignored.push(path);
            }
        }
    }
    source.ignored.sort();
    source.notes.sort();
    Ok(Some(apps.into_values().collect()))
}

/// A config file's name without `.json`.
fn stem(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    name.strip_suffix(".json").unwrap_or(&name).to_string()
}

/// The application's name: the config's `appName`; else the plugin-host
/// file's `pluginName<i>` unless it is the extension's module name; else,
/// alone, the config's `pluginName` (what it always was); else the file's.
fn app_name(pc: &Prechecked, host_name: Option<&str>, config: &Path, single: bool) -> String {
    if let Some(n) = pc.config.as_ref().and_then(|c| c.app_name.clone()) {
        return n;
    }
    if let Some(n) = host_name.filter(|n| *n != "ScriptRunner") {
        return n.to_string();
    }
    match &pc.config {
        Some(c) if single => c.plugin_name.clone(),
        _ => stem(config),
    }
}

/// Names that two applications share get their position: `db #2`.
fn disambiguate(list: &mut [App]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in list.iter() {
        *counts.entry(a.name.clone()).or_default() += 1;
    }
    for a in list.iter_mut() {
        if counts[&a.name] > 1 {
            a.name = format!("{} #{}", a.name, a.index + 1);
        }
    }
}

/// How many applications of a group a warning lists by name.
const LISTED_PER_WARNING: usize = 5;

/// Applications that name the same pre/post script pair: each cycle would
/// pause and resume that application once per application. One warning
/// per pair, naming the first few and counting the rest — 300 applications
/// of one pair once made 44,850 pairwise warnings and a 16 MB status.
fn shared_script_pairs(list: &[App]) -> Vec<String> {
    let mut groups: Vec<(&Path, &Path, Vec<&App>)> = Vec::new();
    let mut by_pair: BTreeMap<(&Path, &Path), usize> = BTreeMap::new();
    for app in list {
        let Some(c) = &app.pc.config else { continue };
        let pair = (c.pre.location.as_path(), c.post.location.as_path());
        let k = *by_pair.entry(pair).or_insert_with(|| {
            groups.push((pair.0, pair.1, Vec::new()));
            groups.len() - 1
        });
        groups[k].2.push(app);
    }
    groups
        .into_iter()
        .filter(|(_, _, apps)| apps.len() > 1)
        .map(|(pre, post, apps)| {
            let n = apps.len();
            let mut named: Vec<String> = apps
                .iter()
                .take(LISTED_PER_WARNING)
                .map(|a| format!("{} ({})", a.name, a.config_path.display()))
                .collect();
            if n > LISTED_PER_WARNING {
                named.push(format!("and {} more", n - LISTED_PER_WARNING));
            }
            let times = if n == 2 {
                "twice".to_string()
            } else {
                format!("{n} times")
            };
            format!(
                "{n} applications name the same scripts ({} and {}): {}; each runs them, so every backup pauses and resumes that application {times}",
                pre.display(),
                post.display(),
                named.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_and_other_files_are_not_applications() {
        for name in [
            "10-app.json~",
            "10-app.json.bak",
            "10-app.json.dpkg-old",
            "10-app.json.dpkg-dist",
            "10-app.json.dpkg-new",
            "10-app.json.rpmnew",
            "10-app.json.rpmsave",
            "10-app.json.sample",
            ".10-app.json",
            "README",
        ] {
            assert!(ignored_because(OsStr::new(name)).is_some(), "{name}");
        }
        for name in ["10-app.json", "db.json", "a.b.json"] {
            assert_eq!(ignored_because(OsStr::new(name)), None, "{name}");
        }
    }

    #[test]
    fn names_follow_app_name_host_name_then_file() {
        let pc = Prechecked::default();
        let cfg = Path::new("/etc/quiesce/apps.d/20-db.json");
        assert_eq!(app_name(&pc, Some("ScriptRunner"), cfg, false), "20-db");
        assert_eq!(app_name(&pc, Some("orders-db"), cfg, false), "orders-db");
        assert_eq!(app_name(&pc, None, cfg, true), "20-db");
    }
}
