//! The extension's `VMSnapshotScriptPluginConfig.json` (SPEC.md §3): its
//! keys, their types, defaults and clamps, the forms the extension runs that
//! strict types would refuse, and the typo hint for unknown keys.

use super::workload::Workload;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/azure/VMSnapshotScriptPluginConfig.json";
/// quiesce's own applications directory (SPEC §3.1).
pub const DEFAULT_APPS_DIR: &str = "/etc/quiesce/apps.d";
/// quiesce's own config in bridge mode (the extension's format), when there
/// is no apps directory.
pub const BRIDGE_CONFIG_PATH: &str = "/etc/quiesce/VMSnapshotScriptPluginConfig.json";
/// Larger files are refused: the real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// The extension's ceiling for `timeoutInSeconds`.
pub const MAX_TIMEOUT_SECS: u64 = 1800;
pub const DEFAULT_POLL_SECS: u64 = 3;

/// Every key the extension's format knows, plus our pins.
pub const KNOWN_KEYS: [&str; 16] = [
    "pluginName",
    "preScriptLocation",
    "postScriptLocation",
    "preScriptParams",
    "postScriptParams",
    "preScriptNoOfRetries",
    "postScriptNoOfRetries",
    "timeoutInSeconds",
    "continueBackupOnFailure",
    "fsFreezeEnabled",
    "ScriptsExecutionPollTimeSeconds",
    "appName",
    "preScriptSha256",
    "postScriptSha256",
    "workload",
    "connection",
];

/// The loaded configuration, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub plugin_name: String,
    pub pre: ScriptConfig,
    pub post: ScriptConfig,
    /// Per phase, after the 1800 s and plugin-host clamps.
    pub timeout_secs: u64,
    pub continue_on_failure: bool,
    pub fs_freeze_enabled: bool,
    pub poll_secs: u64,
    pub app_name: Option<String>,
    /// A built-in workload (SPEC §3.2) instead of scripts: `pre` and `post`
    /// then have no location; the preflight names quiesce's own method.
    pub workload: Option<Workload>,
}

/// One script's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptConfig {
    /// As configured; may be empty (then the script is "not found").
    pub location: PathBuf,
    pub params: Vec<String>,
    pub retries: u32,
    /// Lowercase hex SHA-256 pin, when configured.
    pub sha256: Option<String>,
}

/// Why a configuration is refused; always `IncorrectJSONConfigFile`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not valid UTF-8 (at byte {1})")]
    NotUtf8(PathBuf, usize),
    #[error("{0} is not valid JSON: {1}")]
    Syntax(PathBuf, String),
    #[error("{0}: the top level must be a JSON object")]
    NotObject(PathBuf),
    #[error("{path}: key \"{key}\" {rule}")]
    Field {
        path: PathBuf,
        key: String,
        rule: String,
    },
}

/// The outcome of a successful load: the config and the warnings to report.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// Unknown keys that are a near miss of a known one (a typo). A run
    /// ignores them with a warning, as the extension does; `check` refuses
    /// them (SPEC §3): `continueBackupOnFailur` silently leaves
    /// `continueBackupOnFailure` at its default.
    pub near_misses: Vec<NearMiss>,
}

/// An unknown key and the known key it is a near miss of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    pub key: String,
    pub known: &'static str,
}

/// A JSON object that refuses duplicate keys (serde_json keeps the last one
/// silently; the extension's parser would disagree with us about which wins).
struct StrictObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
                    }
                    let value: Value = map.next_value()?;
                    out.push((key, value));
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses the configuration text. `host_timeout` is the plugin-host file's
/// `timeoutInSeconds`, when that file is present.
pub fn parse(path: &Path, bytes: &[u8], host_timeout: Option<u64>) -> Result<Loaded, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::NotUtf8(path.to_path_buf(), e.valid_up_to()))?;
    // Top level first, with a plain Value, so "not an object" reads clearly.
    let top: Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::Syntax(path.to_path_buf(), e.to_string()))?;
    if !top.is_object() {
        return Err(ConfigError::NotObject(path.to_path_buf()));
    }
    let StrictObject(mut entries) = serde_json::from_str(text)
        .map_err(|e| ConfigError::Syntax(path.to_path_buf(), e.to_string()))?;

    let mut warnings = Vec::new();
    read_as_the_extension_does(path, &mut entries, &mut warnings);
    let near_misses = warn_unknown_keys(path, &entries, &mut warnings);
    let f = Fields {
        path,
        entries: &entries,
    };

    let plugin_name = f
        .string("pluginName")?
        .unwrap_or_else(|| "ScriptRunner".into());
    if plugin_name != "ScriptRunner" {
        warnings.push(format!(
            "{}: pluginName is \"{plugin_name}\", expected \"ScriptRunner\" (the extension may not run the scripts)",
            path.display()
        ));
    }
    let workload = f.workload()?;
    let script = |phase| match workload {
        Some(_) => f.no_script(phase),
        None => f.script(phase),
    };
    let config = Config {
        plugin_name,
        pre: script("pre")?,
        post: script("post")?,
        timeout_secs: f.timeout(host_timeout, &mut warnings)?,
        poll_secs: f.poll_secs(&mut warnings)?,
        continue_on_failure: f.boolean("continueBackupOnFailure", true)?,
        fs_freeze_enabled: f.boolean("fsFreezeEnabled", true)?,
        app_name: f.string("appName")?,
        workload,
    };
    Ok(Loaded {
        config,
        warnings,
        near_misses,
    })
}

/// A warning per unknown key, naming the closest known one (typo help);
/// returns the keys that have one.
fn warn_unknown_keys(
    path: &Path,
    entries: &[(String, Value)],
    warnings: &mut Vec<String>,
) -> Vec<NearMiss> {
    let mut near = Vec::new();
    for (key, _) in entries {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            let hint = match closest_key(key) {
                Some(k) => {
                    near.push(NearMiss {
                        key: key.clone(),
                        known: k,
                    });
                    format!("; did you mean \"{k}\"?")
                }
                None => String::new(),
            };
            warnings.push(format!(
                "{}: unknown key \"{key}\" ignored{hint}",
                path.display()
            ));
        }
    }
    near
}

/// The config's keys, read with the types and rules of SPEC §3; every
/// error names the file, the key and the rule.
struct Fields<'a> {
    path: &'a Path,
    entries: &'a [(String, Value)],
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn field(&self, key: &str, rule: String) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            rule,
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.field(key, format!("must be a string, not {}", type_name(v)))),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.field(
                key,
                format!(
                    "must be true or false (a JSON boolean), not {}",
                    type_name(v)
                ),
            )),
        }
    }

    fn integer(&self, key: &str, default: u64, min: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= min => Ok(v),
                _ => Err(self.field(key, format!("must be an integer >= {min}, not {n}"))),
            },
            Some(v) => Err(self.field(
                key,
                format!("must be an integer >= {min}, not {}", type_name(v)),
            )),
        }
    }

    fn params(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let element = |i: usize, v: &Value| match v {
            Value::String(s) if s.contains('\0') => {
                Err(self.field(key, format!("element {i} contains a NUL character")))
            }
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.field(
                key,
                format!(
                    "element {i} must be a string or a number, not {}",
                    type_name(other)
                ),
            )),
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| element(i, v))
                .collect(),
            Some(v) => Err(self.field(
                key,
                format!("must be an array of strings, not {}", type_name(v)),
            )),
        }
    }

    fn location(&self, key: &str) -> Result<PathBuf, ConfigError> {
        match self.string(key)? {
            None => Err(self.field(key, "is required (absolute path of the script)".into())),
            Some(s) if s.contains('\0') => Err(self.field(key, "contains a NUL character".into())),
            Some(s) => Ok(PathBuf::from(s)),
        }
    }

    fn pin(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Some(s.to_ascii_lowercase()))
            }
            Some(_) => Err(self.field(key, "must be 64 hexadecimal digits (a SHA-256)".into())),
        }
    }

    fn retries(&self, key: &str) -> Result<u32, ConfigError> {
        let n = self.integer(key, 0, 0)?;
        u32::try_from(n).map_err(|_| self.field(key, format!("is too large ({n})")))
    }

    /// `"workload"` and `"connection"`, when the application names a
    /// workload; a `"connection"` without it is refused.
    fn workload(&self) -> Result<Option<Workload>, ConfigError> {
        match (self.get("workload"), self.get("connection")) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(self.field(
                "connection",
                "is only read with \"workload\" (\"postgres\", \"mariadb\" or \"mysql\")".into(),
            )),
            (Some(w), c) => super::workload::from_json(w, c)
                .map(Some)
                .map_err(|(key, rule)| ConfigError::Field {
                    path: self.path.to_path_buf(),
                    key,
                    rule,
                }),
        }
    }

    /// A workload application's phase: its method replaces the script, so
    /// a script location or pin beside it is refused (which would run?).
    fn no_script(&self, phase: &str) -> Result<ScriptConfig, ConfigError> {
        for key in ["ScriptLocation", "ScriptParams", "ScriptSha256"] {
            let key = format!("{phase}{key}");
            if self.get(&key).is_some() {
                return Err(self.field(
                    &key,
                    "cannot be given with \"workload\": quiesce runs the workload's own method instead of scripts".into(),
                ));
            }
        }
        Ok(ScriptConfig {
            location: PathBuf::new(),
            params: Vec::new(),
            retries: self.retries(&format!("{phase}ScriptNoOfRetries"))?,
            sha256: None,
        })
    }

    /// The keys of one script: `phase` is `pre` or `post`.
    fn script(&self, phase: &str) -> Result<ScriptConfig, ConfigError> {
        Ok(ScriptConfig {
            location: self.location(&format!("{phase}ScriptLocation"))?,
            params: self.params(&format!("{phase}ScriptParams"))?,
            retries: self.retries(&format!("{phase}ScriptNoOfRetries"))?,
            sha256: self.pin(&format!("{phase}ScriptSha256"))?,
        })
    }

    /// `timeoutInSeconds`, clamped to 1800 and to the plugin-host file's.
    fn timeout(&self, host: Option<u64>, warnings: &mut Vec<String>) -> Result<u64, ConfigError> {
        let mut timeout_secs = self.integer("timeoutInSeconds", DEFAULT_TIMEOUT_SECS, 1)?;
        if timeout_secs > MAX_TIMEOUT_SECS {
            warnings.push(format!(
                "{}: timeoutInSeconds {timeout_secs} is above the maximum; {MAX_TIMEOUT_SECS} is used",
                self.path.display()
            ));
            timeout_secs = MAX_TIMEOUT_SECS;
        }
        if let Some(host) = host {
            if timeout_secs > host {
                warnings.push(format!(
                    "timeoutInSeconds {timeout_secs} is above the plugin-host file's {host}; {host} is used"
                ));
                timeout_secs = host;
            }
        }
        Ok(timeout_secs)
    }

    /// `ScriptsExecutionPollTimeSeconds`: the extension accepts any integer
    /// and falls back to its default outside 1..5.
    fn poll_secs(&self, warnings: &mut Vec<String>) -> Result<u64, ConfigError> {
        const KEY: &str = "ScriptsExecutionPollTimeSeconds";
        match self.get(KEY) {
            None => Ok(DEFAULT_POLL_SECS),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => match n.as_u64() {
                Some(v @ 1..=5) => Ok(v),
                _ => {
                    warnings.push(format!(
                        "{}: {KEY} {n} is outside 1..5; {DEFAULT_POLL_SECS} is used",
                        self.path.display()
                    ));
                    Ok(DEFAULT_POLL_SECS)
                }
            },
            Some(v) => Err(self.field(KEY, format!("must be an integer, not {}", type_name(v)))),
        }
    }
}

/// The keys whose value is a count of something: the extension reads them
/// as numbers, so `30.0` and `1e3` run there as 30 and 1000.
const INTEGER_KEYS: [&str; 4] = [
    "preScriptNoOfRetries",
    "postScriptNoOfRetries",
    "timeoutInSeconds",
    "ScriptsExecutionPollTimeSeconds",
];

/// What the extension accepts and runs correctly, and the strict types below
/// would refuse (SPEC §3: such files must keep working), each with a warning
/// that names the key: a known key set to `null` is absent (a required one
/// is then reported missing), and an integral number written as a float is
/// that integer. `30.5` stays a float, refused by the integer rule.
fn read_as_the_extension_does(
    path: &Path,
    entries: &mut Vec<(String, Value)>,
    warnings: &mut Vec<String>,
) {
    entries.retain(|(key, value)| {
        let dropped = value.is_null() && KNOWN_KEYS.contains(&key.as_str());
        if dropped {
            warnings.push(format!(
                "{}: \"{key}\" is null; treated as absent",
                path.display()
            ));
        }
        !dropped
    });
    for (key, value) in entries.iter_mut() {
        if !INTEGER_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Some(int) = integral_float(value) else {
            continue;
        };
        warnings.push(format!(
            "{}: \"{key}\" is written {value}; read as the integer {int}",
            path.display()
        ));
        *value = int;
    }
}

/// The integer a float such as `30.0` or `1e3` stands for, when it is one
/// exactly and fits a 64-bit integer.
fn integral_float(value: &Value) -> Option<Value> {
    let Value::Number(n) = value else {
        return None;
    };
    let f = n.as_f64().filter(|_| n.is_f64())?;
    if !f.is_finite() || f.fract() != 0.0 {
        return None;
    }
    // The bounds are exact powers of two, so the comparisons are exact too.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(Value::from(f as u64))
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some(Value::from(f as i64))
    } else {
        None
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The known key nearest to `key` (case-insensitive edit distance), if it is
/// near enough to be a plausible typo.
pub fn closest_key(key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .min()
        .filter(|(d, k)| *d <= 3.max(k.len() / 4))
        .map(|(_, k)| k)
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Loaded, ConfigError> {
        parse(Path::new("/etc/azure/c.json"), text.as_bytes(), None)
    }

    const MIN: &str = r#"{"preScriptLocation":"/a/pre.sh","postScriptLocation":"/a/post.sh"}"#;

    #[test]
    fn defaults_apply() {
        let c = p(MIN).unwrap().config;
        assert_eq!(c.plugin_name, "ScriptRunner");
        assert_eq!(c.timeout_secs, 10);
        assert_eq!(c.poll_secs, 3);
        assert!(c.continue_on_failure && c.fs_freeze_enabled);
        assert_eq!(c.pre.retries, 0);
        assert!(c.pre.params.is_empty());
    }

    #[test]
    fn integral_floats_are_integers_with_a_warning() {
        let text = r#"{"preScriptLocation":"/a/pre.sh","postScriptLocation":"/a/post.sh",
            "timeoutInSeconds":1e3,"preScriptNoOfRetries":2.0,"postScriptNoOfRetries":0.0,
            "ScriptsExecutionPollTimeSeconds":4.0}"#;
        let l = p(text).unwrap();
        assert_eq!(l.config.timeout_secs, 1000);
        assert_eq!((l.config.pre.retries, l.config.post.retries), (2, 0));
        assert_eq!(l.config.poll_secs, 4);
        for key in [
            "timeoutInSeconds",
            "preScriptNoOfRetries",
            "postScriptNoOfRetries",
            "ScriptsExecutionPollTimeSeconds",
        ] {
            assert!(
                l.warnings
                    .iter()
                    .any(|w| w.contains(&format!("\"{key}\"")) && w.contains("integer")),
                "{key}: {:?}",
                l.warnings
            );
        }
        // The usual clamp applies after the conversion.
        let big = MIN.replace('}', r#","timeoutInSeconds":3600.0}"#);
        assert_eq!(p(&big).unwrap().config.timeout_secs, MAX_TIMEOUT_SECS);
    }

    #[test]
    fn fractional_and_out_of_range_numbers_stay_errors_naming_the_key() {
        for (key, value) in [
            ("timeoutInSeconds", "30.5"),
            ("timeoutInSeconds", "0.0"),
            ("timeoutInSeconds", "1e20"),
            ("preScriptNoOfRetries", "-1.0"),
            ("postScriptNoOfRetries", "0.5"),
        ] {
            let text = MIN.replace('}', &format!(r#","{key}":{value}}}"#));
            match p(&text) {
                Err(ConfigError::Field { key: k, .. }) => assert_eq!(k, key, "{value}"),
                other => panic!("{key}: {value}: {other:?}"),
            }
        }
        let poll = MIN.replace('}', r#","ScriptsExecutionPollTimeSeconds":2.5}"#);
        assert!(matches!(
            p(&poll),
            Err(ConfigError::Field { key, .. }) if key == "ScriptsExecutionPollTimeSeconds"
        ));
    }

    #[test]
    fn null_optional_keys_are_absent_with_a_warning() {
        // Every key but the two required script locations.
        let optional = KNOWN_KEYS
            .into_iter()
            .filter(|k| !k.ends_with("ScriptLocation") && *k != "workload" && *k != "connection");
        for key in optional {
            let text = MIN.replace('}', &format!(r#","{key}":null}}"#));
            let l = p(&text).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(l.config, p(MIN).unwrap().config, "{key}");
            assert!(
                l.warnings
                    .iter()
                    .any(|w| w.contains(&format!("\"{key}\" is null"))),
                "{key}: {:?}",
                l.warnings
            );
        }
        // A required key set to null is missing, and says so.
        let text = r#"{"preScriptLocation":null,"postScriptLocation":"/a/post.sh"}"#;
        assert!(matches!(
            p(text),
            Err(ConfigError::Field { key, rule, .. })
                if key == "preScriptLocation" && rule.contains("required")
        ));
    }

    #[test]
    fn typo_hint_names_closest_key() {
        assert_eq!(closest_key("timeoutInSecond"), Some("timeoutInSeconds"));
        assert_eq!(closest_key("fsfreezeenabled"), Some("fsFreezeEnabled"));
        assert_eq!(closest_key("completelyunrelatedthing"), None);
    }
}
