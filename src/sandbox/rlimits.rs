//! Resource limits for scripts (SPEC.md §8: `core` 0, `nofile`).
//!
//! A policy limit never raises the runner's own hard limit: applying takes
//! `min(policy, current hard)`. A policy narrows what a script gets; it is not
//! a way to grant more than the runner has (and raising a hard limit would
//! need `CAP_SYS_RESOURCE`, which containers often lack).

use std::fmt;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ApplyError, SandboxStep};

/// A resource limit for scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlimitRule {
    pub resource: RlimitResource,
    pub soft: Limit,
    pub hard: Limit,
    pub comment: String,
}

/// The resources a policy may limit. `nproc` and `rss` are deliberately
/// absent (see [`RlimitResource::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RlimitResource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl RlimitResource {
    pub const ALL: [RlimitResource; 14] = [
        RlimitResource::As,
        RlimitResource::Core,
        RlimitResource::Cpu,
        RlimitResource::Data,
        RlimitResource::Fsize,
        RlimitResource::Locks,
        RlimitResource::Memlock,
        RlimitResource::Msgqueue,
        RlimitResource::Nice,
        RlimitResource::Nofile,
        RlimitResource::Rtprio,
        RlimitResource::Rttime,
        RlimitResource::Sigpending,
        RlimitResource::Stack,
    ];

    /// The name used in policies, as in `prlimit(1)` without `RLIMIT_`.
    pub fn name(self) -> &'static str {
        match self {
            RlimitResource::As => "as",
            RlimitResource::Core => "core",
            RlimitResource::Cpu => "cpu",
            RlimitResource::Data => "data",
            RlimitResource::Fsize => "fsize",
            RlimitResource::Locks => "locks",
            RlimitResource::Memlock => "memlock",
            RlimitResource::Msgqueue => "msgqueue",
            RlimitResource::Nice => "nice",
            RlimitResource::Nofile => "nofile",
            RlimitResource::Rtprio => "rtprio",
            RlimitResource::Rttime => "rttime",
            RlimitResource::Sigpending => "sigpending",
            RlimitResource::Stack => "stack",
        }
    }

    pub fn from_name(name: &str) -> Option<RlimitResource> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Why a known resource name is not accepted, if it is one of those.
    pub fn refusal(name: &str) -> Option<&'static str> {
        match name {
            "nproc" => Some(
                "RLIMIT_NPROC counts every process of the user, and scripts run as uid 0: a limit would make them fail depending on what else root runs (and root with CAP_SYS_ADMIN ignores it); the script's cgroup pids.max bounds fork bombs instead",
            ),
            "rss" => Some("RLIMIT_RSS has had no effect since Linux 2.6; use `as` or the cgroup's memory.max"),
            _ => None,
        }
    }

    fn to_nix(self) -> Resource {
        match self {
            RlimitResource::As => Resource::RLIMIT_AS,
            RlimitResource::Core => Resource::RLIMIT_CORE,
            RlimitResource::Cpu => Resource::RLIMIT_CPU,
            RlimitResource::Data => Resource::RLIMIT_DATA,
            RlimitResource::Fsize => Resource::RLIMIT_FSIZE,
            RlimitResource::Locks => Resource::RLIMIT_LOCKS,
            RlimitResource::Memlock => Resource::RLIMIT_MEMLOCK,
            RlimitResource::Msgqueue => Resource::RLIMIT_MSGQUEUE,
            RlimitResource::Nice => Resource::RLIMIT_NICE,
            RlimitResource::Nofile => Resource::RLIMIT_NOFILE,
            RlimitResource::Rtprio => Resource::RLIMIT_RTPRIO,
            RlimitResource::Rttime => Resource::RLIMIT_RTTIME,
            RlimitResource::Sigpending => Resource::RLIMIT_SIGPENDING,
            RlimitResource::Stack => Resource::RLIMIT_STACK,
        }
    }
}

impl fmt::Display for RlimitResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit value: a number, or `"unlimited"` (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    Value(u64),
    Unlimited,
}

impl Limit {
    fn raw(self) -> libc::rlim_t {
        match self {
            Limit::Value(v) => v as libc::rlim_t,
            Limit::Unlimited => libc::RLIM_INFINITY,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Value(v) => s.serialize_u64(*v),
            Limit::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        struct LimitVisitor;
        impl Visitor<'_> for LimitVisitor {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                if v as libc::rlim_t == libc::RLIM_INFINITY {
                    return Ok(Limit::Unlimited);
                }
                Ok(Limit::Value(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Limit, E> {
                if v == "unlimited" {
                    Ok(Limit::Unlimited)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(LimitVisitor)
    }
}

/// One limit, ready to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreparedRlimit {
    resource: RlimitResource,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
}

impl PreparedRlimit {
    pub(crate) fn new(rule: &RlimitRule) -> PreparedRlimit {
        PreparedRlimit {
            resource: rule.resource,
            soft: rule.soft.raw(),
            hard: rule.hard.raw(),
        }
    }

    pub(crate) fn apply(&self) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — runs between fork and exec. nix's
        // getrlimit/setrlimit are direct libc wrappers over stack structs.
        let fail = |errno: Errno| ApplyError {
            step: SandboxStep::Rlimit(self.resource),
            errno,
        };
        let resource = self.resource.to_nix();
        let (_, current_hard) = getrlimit(resource).map_err(fail)?;
        // Never raise the hard limit (RLIM_INFINITY is the largest value).
        let hard = self.hard.min(current_hard);
        let soft = self.soft.min(hard);
        setrlimit(resource, soft, hard).map_err(fail)
    }
}
