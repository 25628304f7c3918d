//! The environment a script starts with (SPEC.md §7): `PATH` fixed to the
//! system directories, `HOME` root's from the password database, `LANG`
//! the caller's only when it is a plain locale name — never anything else
//! of the caller's.
//!
//! Why `HOME` and `LANG` at all, and why not as the caller set them: a
//! `sudo` that keeps them (`env_keep`) hands the user's `HOME=/home/alice`
//! to a root script, whose database clients then read `~/.psqlrc`,
//! `~/.my.cnf` and the user's Python site-packages; and glibc treats a
//! `LANG` holding a `/` as a path to load locale data from.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

/// The PATH scripts get: the system directories only, never the caller's.
/// `#!/usr/bin/env NAME` is resolved on it (SPEC §4).
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `LANG` when the caller has none, or one that is not a plain locale name.
pub const DEFAULT_LANG: &str = "C.UTF-8";

/// `HOME` when root has no usable password-database entry.
const FALLBACK_HOME: &str = "/";

/// Longest `LANG` accepted; real locale names are far shorter
/// (`ca_ES.UTF-8@valencia` is 20 bytes).
pub const MAX_LANG_LEN: usize = 64;

/// `HOME` and `LANG` for every script of a run, decided once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEnv {
    pub home: PathBuf,
    pub lang: String,
}

impl ScriptEnv {
    /// From root's password-database entry and the caller's `LANG`; the
    /// warnings say what of the caller's was not taken, and why.
    pub fn of_caller() -> (ScriptEnv, Vec<String>) {
        let mut warnings = Vec::new();
        let home = match User::from_uid(Uid::from_raw(0)) {
            Ok(Some(root)) if root.dir.is_absolute() => root.dir,
            Ok(Some(root)) => {
                warnings.push(format!(
                    "root's home directory in the password database is {:?}, not an absolute path; scripts get HOME={FALLBACK_HOME}",
                    root.dir
                ));
                FALLBACK_HOME.into()
            }
            Ok(None) => {
                warnings.push(format!(
                    "uid 0 has no entry in the password database; scripts get HOME={FALLBACK_HOME}"
                ));
                FALLBACK_HOME.into()
            }
            Err(e) => {
                warnings.push(format!(
                    "cannot look up uid 0 in the password database ({e}); scripts get HOME={FALLBACK_HOME}"
                ));
                FALLBACK_HOME.into()
            }
        };
        let lang = match std::env::var_os("LANG") {
            None => DEFAULT_LANG.to_string(),
            Some(v) => match v.to_str().filter(|v| plain_locale_name(v)) {
                Some(v) => v.to_string(),
                None => {
                    warnings.push(format!(
                        "LANG={:?} of the caller is not a plain locale name (such as C, C.UTF-8, en_US.UTF-8, de_DE@euro); scripts get LANG={DEFAULT_LANG}",
                        v.to_string_lossy()
                    ));
                    DEFAULT_LANG.to_string()
                }
            },
        };
        (ScriptEnv { home, lang }, warnings)
    }
}

/// A plain locale name, `language[_territory][.codeset][@modifier]`: ASCII
/// letters, digits and `_ . - @` only, starting with a letter, at most one
/// `.` and one `@` in that order, no `/` (glibc reads a name with a `/` as a
/// path to locale data), so no `..`, and at most [`MAX_LANG_LEN`] bytes.
pub fn plain_locale_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'));
    let (base, modifier) = match name.split_once('@') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let (lang, codeset) = match base.split_once('.') {
        Some((l, c)) => (l, Some(c)),
        None => (base, None),
    };
    let part_ok = |p: Option<&str>| p.is_none_or(|p| !p.is_empty() && !p.contains(['.', '@']));
    !name.is_empty()
        && name.len() <= MAX_LANG_LEN
        && ok_chars
        && name.as_bytes()[0].is_ascii_alphabetic()
        && !lang.contains('-')
        && part_ok(codeset)
        && part_ok(modifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_locale_names_are_accepted() {
        for name in [
            "C",
            "POSIX",
            "C.UTF-8",
            "C.utf8",
            "en_US.UTF-8",
            "de_DE@euro",
            "sr_RS@latin",
            "ca_ES.UTF-8@valencia",
            "es_419.UTF-8",
            "en_US.ISO-8859-1",
        ] {
            assert!(plain_locale_name(name), "{name}");
        }
    }

    #[test]
    fn paths_and_odd_names_are_refused() {
        let long = "a".repeat(MAX_LANG_LEN + 1);
        for name in [
            "",
            "/home/alice/loc",
            "../../home/alice/loc",
            "en_US.UTF-8/../../x",
            "..",
            ".UTF-8",
            "en_US..UTF-8",
            "en_US.UTF-8.x",
            "de_DE@euro@x",
            "de_DE@",
            "en_US.",
            "en US",
            "en_US.UTF-8\n",
            "-en",
            "en-US",
            "1en",
            "en_US.UTF-8;x",
            "é",
            long.as_str(),
        ] {
            assert!(!plain_locale_name(name), "{name:?}");
        }
    }
}
