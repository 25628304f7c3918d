//! A workload application's settings (SPEC.md §3.2): the database quiesce
//! pauses by its own documented method instead of an operator's scripts —
//! `"workload"` and `"connection"` in an application's config.
//!
//! Nothing here is secret: an application's config names a root-only
//! option file (MariaDB) or passfile (PostgreSQL), or an OS user for peer
//! authentication; the password itself is read only by the client.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

/// Which database a workload application pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mariadb,
    Mysql,
}

impl Engine {
    /// The names of `"workload"` (and of workload.conf's `workload_name`).
    pub fn parse(s: &str) -> Option<Engine> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mariadb" => Some(Engine::Mariadb),
            "mysql" => Some(Engine::Mysql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mariadb => "mariadb",
            Engine::Mysql => "mysql",
        }
    }

    /// The distribution's own client, looked up on the fixed PATH.
    pub fn default_client(self) -> &'static str {
        match self {
            Engine::Postgres => "psql",
            Engine::Mariadb => "mariadb",
            Engine::Mysql => "mysql",
        }
    }
}

/// A password read from workload.conf's `credString`: never printed,
/// never on a command line, never in an environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client reaches the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connection {
    /// MariaDB/MySQL: the server's socket file; PostgreSQL: the directory
    /// holding its socket.
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The database user.
    pub user: Option<String>,
    /// PostgreSQL: the database to connect to (default `postgres`).
    pub database: Option<String>,
    /// The OS user the client runs as (peer / unix_socket authentication).
    pub os_user: Option<String>,
    /// MariaDB/MySQL: an option file (`--defaults-extra-file`);
    /// PostgreSQL: a passfile (`PGPASSFILE`). Root-owned, 0600.
    pub option_file: Option<PathBuf>,
    /// The client program, when not the distribution's on PATH.
    pub client: Option<PathBuf>,
    /// The longest a held session may stay open: the server closes it
    /// after this many idle seconds, releasing its lock, should every other
    /// release fail.
    pub max_hold_secs: u64,
    /// From workload.conf's `credString` only.
    pub password: Option<Secret>,
}

/// The default of `maxHoldSeconds`: the 1800 s script cap is per phase, a
/// snapshot between them is bounded by the 1800 s freeze maximum.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 600;

/// A workload application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub engine: Engine,
    pub connection: Connection,
}

/// The keys of `"connection"`.
pub const CONNECTION_KEYS: [&str; 9] = [
    "socket",
    "host",
    "port",
    "user",
    "database",
    "osUser",
    "optionFile",
    "client",
    "maxHoldSeconds",
];

/// Reads `"workload"` and `"connection"`; an error is the key and its rule.
pub fn from_json(
    workload: &Value,
    connection: Option<&Value>,
) -> Result<Workload, (String, String)> {
    let engine = match workload {
        Value::String(s) => Engine::parse(s).ok_or_else(|| {
            let rule = if s.trim().eq_ignore_ascii_case("oracle") {
                "is \"oracle\", which quiesce refuses: no Oracle server could be tested; use the script route".to_string()
            } else {
                format!("must be \"postgres\", \"mariadb\" or \"mysql\", not \"{s}\"")
            };
            ("workload".to_string(), rule)
        })?,
        _ => return Err(("workload".into(), "must be a string".into())),
    };
    let mut c = Connection {
        max_hold_secs: DEFAULT_MAX_HOLD_SECS,
        ..Connection::default()
    };
    let Some(conn) = connection else {
        return Ok(Workload {
            engine,
            connection: c,
        });
    };
    let Value::Object(map) = conn else {
        return Err(("connection".into(), "must be a JSON object".into()));
    };
    let bad = |k: &str, rule: &str| (format!("connection.{k}"), rule.to_string());
    for (k, v) in map {
        let text = || match v {
            Value::String(s) if !s.is_empty() && !s.contains('\0') => Ok(s.clone()),
            _ => Err(bad(k, "must be a non-empty string")),
        };
        let path = || {
            let s = text()?;
            if s.starts_with('/') {
                Ok(PathBuf::from(s))
            } else {
                Err(bad(k, "must be an absolute path"))
            }
        };
        match k.as_str() {
            "socket" => c.socket = Some(path()?),
            "host" => c.host = Some(text()?),
            "port" => {
                c.port = Some(
                    v.as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(k, "must be an integer 1..65535"))?,
                )
            }
            "user" => c.user = Some(text()?),
            "database" => c.database = Some(text()?),
            "osUser" => c.os_user = Some(text()?),
            "optionFile" => c.option_file = Some(path()?),
            "client" => c.client = Some(path()?),
            "maxHoldSeconds" => {
                c.max_hold_secs = v
                    .as_u64()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| bad(k, "must be an integer 1..3600"))?
            }
            _ => {
                return Err(bad(
                    k,
                    &format!(
                        "is not a connection key (known: {})",
                        CONNECTION_KEYS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(Workload {
        engine,
        connection: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_connection_is_read_with_its_types() {
        let w = from_json(
            &json!("mariadb"),
            Some(&json!({"socket": "/run/mysqld/mysqld.sock", "user": "root", "port": 3306})),
        )
        .unwrap();
        assert_eq!(w.engine, Engine::Mariadb);
        assert_eq!(w.connection.port, Some(3306));
        assert_eq!(w.connection.max_hold_secs, DEFAULT_MAX_HOLD_SECS);
    }

    #[test]
    fn oracle_and_unknown_names_and_keys_are_refused() {
        let e = from_json(&json!("oracle"), None).unwrap_err();
        assert!(e.1.contains("refuses"), "{e:?}");
        assert!(from_json(&json!("db2"), None).is_err());
        assert!(from_json(&json!("postgres"), Some(&json!({"password": "x"}))).is_err());
        assert!(from_json(&json!("postgres"), Some(&json!({"socket": "rel"}))).is_err());
    }

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
