//! The method per database and version (SPEC.md §3.2), from each one's own
//! documentation for snapshot backups, and where its files are.
//!
//! - PostgreSQL is crash-safe when its data directory, WAL and tablespaces
//!   are frozen in one window (the WAL is flushed before the data it
//!   describes, so the copy recovers as from a power loss; "Backup and
//!   Restore: File System Level Backup"). So: `CHECKPOINT` before the
//!   freeze (a short recovery on the copy), no lock, no backup mode —
//!   exclusive `pg_start_backup` was removed in 15, which is where the
//!   extension's own method fails.
//! - MariaDB/MySQL with InnoDB only (and a durable redo log,
//!   `innodb_flush_log_at_trx_commit` 1 or 2: the freeze flushes the page
//!   cache), not a replica: crash-safe the same way; no lock at all.
//! - Non-transactional tables (MyISAM, Aria, CSV, ARCHIVE) outside the
//!   system schema, a replica's positions, or a redo log written once a
//!   second (`innodb_flush_log_at_trx_commit=0`): a lock is needed, held in
//!   one session from pre to post and released on that session. MariaDB
//!   10.4.1 and later: `BACKUP STAGE START`, `FLUSH`, `BLOCK_DDL`,
//!   `BLOCK_COMMIT` ("Using BACKUP STAGE Commands for Storage Snapshots"),
//!   then `BACKUP STAGE END`; MySQL and older MariaDB: `FLUSH TABLES WITH
//!   READ LOCK`, then `UNLOCK TABLES` (MySQL 8's `LOCK INSTANCE FOR
//!   BACKUP` permits DML, so it would not hold MyISAM tables still). Never
//!   `SET GLOBAL read_only`: a post
//!   that never runs must not leave the server read-only, and a session's
//!   lock ends with the session.

use std::path::PathBuf;
use std::time::Instant;

use crate::config::workload::Engine;

use super::session::{Session, SessionError};

/// What the pre phase does, and what the post phase releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// PostgreSQL: `CHECKPOINT` before the freeze; nothing held.
    Checkpoint,
    /// InnoDB only: nothing flushed, nothing held.
    NoLock,
    /// MariaDB ≥ 10.4.1: `BACKUP STAGE` up to `BLOCK_COMMIT`, held.
    BackupStage,
    /// MySQL, MariaDB < 10.4.1: `FLUSH TABLES WITH READ LOCK`, held.
    ReadLock,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Checkpoint => "CHECKPOINT",
            Method::NoLock => "no lock",
            Method::BackupStage => "BACKUP STAGE BLOCK_COMMIT",
            Method::ReadLock => "FLUSH TABLES WITH READ LOCK",
        }
    }

    /// The method [`Method::name`] names.
    pub fn from_name(name: &str) -> Option<Method> {
        [
            Method::Checkpoint,
            Method::NoLock,
            Method::BackupStage,
            Method::ReadLock,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// Whether a session stays open from pre to post.
    pub fn holds(self) -> bool {
        matches!(self, Method::BackupStage | Method::ReadLock)
    }

    /// The statements of the pre phase.
    pub fn pre_sql(self, lock_wait_secs: u64, max_hold_secs: u64) -> String {
        let session = format!(
            "SET SESSION lock_wait_timeout = {lock_wait_secs}; SET SESSION wait_timeout = {max_hold_secs};"
        );
        match self {
            Method::Checkpoint => "CHECKPOINT;".into(),
            Method::NoLock => String::new(),
            Method::BackupStage => format!(
                "{session} BACKUP STAGE START; BACKUP STAGE FLUSH; BACKUP STAGE BLOCK_DDL; BACKUP STAGE BLOCK_COMMIT;"
            ),
            Method::ReadLock => format!("{session} FLUSH TABLES WITH READ LOCK;"),
        }
    }

    /// The statement that releases what the pre phase holds, on its session.
    pub fn release_sql(self) -> &'static str {
        match self {
            Method::BackupStage => "BACKUP STAGE END;",
            Method::ReadLock => "UNLOCK TABLES;",
            Method::Checkpoint | Method::NoLock => "",
        }
    }
}

/// What the server said about itself.
#[derive(Debug, Clone)]
pub struct Server {
    pub version: String,
    pub method: Method,
    /// Why this method, in a sentence.
    pub why: String,
    /// Where its files are, each with what it is (`data directory`, …).
    pub paths: Vec<(String, PathBuf)>,
}

impl Server {
    /// The server as tab-separated lines (`quiesce __workload probe`'s
    /// output): `version`, `method`, `reason`, one `path` per location.
    pub fn to_lines(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        let mut out = format!(
            "version\t{}\nmethod\t{}\nreason\t{}\n",
            clean(&self.version),
            self.method.name(),
            clean(&self.why)
        );
        for (what, path) in &self.paths {
            out.push_str(&format!(
                "path\t{}\t{}\n",
                clean(what),
                clean(&path.display().to_string())
            ));
        }
        out
    }

    /// What [`Server::to_lines`] wrote; `None` when it is not that.
    pub fn from_lines(text: &str) -> Option<Server> {
        let (mut version, mut method, mut why, mut paths) = (None, None, None, Vec::new());
        for line in text.lines() {
            let mut f = line.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some("version"), Some(v), None) => version = Some(v.to_string()),
                (Some("method"), Some(m), None) => method = Method::from_name(m),
                (Some("reason"), Some(r), None) => why = Some(r.to_string()),
                (Some("path"), Some(w), Some(p)) => paths.push((w.to_string(), PathBuf::from(p))),
                _ => return None,
            }
        }
        Some(Server {
            version: version?,
            method: method?,
            why: why?,
            paths,
        })
    }
}

/// Asks the server its version and where its files are, and chooses the
/// method.
pub fn inspect(engine: Engine, s: &mut Session, deadline: Instant) -> Result<Server, SessionError> {
    match engine {
        Engine::Postgres => inspect_postgres(s, deadline),
        Engine::Mariadb | Engine::Mysql => inspect_mariadb(s, deadline),
    }
}

fn first(lines: Vec<String>) -> String {
    lines
        .into_iter()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn inspect_postgres(s: &mut Session, deadline: Instant) -> Result<Server, SessionError> {
    let version = first(s.query("SHOW server_version;", deadline)?);
    let data = PathBuf::from(first(s.query("SHOW data_directory;", deadline)?));
    let mut paths = vec![("data directory".to_string(), data.clone())];
    // pg_wal may be a link to another filesystem (initdb --waldir).
    let wal = std::fs::canonicalize(data.join("pg_wal")).unwrap_or_else(|_| data.join("pg_wal"));
    paths.push(("WAL directory".into(), wal));
    let spaces = s.query(
        "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE pg_tablespace_location(oid) <> '';",
        deadline,
    )?;
    for t in spaces.into_iter().filter(|t| !t.trim().is_empty()) {
        paths.push(("tablespace".into(), PathBuf::from(t.trim())));
    }
    Ok(Server {
        why: format!(
            "PostgreSQL {version} is crash-safe when its data directory, WAL and tablespaces are frozen in one window; CHECKPOINT before the freeze, no lock and no backup mode (exclusive pg_start_backup was removed in 15)"
        ),
        version,
        method: Method::Checkpoint,
        paths,
    })
}

/// The server variables the method and the coverage check read (`SHOW
/// VARIABLES` lists only those the server has: MySQL lacks the Aria ones).
const MARIADB_VARS: &str = "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'datadir', \
    'innodb_data_home_dir', 'innodb_log_group_home_dir', 'innodb_undo_directory', \
    'log_bin_basename', 'relay_log_basename', 'aria_log_dir_path', 'innodb_flush_log_at_trx_commit');";

/// Tables that are not crash-safe under a freeze, outside the system schemas.
const NON_TRANSACTIONAL: &str = "SELECT COUNT(*) FROM information_schema.TABLES \
    WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE IN ('MyISAM', 'Aria', 'CSV', 'ARCHIVE', 'MRG_MyISAM') \
    AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys');";

fn inspect_mariadb(s: &mut Session, deadline: Instant) -> Result<Server, SessionError> {
    let vars: Vec<(String, String)> = s
        .query(MARIADB_VARS, deadline)?
        .into_iter()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let version = var("version").unwrap_or_default();
    let nontx: u64 = first(s.query(NON_TRANSACTIONAL, deadline)?)
        .parse()
        .unwrap_or(0);
    let mariadb = version.contains("MariaDB");
    // Readable without SUPER/REPLICA MONITOR: a running replica's
    // positions change under the snapshot.
    let replica = if mariadb {
        let l = first(s.query("SHOW GLOBAL STATUS LIKE 'Slaves_running';", deadline)?);
        l.split('\t').nth(1).is_some_and(|n| n.trim() != "0")
    } else {
        first(s.query(
            "SELECT COUNT(*) FROM performance_schema.replication_connection_configuration;",
            deadline,
        )?) != "0"
    };
    let flush = var("innodb_flush_log_at_trx_commit").unwrap_or_else(|| "1".into());
    let (method, why) = choose(&version, nontx, replica, &flush);
    Ok(Server {
        paths: mariadb_paths(&var),
        version,
        method,
        why,
    })
}

/// The method for a MariaDB/MySQL server, and why.
pub fn choose(version: &str, nontx: u64, replica: bool, flush: &str) -> (Method, String) {
    let mut needs = Vec::new();
    if nontx > 0 {
        needs.push(format!(
            "{nontx} non-transactional table(s) (MyISAM/Aria/CSV/ARCHIVE)"
        ));
    }
    if replica {
        needs.push("replica positions".to_string());
    }
    if flush == "0" {
        needs.push("innodb_flush_log_at_trx_commit=0 (commits not yet written)".to_string());
    }
    if needs.is_empty() {
        return (
            Method::NoLock,
            format!("{version}: InnoDB only, innodb_flush_log_at_trx_commit={flush}, not a replica: crash-safe when its files are frozen in one window; no lock"),
        );
    }
    let need = needs.join(", ");
    if backup_stage_available(version) {
        (
            Method::BackupStage,
            format!("{version}: {need} need a lock; BACKUP STAGE (MariaDB >= 10.4.1) up to BLOCK_COMMIT, the lightest that blocks them, held in one session until post"),
        )
    } else {
        (
            Method::ReadLock,
            format!("{version}: {need} need a lock; this server has no BACKUP STAGE, so FLUSH TABLES WITH READ LOCK, held in one session until post"),
        )
    }
}

/// MariaDB 10.4.1 and later have `BACKUP STAGE`.
fn backup_stage_available(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    let nums: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    match nums.as_slice() {
        [major, minor, patch, ..] => (*major, *minor, *patch) >= (10, 4, 1),
        _ => false,
    }
}

/// Where a MariaDB/MySQL server's files are: relative settings are
/// relative to the data directory, and an empty one is the data directory.
fn mariadb_paths(var: &dyn Fn(&str) -> Option<String>) -> Vec<(String, PathBuf)> {
    let data = PathBuf::from(var("datadir").unwrap_or_default());
    let mut paths = vec![("data directory".to_string(), data.clone())];
    let at = |v: String| {
        let p = PathBuf::from(v.trim());
        if p.is_absolute() {
            p
        } else {
            data.join(p)
        }
    };
    for (key, what) in [
        ("innodb_data_home_dir", "InnoDB system tablespace directory"),
        ("innodb_log_group_home_dir", "redo log directory"),
        ("innodb_undo_directory", "undo directory"),
        ("aria_log_dir_path", "Aria log directory"),
    ] {
        if let Some(v) = var(key).filter(|v| !v.trim().is_empty()) {
            paths.push((what.to_string(), at(v)));
        }
    }
    for (key, what) in [
        ("log_bin_basename", "binary log directory"),
        ("relay_log_basename", "relay log directory"),
    ] {
        if let Some(v) = var(key).filter(|v| !v.trim().is_empty() && v != "NULL") {
            let p = at(v);
            paths.push((what.to_string(), p.parent().map(PathBuf::from).unwrap_or(p)));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_follows_the_tables_and_the_version() {
        let v = "10.11.6-MariaDB-0+deb12u1";
        assert_eq!(choose(v, 0, false, "1").0, Method::NoLock);
        assert_eq!(choose(v, 2, false, "1").0, Method::BackupStage);
        assert_eq!(choose(v, 0, true, "1").0, Method::BackupStage);
        assert_eq!(choose(v, 0, false, "0").0, Method::BackupStage);
        assert_eq!(choose("10.3.39-MariaDB", 1, false, "1").0, Method::ReadLock);
        assert_eq!(choose("8.0.36", 1, false, "1").0, Method::ReadLock);
        assert_eq!(
            choose("10.4.1-MariaDB", 1, false, "1").0,
            Method::BackupStage
        );
    }

    #[test]
    fn a_server_round_trips_through_its_lines() {
        let s = Server {
            version: "15.8 (Debian 15.8-0+deb12u1)".into(),
            method: Method::Checkpoint,
            why: "crash-safe\twhen frozen".into(),
            paths: vec![("data directory".into(), PathBuf::from("/srv/pg data"))],
        };
        let back = Server::from_lines(&s.to_lines()).unwrap();
        assert_eq!(back.version, s.version);
        assert_eq!(back.method, Method::Checkpoint);
        assert_eq!(back.paths, s.paths);
        assert!(Server::from_lines("garbage").is_none());
    }

    #[test]
    fn never_read_only() {
        for m in [
            Method::Checkpoint,
            Method::NoLock,
            Method::BackupStage,
            Method::ReadLock,
        ] {
            let all = format!("{} {}", m.pre_sql(5, 600), m.release_sql()).to_ascii_lowercase();
            assert!(!all.contains("read_only"), "{all}");
        }
    }

    #[test]
    fn relative_paths_are_under_the_data_directory() {
        let vars = [
            ("datadir", "/srv/db/"),
            ("innodb_log_group_home_dir", "./"),
            ("log_bin_basename", "/logs/bin/mysql-bin"),
        ];
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let p = mariadb_paths(&var);
        assert!(p.iter().any(|(_, p)| p == &PathBuf::from("/srv/db/./")));
        assert!(p.iter().any(|(_, p)| p == &PathBuf::from("/logs/bin")));
    }
}
