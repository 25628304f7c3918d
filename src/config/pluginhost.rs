//! The plugin-host file `VMSnapshotPluginHost.conf` (SPEC.md §3, §3.1): an
//! INI file whose `[pre_post]` section gives a timeout and the extension's
//! multi-plugin list.

use std::path::{Path, PathBuf};

pub const DEFAULT_HOST_CONFIG_PATH: &str = "/etc/azure/VMSnapshotPluginHost.conf";

/// Why the plugin-host file is refused; always `IncorrectPluginhostFile`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostConfigError {
    #[error("{path}:{line}: {rule}")]
    Syntax {
        path: PathBuf,
        line: usize,
        rule: String,
    },
    #[error("{0} is not valid UTF-8")]
    NotUtf8(PathBuf),
}

/// What the plugin-host file says: `[pre_post] timeoutInSeconds`, and the
/// extension's multi-plugin list (`numberOfPlugins` with `pluginName<i>`,
/// `pluginPath<i>`, `pluginConfigPath<i>`), raw: [`HostConfig::plugins`]
/// checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub timeout: Option<u64>,
    /// `numberOfPlugins` as written, and its line.
    number_of_plugins: Option<(String, usize)>,
    /// Every `pluginName<i>`, `pluginPath<i>`, `pluginConfigPath<i>` key of
    /// `[pre_post]`, with its value and line, in file order.
    plugin_keys: Vec<(String, String, usize)>,
}

/// One plugin of the plugin-host file's list: an application (SPEC §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlugin {
    /// `pluginName<i>`, when given.
    pub name: Option<String>,
    /// `pluginConfigPath<i>`.
    pub config: PathBuf,
}

/// The three per-plugin key stems, longest first (`pluginConfigPath` before
/// `pluginPath`... they share no prefix but `plugin`).
const PLUGIN_KEY_STEMS: [&str; 3] = ["pluginConfigPath", "pluginName", "pluginPath"];

impl HostConfig {
    /// The plugin list, when the file has `numberOfPlugins`: every
    /// `pluginConfigPath<i>` for i in 0..N, in index order. A count that is
    /// not a positive integer, a missing index, an index outside 0..N (or any
    /// plugin key without a count) and a relative config path are refused,
    /// naming the key: the extension itself cannot load such a list.
    pub fn plugins(&self, path: &Path) -> Result<Option<Vec<HostPlugin>>, HostConfigError> {
        let syntax = |line: usize, rule: String| HostConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            rule,
        };
        let Some(count) = self.plugin_count(path)? else {
            return Ok(None);
        };
        // Every index is checked against the count, and the count against
        // the keys the file has, before anything is allocated for it: a
        // count no file could back (10,000,000,000 once asked for 240 GB and
        // aborted the run) is refused naming the first index it lacks.
        let mut present = std::collections::BTreeSet::new();
        for (key, _, line) in &self.plugin_keys {
            let (stem, i) = plugin_index(key, count).map_err(|rule| syntax(*line, rule))?;
            if stem == "pluginConfigPath" {
                present.insert(i);
            }
        }
        let line = self.number_of_plugins.as_ref().map_or(0, |(_, l)| *l);
        if present.len() < count {
            // The indices are all below `count`, so one of 0..=len is absent.
            let first = (0..=present.len())
                .find(|i| !present.contains(i))
                .unwrap_or(0);
            return Err(syntax(
                line,
                format!("pluginConfigPath{first} is missing (numberOfPlugins is {count})"),
            ));
        }
        let mut names = vec![None; count];
        let mut configs: Vec<Option<PathBuf>> = vec![None; count];
        for (key, value, line) in &self.plugin_keys {
            let (stem, i) = plugin_index(key, count).map_err(|rule| syntax(*line, rule))?;
            match stem {
                "pluginConfigPath" => {
                    if !Path::new(value).is_absolute() {
                        return Err(syntax(
                            *line,
                            format!("{key} must be an absolute path, not \"{value}\""),
                        ));
                    }
                    configs[i] = Some(PathBuf::from(value));
                }
                "pluginName" => names[i] = Some(value.clone()).filter(|v| !v.is_empty()),
                _ => {} // pluginPath<i>: the extension's python module directory.
            }
        }
        Ok(Some(
            names
                .into_iter()
                .zip(configs)
                .map(|(name, config)| HostPlugin {
                    name,
                    config: config.expect("every index below the count is present"),
                })
                .collect(),
        ))
    }

    /// `numberOfPlugins`, when the file has it: a positive integer. Plugin
    /// keys without it are refused, naming the first.
    fn plugin_count(&self, path: &Path) -> Result<Option<usize>, HostConfigError> {
        let syntax = |line: usize, rule: String| HostConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            rule,
        };
        match &self.number_of_plugins {
            None => match self.plugin_keys.first() {
                Some((key, _, line)) => Err(syntax(
                    *line,
                    format!("{key}: unknown index, the file has no numberOfPlugins"),
                )),
                None => Ok(None),
            },
            Some((value, line)) => value
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| {
                    syntax(
                        *line,
                        format!("numberOfPlugins must be a positive integer, not \"{value}\""),
                    )
                }),
        }
    }
}

/// The stem and index of plugin key `key`, when the index is in 0..count.
fn plugin_index(key: &str, count: usize) -> Result<(&'static str, usize), String> {
    let (stem, index) = split_plugin_key(key).expect("only plugin keys are kept");
    match index.parse::<usize>().ok().filter(|i| *i < count) {
        Some(i) => Ok((stem, i)),
        None => Err(format!(
            "{key}: unknown index (numberOfPlugins is {count}, so 0..{})",
            count - 1
        )),
    }
}

/// `pluginConfigPath12` → (`pluginConfigPath`, `12`); `None` for other keys.
fn split_plugin_key(key: &str) -> Option<(&'static str, &str)> {
    PLUGIN_KEY_STEMS
        .iter()
        .find_map(|stem| key.strip_prefix(stem).map(|rest| (*stem, rest)))
}

/// Parses the plugin-host INI text: `[pre_post] timeoutInSeconds` when set,
/// and the plugin keys for [`HostConfig::plugins`]. The extension writes
/// `key: value`; `key = value` is accepted too.
pub fn parse_host_config(path: &Path, bytes: &[u8]) -> Result<HostConfig, HostConfigError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| HostConfigError::NotUtf8(path.to_path_buf()))?;
    let syntax = |line: usize, rule: String| HostConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        rule,
    };
    let mut section: Option<String> = None;
    let mut out = HostConfig::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| syntax(n, "section header is missing its closing ]".into()))?;
            section = Some(name.trim().to_string());
            continue;
        }
        let sep = line
            .find([':', '='])
            .ok_or_else(|| syntax(n, "expected \"key: value\" or \"key = value\"".into()))?;
        let (key, value) = (line[..sep].trim(), line[sep + 1..].trim());
        if key.is_empty() {
            return Err(syntax(n, "empty key".into()));
        }
        if section.is_none() {
            return Err(syntax(
                n,
                format!("key \"{key}\" appears before any [section]"),
            ));
        }
        if section.as_deref() != Some("pre_post") {
            continue;
        }
        if key.eq_ignore_ascii_case("timeoutInSeconds") {
            let v: u64 = value.parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
                syntax(
                    n,
                    format!("timeoutInSeconds must be an integer >= 1, not \"{value}\""),
                )
            })?;
            out.timeout = Some(v);
        } else if key == "numberOfPlugins" {
            out.number_of_plugins = Some((value.to_string(), n));
        } else if split_plugin_key(key).is_some() {
            out.plugin_keys
                .push((key.to_string(), value.to_string(), n));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ini_forms() {
        let path = Path::new("/h");
        let t =
            "[pre_post]\nnumberOfPlugins: 1\npluginName0: ScriptRunner\ntimeoutInSeconds: 1800\n";
        assert_eq!(
            parse_host_config(path, t.as_bytes()).unwrap().timeout,
            Some(1800)
        );
        assert_eq!(
            parse_host_config(path, b"[pre_post]\ntimeoutInSeconds = 30\n")
                .unwrap()
                .timeout,
            Some(30)
        );
        assert_eq!(
            parse_host_config(path, b"[other]\nx: 1\n").unwrap(),
            HostConfig::default()
        );
        assert!(parse_host_config(path, b"[pre_post]\ntimeoutInSeconds: x\n").is_err());
        assert!(parse_host_config(path, b"timeoutInSeconds: 5\n").is_err());
        assert!(parse_host_config(path, b"[pre_post\n").is_err());
    }

    fn plugins(text: &str) -> Result<Option<Vec<HostPlugin>>, String> {
        let path = Path::new("/h");
        parse_host_config(path, text.as_bytes())
            .unwrap()
            .plugins(path)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn host_plugin_list_in_index_order() {
        let t = "[pre_post]\nnumberOfPlugins: 2\npluginName1: db\npluginConfigPath1: /etc/b.json\n\
                 pluginName0: ScriptRunner\npluginPath0: /var/lib/waagent/x\npluginConfigPath0 = /etc/a.json\n";
        let list = plugins(t).unwrap().unwrap();
        assert_eq!(
            list,
            vec![
                HostPlugin {
                    name: Some("ScriptRunner".into()),
                    config: "/etc/a.json".into()
                },
                HostPlugin {
                    name: Some("db".into()),
                    config: "/etc/b.json".into()
                },
            ]
        );
        assert_eq!(plugins("[pre_post]\ntimeoutInSeconds: 30\n").unwrap(), None);
        // Keys of other sections are not the list.
        assert_eq!(plugins("[other]\npluginConfigPath7: x\n").unwrap(), None);
    }

    #[test]
    fn bad_host_plugin_lists_name_the_key() {
        for (text, says) in [
            (
                "numberOfPlugins: 0",
                "numberOfPlugins must be a positive integer, not \"0\"",
            ),
            (
                "numberOfPlugins: -1",
                "numberOfPlugins must be a positive integer, not \"-1\"",
            ),
            (
                "numberOfPlugins: x",
                "numberOfPlugins must be a positive integer, not \"x\"",
            ),
            (
                "numberOfPlugins: 2\npluginConfigPath0: /a.json",
                "pluginConfigPath1 is missing (numberOfPlugins is 2)",
            ),
            // Refused before 10,000,000,000 entries are allocated.
            (
                "numberOfPlugins: 10000000000\npluginConfigPath0: /a.json",
                "pluginConfigPath1 is missing (numberOfPlugins is 10000000000)",
            ),
            (
                "numberOfPlugins: 3\npluginConfigPath0: /a.json\npluginConfigPath2: /c.json",
                "pluginConfigPath1 is missing (numberOfPlugins is 3)",
            ),
            (
                "numberOfPlugins: 1\npluginConfigPath0: /a.json\npluginConfigPath1: /b.json",
                "pluginConfigPath1: unknown index (numberOfPlugins is 1, so 0..0)",
            ),
            (
                "numberOfPlugins: 1\npluginConfigPath0: /a.json\npluginNameX: y",
                "pluginNameX: unknown index",
            ),
            (
                "pluginConfigPath0: /a.json",
                "pluginConfigPath0: unknown index, the file has no numberOfPlugins",
            ),
            (
                "numberOfPlugins: 1\npluginConfigPath0: a.json",
                "pluginConfigPath0 must be an absolute path",
            ),
        ] {
            let e = plugins(&format!("[pre_post]\n{text}\n")).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.starts_with("/h:"), "{e}");
        }
    }
}
