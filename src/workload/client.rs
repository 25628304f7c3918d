//! The client's command line, environment and user (SPEC.md §3.2): the
//! distribution's `psql` or `mariadb`/`mysql`, reaching the server by its
//! socket or host and port, as the database's OS user (peer
//! authentication) or with a root-only option file or passfile.
//!
//! The credentials channel: an option file or passfile is checked (root,
//! 0600) and copied into a private directory of the run directory owned by
//! the client's user, and a workload.conf password is written only there;
//! the client is given the path (`--defaults-extra-file=`, `PGPASSFILE`),
//! never the password, and the copy is removed once the session is open.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::workload::{Engine, Workload};
use crate::integrity::{CheckedFile, FileRole};

/// The fixed PATH of the client (that of every script, SPEC §7).
const CLIENT_PATH: &str = crate::sandbox::env::SCRIPT_PATH;

/// Why the client cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("osUser \"{0}\" is not a user of this system")]
    NoSuchUser(String),
    #[error("option file {0}: {1}")]
    OptionFile(PathBuf, String),
    #[error("cannot write the private credentials copy in {0}: {1}")]
    Private(PathBuf, std::io::Error),
}

/// A prepared client: its command, and the private copy of the
/// credentials to remove once the session is open.
pub struct Prepared {
    pub cmd: Command,
    pub private: Option<PathBuf>,
}

impl Prepared {
    /// Removes the private copy of the credentials (the session is open).
    pub fn forget_credentials(&mut self) {
        if let Some(p) = self.private.take() {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The client for `w`; `private` is a directory for the credentials copy
/// (created 0700, owned by the client's user).
pub fn prepare(w: &Workload, private: &Path) -> Result<Prepared, ClientError> {
    let c = &w.connection;
    let user = match &c.os_user {
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| ClientError::NoSuchUser(name.clone()))?,
        ),
        None => None,
    };
    let (uid, gid) = user
        .as_ref()
        .map_or((0, 0), |u| (u.uid.as_raw(), u.gid.as_raw()));
    let secret = credentials(w, private, uid, gid)?;
    let program = c
        .client
        .clone()
        .unwrap_or_else(|| PathBuf::from(w.engine.default_client()));
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", CLIENT_PATH)
        .env("LANG", "C")
        .current_dir("/");
    if let Some(u) = &user {
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", &u.dir)
            .env("USER", &u.name);
    }
    match w.engine {
        Engine::Postgres => postgres_args(&mut cmd, w, secret.as_deref()),
        Engine::Mariadb | Engine::Mysql => mariadb_args(&mut cmd, w, secret.as_deref()),
    }
    Ok(Prepared {
        cmd,
        private: secret,
    })
}

/// The private copy of the credentials, when there are any: the option
/// file's content (checked: root-owned, 0600), or a workload.conf password
/// in the client's own format.
fn credentials(
    w: &Workload,
    dir: &Path,
    uid: u32,
    gid: u32,
) -> Result<Option<PathBuf>, ClientError> {
    let c = &w.connection;
    let content = match (&c.option_file, &c.password) {
        (Some(f), _) => {
            let bad = |e: String| ClientError::OptionFile(f.clone(), e);
            let file = CheckedFile::open(f, FileRole::Config).map_err(|e| bad(e.to_string()))?;
            file.read_limited(64 * 1024)
                .map_err(|e| bad(e.to_string()))?
        }
        (None, Some(p)) => match w.engine {
            // .pgpass: host:port:database:user:password, `:` and `\` escaped.
            Engine::Postgres => format!(
                "*:*:*:*:{}\n",
                p.0.replace('\\', "\\\\").replace(':', "\\:")
            )
            .into_bytes(),
            Engine::Mariadb | Engine::Mysql => format!(
                "[client]\npassword=\"{}\"\n",
                p.0.replace('\\', "\\\\").replace('"', "\\\"")
            )
            .into_bytes(),
        },
        (None, None) => return Ok(None),
    };
    let private = |e| ClientError::Private(dir.to_path_buf(), e);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(private)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(private)?;
    let path = dir.join("credentials");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(private)?;
    f.write_all(&content).map_err(private)?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(private)?;
    Ok(Some(path))
}

fn postgres_args(cmd: &mut Command, w: &Workload, passfile: Option<&Path>) {
    let c = &w.connection;
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]);
    if let Some(h) = c
        .socket
        .as_ref()
        .map(|s| s.display().to_string())
        .or(c.host.clone())
    {
        cmd.arg("-h").arg(h);
    }
    if let Some(p) = c.port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = &c.user {
        cmd.arg("-U").arg(u);
    }
    cmd.arg("-d")
        .arg(c.database.as_deref().unwrap_or("postgres"));
    if let Some(f) = passfile {
        cmd.env("PGPASSFILE", f);
    }
}

fn mariadb_args(cmd: &mut Command, w: &Workload, option_file: Option<&Path>) {
    let c = &w.connection;
    // Must come first: the client reads it before any other option.
    match option_file {
        Some(f) => cmd.arg(format!("--defaults-extra-file={}", f.display())),
        None => cmd.arg("--no-defaults"),
    };
    cmd.args(["--batch", "--skip-column-names", "--unbuffered"]);
    if let Some(s) = &c.socket {
        cmd.arg(format!("--socket={}", s.display()));
    }
    if let Some(h) = &c.host {
        cmd.arg(format!("--host={h}"));
    }
    if let Some(p) = c.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(u) = &c.user {
        cmd.arg(format!("--user={u}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workload::{Connection, Secret};

    #[test]
    fn a_password_is_never_on_the_command_line_or_in_the_environment() {
        let dir = std::env::temp_dir().join(format!("quiesce-client-{}", std::process::id()));
        for engine in [Engine::Postgres, Engine::Mariadb] {
            let w = Workload {
                engine,
                connection: Connection {
                    user: Some("app".into()),
                    password: Some(Secret("s3cr:et\"x".into())),
                    ..Connection::default()
                },
            };
            let p = prepare(&w, &dir).unwrap();
            let argv: Vec<String> = p
                .cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let env: Vec<String> = p
                .cmd
                .get_envs()
                .map(|(k, v)| format!("{k:?}={v:?}"))
                .collect();
            assert!(!argv.join(" ").contains("s3cr"), "{argv:?}");
            assert!(!env.join(" ").contains("s3cr"), "{env:?}");
            let file = p.private.clone().unwrap();
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains("s3cr"), "{text}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
