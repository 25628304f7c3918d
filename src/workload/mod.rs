//! Built-in workloads (SPEC.md §3.2): PostgreSQL and MariaDB/MySQL paused
//! by the method of their own documentation, with no operator script.
//!
//! A workload application's pre and post "scripts" are quiesce itself
//! (`quiesce __workload pre|post`, see [`helper`]), run by the job like
//! any script — supervised, sandboxed, timed out, with the post-script
//! guarantee — so that what the job knows about scripts holds here too.
//! The pre phase starts a holder process that owns the client's session
//! ([`session`]); a lock the method takes ([`method`]) lives in that
//! session, and the post phase asks the holder, over a socket in the run
//! directory, to release it on that same session. A runner that dies
//! takes the holder with it (its sentinel ends the pre-script's tree):
//! the session closes and the server releases the lock.
//!
//! `coverage` answers whether every file of the database is on a
//! filesystem frozen in the window.

pub mod client;
pub mod coverage;
pub mod helper;
pub mod method;
pub mod session;

use crate::error::ErrorCode;

/// The first argument that makes the binary a workload helper.
pub const HELPER_ARG: &str = "__workload";

/// How a workload phase failed, as the helper's exit status: the job maps
/// it back to its row of the error table ([`error_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server could not be reached.
    Connection = 10,
    /// The server refused the credentials, or there were none to give.
    Credentials = 11,
    /// A statement of the method failed.
    Quiescing = 12,
    /// The method did not complete in time.
    QuiescingTimeout = 13,
    /// The workload's settings could not be read.
    Config = 14,
    /// The post phase could not release what the pre phase held, or the
    /// held session had already ended.
    Release = 15,
}

impl Failure {
    pub fn exit(self) -> u8 {
        self as u8
    }

    /// A client that ended before the session was usable: its message says
    /// whether it was refused credentials or could not connect.
    pub fn of_connect(stderr: &str) -> Failure {
        let s = stderr.to_ascii_lowercase();
        // MariaDB 1045/1698 "Access denied for user"; libpq's "password
        // authentication failed", "Peer authentication failed", "no
        // password supplied", "role … does not exist". A privilege a
        // statement lacks (1227 "Access denied; you need …") is not this.
        let refused = [
            "access denied for user",
            "authentication failed",
            "no password supplied",
            "role \"",
        ];
        let privilege = ["error 1227", "permission denied", "must be superuser"];
        if refused.iter().any(|r| s.contains(r)) {
            Failure::Credentials
        } else if privilege.iter().any(|r| s.contains(r)) {
            Failure::Quiescing
        } else {
            Failure::Connection
        }
    }
}

/// The error-table row of a workload helper's exit status, when it is
/// one of [`Failure`]'s.
pub fn error_code(exit: i32) -> Option<ErrorCode> {
    Some(match exit {
        10 => ErrorCode::WorkloadConnectionError,
        11 => ErrorCode::WorkloadNoCredentials,
        12 => ErrorCode::WorkloadQuiescingError,
        13 => ErrorCode::WorkloadQuiescingTimeout,
        14 => ErrorCode::WorkloadConfigError,
        15 => ErrorCode::WorkloadPostFailed,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_privileges_and_connections_are_told_apart() {
        let c = |s| Failure::of_connect(s);
        assert_eq!(
            c("ERROR 1045 (28000): Access denied for user 'bk'@'localhost' (using password: YES)"),
            Failure::Credentials
        );
        assert_eq!(
            c("psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: FATAL:  Peer authentication failed for user \"app\""),
            Failure::Credentials
        );
        assert_eq!(
            c("ERROR 1227 (42000) at line 5: Access denied; you need (at least one of) the SUPER privilege(s)"),
            Failure::Quiescing
        );
        assert_eq!(
            c("ERROR 2002 (HY000): Can't connect to local server through socket '/x' (2)"),
            Failure::Connection
        );
        assert_eq!(
            error_code(Failure::Release.exit() as i32),
            Some(ErrorCode::WorkloadPostFailed)
        );
        assert_eq!(error_code(1), None);
    }
}
