//! The sandbox around the operator's pre/post scripts and around the thaw
//! watchdog (SPEC.md §8, §6.4 point 4).
//!
//! Policy is reviewed data (`policies/*.json`, Firecracker-style): every rule
//! carries a `comment` saying why it is there, and a policy that fails to parse,
//! validate or compile is refused as a whole — nothing runs without its sandbox
//! (the caller maps [`PolicyError`] to `IncorrectPluginhostFile`, 304).
//!
//! Two phases, because the child side runs between `fork` and `exec`:
//! - **prepare** (in the runner, before any fork): parse, validate, compile the
//!   seccomp JSON to BPF for this architecture, resolve capability numbers and
//!   rlimit values — every allocation happens here;
//! - **apply** (in the forked child): raw, async-signal-safe syscalls over the
//!   prepared data only, in a fixed order — bounding-set drops, inheritable and
//!   ambient lowering, rlimits, `no_new_privs`, seccomp last (once the filter is
//!   in, `prctl`/`capset` could themselves be filtered).
//!
//! One module per kernel feature, like youki's libcontainer: [`caps`],
//! [`rlimits`], [`seccomp`]; [`policy`] holds the file format, [`env`](mod@env) the
//! environment a script starts with, and [`inspect`] the capability
//! inspection and the `quiesce audit` description.

pub mod caps;
pub mod confine;
pub mod env;
pub mod guards;
pub mod inspect;
pub mod policy;
pub mod rlimits;
pub mod seccomp;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub use inspect::{describe, ProcessSandboxState, RunnerCaps, SandboxDescription, StatusError};
pub use policy::{CapabilityDrop, Commented, ScriptPolicy, WatchdogPolicy};
pub use rlimits::{Limit, RlimitResource, RlimitRule};

/// A policy file that cannot be used. Every variant names the file; the ones
/// about content name the field (a dotted path such as
/// `seccomp.script.filter[3].comment`), or — for JSON the parser rejects — the
/// parser's message names the field with its line and column.
///
/// All of them fail closed: the caller reports `IncorrectPluginhostFile` (304)
/// and runs nothing.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("sandbox policy {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sandbox policy {}: {size} bytes, larger than the {limit}-byte limit", path.display())]
    TooLarge {
        path: PathBuf,
        size: usize,
        limit: usize,
    },
    #[error("sandbox policy {}: malformed: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("sandbox policy {}: field `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("sandbox policy {}: field `{field}`: seccomp filter does not compile for {arch}: {reason}", path.display())]
    SeccompCompile {
        path: PathBuf,
        field: String,
        arch: &'static str,
        reason: String,
    },
    #[error("sandbox policy {}: this machine's architecture ({arch}) has no seccomp compiler; refusing to run unsandboxed", path.display())]
    UnsupportedArch { path: PathBuf, arch: &'static str },
}

impl PolicyError {
    /// A policy refused for one field: names the file, the field and the rule.
    pub(crate) fn invalid(
        origin: &Path,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Invalid {
            path: origin.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Policy is reviewed data: every rule must say why it is there.
    pub(crate) fn require_comment(
        origin: &Path,
        field: String,
        comment: &str,
    ) -> Result<(), PolicyError> {
        if comment.trim().is_empty() {
            return Err(PolicyError::invalid(
                origin,
                field,
                "empty comment: every rule must say why it is there",
            ));
        }
        Ok(())
    }

    /// The policy file (or the built-in policy's name) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PolicyError::Read { path, .. }
            | PolicyError::TooLarge { path, .. }
            | PolicyError::Malformed { path, .. }
            | PolicyError::Invalid { path, .. }
            | PolicyError::SeccompCompile { path, .. }
            | PolicyError::UnsupportedArch { path, .. } => path,
        }
    }

    /// The offending field as a dotted path, when the error is about one
    /// field. For [`PolicyError::Malformed`] the field is in the message.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } | PolicyError::SeccompCompile { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

/// Which step of applying the sandbox in a child failed. `Copy` and free of
/// heap data so it can be built between fork and exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxStep {
    /// `prctl(PR_CAPBSET_DROP, cap)`.
    BoundingDrop(u8),
    /// `capget`/`capset` lowering the dropped capabilities in the inheritable set.
    Inheritable,
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap)`.
    AmbientLower(u8),
    /// `getrlimit`/`setrlimit` of one resource.
    Rlimit(RlimitResource),
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    NoNewPrivs,
    /// The script's own mount namespace: the cgroup tree read-only, the
    /// guards' `/proc/PID` masked.
    Confine,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` of the guard filter.
    GuardFilter,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`.
    Seccomp,
}

impl fmt::Display for SandboxStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxStep::BoundingDrop(cap) => {
                write!(f, "drop capability {cap} from the bounding set")
            }
            SandboxStep::Inheritable => f.write_str("lower the inheritable capability set"),
            SandboxStep::AmbientLower(cap) => write!(f, "lower ambient capability {cap}"),
            SandboxStep::Rlimit(r) => write!(f, "set rlimit {}", r.name()),
            SandboxStep::NoNewPrivs => f.write_str("set no_new_privs"),
            SandboxStep::Confine => f.write_str("set up the script's mount namespace"),
            SandboxStep::GuardFilter => f.write_str("install the guard filter"),
            SandboxStep::Seccomp => f.write_str("install the seccomp filter"),
        }
    }
}

/// A sandbox step that failed in the child. The child must then not exec:
/// fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sandbox: cannot {step}: {errno}")]
pub struct ApplyError {
    pub step: SandboxStep,
    pub errno: Errno,
}

impl From<ApplyError> for Errno {
    /// For hooks typed `Fn() -> Result<(), Errno>` (the supervisor's).
    fn from(e: ApplyError) -> Errno {
        e.errno
    }
}

impl From<ApplyError> for io::Error {
    /// For `CommandExt::pre_exec`: an OS error carries no heap data, so this
    /// conversion does not allocate.
    fn from(e: ApplyError) -> io::Error {
        io::Error::from_raw_os_error(e.errno as i32)
    }
}

/// The script sandbox, compiled and resolved before the fork.
#[derive(Debug, Clone)]
pub struct PreparedSandbox {
    capabilities: caps::PreparedCapabilityDrop,
    rlimits: Vec<rlimits::PreparedRlimit>,
    no_new_privs: bool,
    seccomp: seccomp::PreparedProgram,
    /// The script's mount namespace (SPEC §8: the cgroup tree read-only).
    pub confinement: confine::PreparedConfinement,
}

impl PreparedSandbox {
    /// Compiles and resolves everything `apply_in_child` needs. Call it before
    /// forking; the result can be shared by every attempt of a phase.
    pub fn prepare(policy: &ScriptPolicy) -> Result<PreparedSandbox, PolicyError> {
        Ok(PreparedSandbox {
            capabilities: caps::PreparedCapabilityDrop::new(&policy.capabilities_drop),
            rlimits: policy
                .rlimits
                .iter()
                .map(rlimits::PreparedRlimit::new)
                .collect(),
            no_new_privs: policy.no_new_privs.value,
            seccomp: seccomp::PreparedProgram::compile_native(
                &policy.origin,
                policy::SCRIPT_FILTER_NAME,
                &policy.seccomp,
            )?,
            confinement: confine::PreparedConfinement::prepare(
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            ),
        })
    }

    /// Applies the sandbox to the calling process. Only for a forked child
    /// right before `exec`: it is irreversible, and the seccomp filter is
    /// inherited by everything the process starts.
    ///
    /// Order: bounding-set drops, inheritable/ambient lowering, rlimits,
    /// `no_new_privs`, then with `guards` the script's mount namespace and
    /// the guard filter (which refuses `mount`: the namespace is set up
    /// before it), the policy's seccomp filter last (an operator's
    /// allow-list might not allow the calls of the steps before it). The
    /// first failure stops and is returned; the caller must then `_exit`
    /// without exec.
    ///
    /// The dropped capabilities leave the effective and permitted sets at the
    /// `execve` (root's new permitted set is masked by the bounding set), not
    /// before — so this process still holds them until it execs.
    pub fn apply_in_child(&self, guards: Option<&guards::GuardFilter>) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — runs between fork and exec. Everything
        // below reads prepared data and makes raw syscalls.
        self.capabilities.apply()?;
        for limit in &self.rlimits {
            limit.apply()?;
        }
        if self.no_new_privs {
            set_no_new_privs()?;
        }
        if let Some(g) = guards {
            self.confinement.apply(&g.masks)?;
            g.install().map_err(|e| ApplyError {
                step: SandboxStep::GuardFilter,
                errno: e.errno,
            })?;
        }
        self.seccomp.install()
    }

    /// Number of BPF instructions in the prepared filter (for the audit trail).
    pub fn seccomp_instructions(&self) -> usize {
        self.seccomp.len()
    }

    /// Capabilities the policy drops that this kernel does not know: they are
    /// skipped (a kernel cannot grant what it does not have) and reported.
    pub fn unsupported_capabilities(&self) -> &[::caps::Capability] {
        self.capabilities.unsupported()
    }
}

/// The watchdog's allow-list filter, compiled before the fork.
#[derive(Debug, Clone)]
pub struct PreparedFilter {
    seccomp: seccomp::PreparedProgram,
}

impl PreparedFilter {
    /// Compiles the watchdog's filter. Call before forking the watchdog.
    pub fn prepare(policy: &WatchdogPolicy) -> Result<PreparedFilter, PolicyError> {
        Ok(PreparedFilter {
            seccomp: seccomp::PreparedProgram::compile_native(
                &policy.origin,
                policy::WATCHDOG_FILTER_NAME,
                &policy.seccomp,
            )?,
        })
    }

    /// Sets `no_new_privs` and installs the filter on the calling process.
    /// Only for the forked watchdog; irreversible.
    pub fn apply(&self) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — the watchdog is forked from a runner that
        // may have other threads; raw syscalls over prepared data only.
        set_no_new_privs()?;
        self.seccomp.install()
    }

    /// Number of BPF instructions in the prepared filter.
    pub fn seccomp_instructions(&self) -> usize {
        self.seccomp.len()
    }
}

fn set_no_new_privs() -> Result<(), ApplyError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only (man 2 prctl:
    // arg2 = 1, arg3..arg5 must be 0); no memory is passed.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(ApplyError {
            step: SandboxStep::NoNewPrivs,
            errno: Errno::last(),
        });
    }
    Ok(())
}
