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
        let refused = [
            "access denied",
            "authentication failed",
            "password",
            "error 1045",
            "error 1698",
            "role \"",
        ];
        if refused.iter().any(|r| s.contains(r)) {
            Failure::Credentials
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
