//! The Azure extension's `/etc/azure/workload.conf` (SPEC.md §3.2): INI,
//! section `[workload]`, keys `workload_name`, `command_path`,
//! `linux_user`, `credString`, `ipc_folder`, `timeout`, `role`, with the
//! extension's defaults (`timeout` 90, `role` master). quiesce reads it
//! as one more application, with the trust checks the extension never
//! made, and says which keys it reads differently.

use std::path::{Path, PathBuf};

use super::workload::{Connection, Engine, Secret, Workload, DEFAULT_MAX_HOLD_SECS};
use crate::integrity::{CheckedFile, FileRole};

/// Where the extension reads it.
pub const DEFAULT_WORKLOAD_CONF: &str = "/etc/azure/workload.conf";

/// The extension's `timeout` default (seconds).
const DEFAULT_TIMEOUT: u64 = 90;

/// workload.conf, read.
#[derive(Debug, Clone)]
pub struct WorkloadConf {
    pub workload: Workload,
    pub timeout_secs: u64,
    /// SHA-256 of the file's bytes, for the audit trail and the pending
    /// post-script's record.
    pub sha256: String,
    /// One per key quiesce reads differently from the extension.
    pub warnings: Vec<String>,
}

/// Why workload.conf is refused; each is a row of the error table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadConfError {
    /// 501: unreadable, insecure or malformed.
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    /// 502.
    #[error("{0}: role \"{1}\" is not run by quiesce (only master)")]
    Role(PathBuf, String),
    /// 503.
    #[error("{0}: workload_name \"{1}\" {2}")]
    Name(PathBuf, String, &'static str),
    /// 505.
    #[error("{0}: credString: {1}")]
    Credentials(PathBuf, String),
}

/// The text of `path` read to decide what it is, before its checks: only
/// a regular file (opened without following a link and without blocking,
/// so a FIFO or a device there never hangs the run), at most 64 KiB. The
/// pre-check reads it again through its trust checks.
pub fn peek(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Whether the file names a workload at all (no `[workload]` section or
/// no `workload_name`: the extension skips its workload path).
pub fn names_a_workload(text: &str) -> bool {
    section(text)
        .iter()
        .any(|(k, v)| k == "workload_name" && !v.is_empty())
}

/// Loads and checks `path` (root-owned, not group- or world-writable).
pub fn load(path: &Path) -> Result<WorkloadConf, WorkloadConfError> {
    let parse_err = |e: String| WorkloadConfError::Parse(path.to_path_buf(), e);
    let file = CheckedFile::open(path, FileRole::Policy).map_err(|e| parse_err(e.to_string()))?;
    let bytes = file
        .read_limited(64 * 1024)
        .map_err(|e| parse_err(e.to_string()))?;
    let sha256 = {
        use sha2::{Digest, Sha256};
        crate::integrity::hex(&Sha256::digest(&bytes))
    };
    let text = String::from_utf8(bytes).map_err(|_| parse_err("not valid UTF-8".into()))?;
    let mut conf = parse(path, &text)?;
    conf.sha256 = sha256;
    if file.identity().mode & 0o044 != 0 && conf.workload.connection.password.is_some() {
        conf.warnings.push(format!(
            "{}: holds a password in credString but is readable by group or others (mode {:04o}); chmod 600 it",
            path.display(),
            file.identity().mode
        ));
    }
    Ok(conf)
}

/// The `[workload]` section's keys and values, as ConfigParser reads them
/// (`key = value` or `key: value`, `#`/`;` comments, keys lowercased
/// except that the extension spells `credString`).
fn section(text: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            inside = l == "[workload]";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(i) = l.find(['=', ':']) {
            let (k, v) = l.split_at(i);
            out.push((k.trim().to_ascii_lowercase(), v[1..].trim().to_string()));
        }
    }
    out
}

/// Parses the text of `path`.
pub fn parse(path: &Path, text: &str) -> Result<WorkloadConf, WorkloadConfError> {
    let p = || path.to_path_buf();
    let keys = section(text);
    let get = |k: &str| {
        keys.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let name = get("workload_name")
        .ok_or_else(|| WorkloadConfError::Parse(p(), "no [workload] workload_name".into()))?;
    let engine = match Engine::parse(&name) {
        Some(e) => e,
        None if name.eq_ignore_ascii_case("oracle") => {
            return Err(WorkloadConfError::Name(p(), name, "is refused: quiesce has no Oracle server to test its method against; use the script route"))
        }
        None => return Err(WorkloadConfError::Name(p(), name, "is not postgres, mariadb or mysql")),
    };
    let role = get("role").unwrap_or_else(|| "master".into());
    if role != "master" {
        return Err(WorkloadConfError::Role(p(), role));
    }
    let timeout_secs = match get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| *t >= 1)
            .ok_or_else(|| {
                WorkloadConfError::Parse(
                    p(),
                    format!("timeout \"{t}\" is not a whole number of seconds >= 1"),
                )
            })?
            .min(crate::config::MAX_TIMEOUT_SECS),
    };
    let mut connection = Connection {
        max_hold_secs: DEFAULT_MAX_HOLD_SECS,
        os_user: get("linux_user"),
        client: get("command_path").map(|d| client_in(&d, engine)),
        ..Connection::default()
    };
    if let Some(cred) = get("credstring") {
        cred_string(engine, &cred, &mut connection)
            .map_err(|e| WorkloadConfError::Credentials(p(), e))?;
    }
    let warnings = differences(path, &keys);
    Ok(WorkloadConf {
        workload: Workload { engine, connection },
        timeout_secs,
        sha256: String::new(),
        warnings,
    })
}

/// `command_path` is the directory of the client (the extension appends
/// the workload's name), or the client itself.
fn client_in(dir: &str, engine: Engine) -> PathBuf {
    let p = PathBuf::from(dir);
    if p.is_dir() || dir.ends_with('/') {
        p.join(engine.default_client())
    } else {
        p
    }
}

/// A warning for every key quiesce reads differently from the extension.
fn differences(path: &Path, keys: &[(String, String)]) -> Vec<String> {
    let says = |k: &str| -> Option<&str> {
        Some(match k {
            "credstring" => "credString is parsed into the client's options and a root-only credentials file; it is never put on a command line or logged (the extension pasted it into a root shell)",
            "command_path" => "command_path only locates the client; it is run directly, never through a shell or sudo",
            "linux_user" => "linux_user is the OS user the client runs as (peer authentication), without a login shell (the extension ran su -)",
            "ipc_folder" => "ipc_folder is not used: the held session is reached through a root-only socket in quiesce's run directory",
            "timeout" => "timeout is the phase timeout (at most 1800 s); a held lock is released by the post phase on its own session, never by a SLEEP running out",
            "dbnames" | "enforceslaveonly" => "is not used: quiesce quiesces the whole server",
            _ => return None,
        })
    };
    keys.iter()
        .filter_map(|(k, _)| says(k).map(|s| format!("{}: {k}: {s}", path.display())))
        .collect()
}

/// credString as the extension's users write it for `psql` and
/// `mysql`/`mariadb`: `-h`, `-p`/`--port` (psql) or `-P`/`--port`,
/// `-U`/`-u`, `-S`/`--socket`, `--defaults-extra-file=…`, `-pPASSWORD`.
fn cred_string(engine: Engine, cred: &str, c: &mut Connection) -> Result<(), String> {
    let words = split_words(cred)?;
    let mut it = words.into_iter();
    let pg = engine == Engine::Postgres;
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ if w.len() > 2 && w.starts_with('-') && !w.starts_with("--") => {
                (w[..2].to_string(), Some(w[2..].to_string()))
            }
            _ => (w.clone(), None),
        };
        // `-p` alone is a password prompt for mysql: nothing to give it.
        if !pg && flag == "-p" && inline.is_none() {
            return Err(
                "-p without a password would prompt; give -pPASSWORD or an option file".into(),
            );
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match (pg, flag.as_str()) {
            (_, "-h" | "--host") => c.host = Some(value()?),
            (true, "-p") | (_, "--port") | (false, "-P") => {
                let v = value()?;
                c.port = Some(v.parse().map_err(|_| format!("port \"{v}\" is not a number"))?)
            }
            (true, "-U" | "--username") | (false, "-u" | "--user") => c.user = Some(value()?),
            (false, "-S" | "--socket") => c.socket = Some(PathBuf::from(value()?)),
            (true, "-d" | "--dbname") => c.database = Some(value()?),
            (false, "-p" | "--password") => c.password = Some(Secret(value()?)),
            (false, "--defaults-extra-file" | "--defaults-file") => {
                c.option_file = Some(PathBuf::from(value()?))
            }
            _ if !w.starts_with('-') => {
                return Err(format!(
                    "\"{}\" is not an option quiesce reads (a login-path name or a user alone is not supported: give -u/-U, or an option file)",
                    if w.len() > 24 { "…" } else { "a word" }
                ))
            }
            _ => return Err(format!("option {flag} is not one quiesce reads (-h, -p/--port, -U/-u, -S/--socket, --defaults-extra-file=, -pPASSWORD)")),
        }
    }
    Ok(())
}

/// Splits like a shell without expansions: whitespace, single and double
/// quotes. An unterminated quote is an error.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                cur.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(cur.take()),
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    words.extend(cur);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<WorkloadConf, WorkloadConfError> {
        parse(Path::new("/etc/azure/workload.conf"), text)
    }

    #[test]
    fn the_extensions_template_filled_in_for_mysql() {
        let c = p("[workload]\n#workload_name valid values- mysql, oracle, mariadb, postgres\nworkload_name = mysql\ncommand_path = \ncredString = -u backup -pS3cr:et -S /run/mysqld/mysqld.sock\nipc_folder = \ntimeout = \nlinux_user = \n").unwrap();
        assert_eq!(c.workload.engine, Engine::Mysql);
        assert_eq!(c.timeout_secs, 90);
        let conn = &c.workload.connection;
        assert_eq!(conn.user.as_deref(), Some("backup"));
        assert_eq!(conn.password, Some(Secret("S3cr:et".into())));
        assert_eq!(conn.socket, Some(PathBuf::from("/run/mysqld/mysqld.sock")));
        assert!(c.warnings.iter().any(|w| w.contains("credString")));
        assert!(!format!("{c:?}").contains("S3cr"));
    }

    #[test]
    fn postgres_options_and_port() {
        let c = p("[workload]\nworkload_name = postgres\ncredString = -h /run/postgresql -p 5433 -U postgres\nlinux_user = postgres\ntimeout = 30\n").unwrap();
        let conn = &c.workload.connection;
        assert_eq!(conn.port, Some(5433));
        assert_eq!(conn.os_user.as_deref(), Some("postgres"));
        assert_eq!(c.timeout_secs, 30);
    }

    #[test]
    fn named_errors() {
        assert!(matches!(
            p("[workload]\nworkload_name = oracle\n"),
            Err(WorkloadConfError::Name(..))
        ));
        assert!(matches!(
            p("[workload]\nworkload_name = mysql\nrole = slave\n"),
            Err(WorkloadConfError::Role(..))
        ));
        assert!(matches!(
            p("[workload]\nworkload_name = mysql\ncredString = -p\n"),
            Err(WorkloadConfError::Credentials(..))
        ));
        assert!(matches!(
            p("[workload]\nworkload_name = mysql\ncredString = mylogin\n"),
            Err(WorkloadConfError::Credentials(..))
        ));
        assert!(matches!(
            p("[workload]\nworkload_name = mysql\ncredString = -u 'x\n"),
            Err(WorkloadConfError::Credentials(..))
        ));
        assert!(matches!(
            p("[other]\nx=1\n"),
            Err(WorkloadConfError::Parse(..))
        ));
    }
}
