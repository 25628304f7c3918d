//! Which script of an application runs: the pre-script or the post-script.

use crate::error::ErrorCode;

/// Which script: decides the error-table rows and the environment's phase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
    pub fn not_found(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptNotFound,
            Phase::Post => ErrorCode::PostScriptNotFound,
        }
    }
    pub fn permission(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::InsufficientPermissionforPreScript,
            Phase::Post => ErrorCode::InsufficientPermissionforPostScript,
        }
    }
    pub fn execution_failed(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptExecutionFailed,
            Phase::Post => ErrorCode::PostScriptExecutionFailed,
        }
    }
    pub fn timeout(self) -> ErrorCode {
        match self {
            Phase::Pre => ErrorCode::PreScriptTimeout,
            Phase::Post => ErrorCode::PostScriptTimeout,
        }
    }
}
