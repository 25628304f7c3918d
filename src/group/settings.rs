//! A group's settings (SPEC.md §11): `--groups-dir DIR/NAME.json`, a
//! root-only file checked like every trusted file (SPEC §4), in the shape
//! `{"endpoints": [...], "caFile", "certFile", "keyFile", "members": [...],
//! "joinSeconds": 30, "leaseSeconds": 5}`. The TLS files are checked and
//! read too: the key never leaves its file except into the TLS library.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::etcd::TlsFiles;
use crate::integrity::{CheckedFile, FileRole, TrustError};

/// Where groups live by default.
pub const DEFAULT_GROUPS_DIR: &str = "/etc/quiesce/groups.d";

const KNOWN: [&str; 7] = [
    "endpoints",
    "caFile",
    "certFile",
    "keyFile",
    "members",
    "joinSeconds",
    "leaseSeconds",
];
const MAX_FILE: usize = 64 * 1024;

/// Why a group's settings cannot be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("group file {0}: {1}")]
    Trust(PathBuf, TrustError),
    #[error("group file {path}: {detail}")]
    Content { path: PathBuf, detail: String },
    #[error("group name {0:?} is not a plain name (letters, digits, '-', '_', '.')")]
    Name(String),
}

impl SettingsError {
    /// The file to fix, for the operator's action.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SettingsError::Trust(p, _) | SettingsError::Content { path: p, .. } => Some(p),
            SettingsError::Name(_) => None,
        }
    }
}

/// A group, checked.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub name: String,
    pub file: PathBuf,
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub members: Vec<String>,
    pub join_seconds: u64,
    pub lease_seconds: u64,
}

/// A plain name: it becomes a file name and a key prefix.
pub fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl GroupSettings {
    /// `DIR/NAME.json`, checked (root-owned, 600/400, every directory above
    /// it root's) and parsed strictly; an unknown key names the nearest
    /// known one.
    pub fn load(dir: &Path, name: &str) -> Result<GroupSettings, SettingsError> {
        if !plain_name(name) {
            return Err(SettingsError::Name(name.into()));
        }
        let path = dir.join(format!("{name}.json"));
        let checked = CheckedFile::open(&path, FileRole::Config)
            .map_err(|e| SettingsError::Trust(path.clone(), e))?;
        let text = checked
            .read_limited(MAX_FILE)
            .map_err(|e| SettingsError::Trust(path.clone(), e))?;
        parse(&path, name, &text)
    }

    /// The TLS files, each checked: the CA and the certificate not
    /// writable by others, the key root-only (600/400).
    pub fn tls(&self) -> Result<Option<TlsFiles>, SettingsError> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca_file, &self.cert_file, &self.key_file)
        else {
            return Ok(None);
        };
        let read = |p: &Path, role| {
            CheckedFile::open(p, role)
                .and_then(|f| f.read_limited(MAX_FILE))
                .map_err(|e| SettingsError::Trust(p.to_path_buf(), e))
        };
        Ok(Some(TlsFiles {
            ca_pem: read(ca, FileRole::Policy)?,
            cert_pem: read(cert, FileRole::Policy)?,
            key_pem: read(key, FileRole::Config)?,
        }))
    }
}

fn parse(path: &Path, name: &str, text: &[u8]) -> Result<GroupSettings, SettingsError> {
    let bad = |detail: String| SettingsError::Content {
        path: path.to_path_buf(),
        detail,
    };
    let v: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(bad("not one JSON object".into()));
    };
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(match closest(k) {
            Some(known) => format!("unknown key {k:?}; did you mean {known:?}?"),
            None => format!("unknown key {k:?} (known: {})", KNOWN.join(", ")),
        }));
    }
    let endpoints = strings(&map, "endpoints").map_err(bad)?;
    if endpoints.is_empty() {
        return Err(bad(
            "\"endpoints\" must list at least one https:// URL".into()
        ));
    }
    if let Some(e) = endpoints
        .iter()
        .find(|e| !e.starts_with("https://") && !e.starts_with("http://"))
    {
        return Err(bad(format!("endpoint {e:?} is not an https:// URL")));
    }
    let members = strings(&map, "members").map_err(bad)?;
    if members.is_empty() || members.iter().any(|m| !plain_name(m)) {
        return Err(bad("\"members\" must list plain member names".into()));
    }
    let file = |k: &str| -> Result<Option<PathBuf>, SettingsError> {
        match map.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if Path::new(s).is_absolute() => Ok(Some(s.into())),
            Some(_) => Err(bad(format!("{k:?} must be an absolute path"))),
        }
    };
    let (ca_file, cert_file, key_file) = (file("caFile")?, file("certFile")?, file("keyFile")?);
    let tls_keys = [&ca_file, &cert_file, &key_file]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if endpoints.iter().any(|e| e.starts_with("https://")) && tls_keys != 3 {
        return Err(bad(
            "https endpoints need caFile, certFile and keyFile".into()
        ));
    }
    let seconds = |k: &str, default: u64, max: u64| match map.get(k) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=max).contains(s))
            .ok_or_else(|| bad(format!("{k:?} must be an integer from 1 to {max}"))),
    };
    Ok(GroupSettings {
        name: name.into(),
        file: path.to_path_buf(),
        endpoints,
        ca_file,
        cert_file,
        key_file,
        members,
        join_seconds: seconds("joinSeconds", 30, 3600)?,
        lease_seconds: seconds("leaseSeconds", 5, 600)?,
    })
}

fn strings(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    let arr = map
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{key:?} must be an array of strings"))?;
    arr.iter()
        .map(|v| v.as_str().map(String::from))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{key:?} must be an array of strings"))
}

/// The known key nearest to `key`, when it is a plausible typo.
fn closest(key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    KNOWN
        .iter()
        .map(|k| {
            (
                crate::config::edit_distance(&lower, &k.to_ascii_lowercase()),
                *k,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<GroupSettings, SettingsError> {
        parse(
            Path::new("/etc/quiesce/groups.d/g.json"),
            "g",
            text.as_bytes(),
        )
    }

    const OK: &str = r#"{"endpoints":["https://10.0.0.1:2379"],"caFile":"/etc/q/ca.pem",
        "certFile":"/etc/q/c.pem","keyFile":"/etc/q/k.pem","members":["db1","app1"]}"#;

    #[test]
    fn the_spec_shape_parses_with_defaults() {
        let g = p(OK).unwrap();
        assert_eq!(g.members, ["db1", "app1"]);
        assert_eq!((g.join_seconds, g.lease_seconds), (30, 5));
    }

    #[test]
    fn a_typo_names_the_key_meant() {
        let e = p(&OK.replace("members", "memebrs"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean \"members\""), "{e}");
    }

    #[test]
    fn https_without_the_tls_files_is_refused() {
        let e = p(r#"{"endpoints":["https://a:2379"],"members":["a"]}"#).unwrap_err();
        assert!(e.to_string().contains("caFile"), "{e}");
    }

    #[test]
    fn names_are_plain() {
        assert!(plain_name("db-1.example"));
        assert!(!plain_name("../x") && !plain_name("a/b") && !plain_name(""));
    }
}
