//! The policy files of `policies/`: parsed with serde, validated, refused as
//! a whole on any doubt.
//!
//! Shape of the script policy (`policies/script-policy.json`):
//!
//! ```json
//! {
//!   "comment": "what this policy is for",
//!   "version": 1,
//!   "capabilities_drop": [{"capability": "CAP_SYS_MODULE", "comment": "why"}],
//!   "no_new_privs": {"value": true, "comment": "why"},
//!   "rlimits": [{"resource": "core", "soft": 0, "hard": 0, "comment": "why"}],
//!   "kill_grace_seconds": {"value": 5, "comment": "why"},
//!   "output_cap_bytes": {"value": 65536, "comment": "why"},
//!   "seccomp": {"script": {"comment": "why", "default_action": "allow",
//!                          "filter_action": {"errno": 1}, "filter": [ … ]}}
//! }
//! ```
//!
//! The watchdog policy (`policies/watchdog-policy.json`) has `comment`,
//! `version` and `seccomp: {"watchdog": {…}}`, which must be an allow-list.
//! See [`super::seccomp`] for the filter format.
//!
//! Unknown fields, duplicate fields, a missing or empty `comment`, unknown
//! capability, rlimit or syscall names and out-of-range numbers are all
//! errors that name the file and the field.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ::caps::Capability;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rlimits::{Limit, RlimitResource, RlimitRule};
use super::seccomp::{self, CmpOp, FilterAction, FilterKind, SeccompFilterDoc};
use super::PolicyError;

/// The policy format this build understands.
pub const POLICY_VERSION: u32 = 1;
/// A policy file larger than this is refused before parsing.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Name of the filter in the script policy's `seccomp` section.
pub const SCRIPT_FILTER_NAME: &str = "script";
/// Name of the filter in the watchdog policy's `seccomp` section.
pub const WATCHDOG_FILTER_NAME: &str = "watchdog";

/// The shipped script policy, reviewed with the code.
pub const BUILTIN_SCRIPT_POLICY: &str = include_str!("../../policies/script-policy.json");
/// The shipped watchdog allow-list.
pub const BUILTIN_WATCHDOG_POLICY: &str = include_str!("../../policies/watchdog-policy.json");
/// How the built-in script policy is named in errors and audits.
pub const BUILTIN_SCRIPT_ORIGIN: &str = "(built-in) policies/script-policy.json";
/// How the built-in watchdog policy is named in errors and audits.
pub const BUILTIN_WATCHDOG_ORIGIN: &str = "(built-in) policies/watchdog-policy.json";

/// `FIFREEZE` = `_IOWR('X', 119, int)` (linux/fs.h).
pub const FIFREEZE: u64 = 0xC004_5877;
/// `FITHAW` = `_IOWR('X', 120, int)` (linux/fs.h).
pub const FITHAW: u64 = 0xC004_5878;

/// Bounds for the scalar settings.
const KILL_GRACE_RANGE: std::ops::RangeInclusive<u64> = 1..=60;
const OUTPUT_CAP_RANGE: std::ops::RangeInclusive<u64> = 1024..=16 * 1024 * 1024;
/// Below this a script cannot reliably run a shell pipeline; most likely a typo.
const NOFILE_MIN_SOFT: u64 = 64;

/// A setting with the reason it is set that way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commented<T> {
    pub value: T,
    pub comment: String,
}

/// A capability removed from the scripts' bounding set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityDrop {
    pub capability: Capability,
    pub comment: String,
}

/// The validated sandbox for pre/post scripts.
#[derive(Debug, Clone)]
pub struct ScriptPolicy {
    /// The file it came from, or [`BUILTIN_SCRIPT_ORIGIN`].
    pub origin: PathBuf,
    /// SHA-256 of the policy bytes, hex, for the audit trail.
    pub sha256: String,
    pub comment: String,
    pub capabilities_drop: Vec<CapabilityDrop>,
    pub no_new_privs: Commented<bool>,
    pub rlimits: Vec<RlimitRule>,
    pub kill_grace_seconds: Commented<u64>,
    pub output_cap_bytes: Commented<u64>,
    /// The `seccomp.script` filter.
    pub seccomp: SeccompFilterDoc,
}

/// The validated watchdog allow-list.
#[derive(Debug, Clone)]
pub struct WatchdogPolicy {
    pub origin: PathBuf,
    pub sha256: String,
    pub comment: String,
    /// The `seccomp.watchdog` filter.
    pub seccomp: SeccompFilterDoc,
}

// ---- file shapes -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptPolicyDoc {
    comment: String,
    version: u32,
    capabilities_drop: Vec<CapabilityDropDoc>,
    no_new_privs: Commented<bool>,
    rlimits: Vec<RlimitDoc>,
    kill_grace_seconds: Commented<u64>,
    output_cap_bytes: Commented<u64>,
    seccomp: ScriptSeccompDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityDropDoc {
    capability: String,
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RlimitDoc {
    resource: String,
    soft: Limit,
    hard: Limit,
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptSeccompDoc {
    script: SeccompFilterDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchdogPolicyDoc {
    comment: String,
    version: u32,
    seccomp: WatchdogSeccompDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchdogSeccompDoc {
    watchdog: SeccompFilterDoc,
}

// ---- helpers ----------------------------------------------------------------

/// `capabilities_drop`: known names, each once, each with its comment.
fn capability_drops(
    origin: &Path,
    docs: Vec<CapabilityDropDoc>,
) -> Result<Vec<CapabilityDrop>, PolicyError> {
    let mut capabilities_drop = Vec::with_capacity(docs.len());
    let mut seen_caps = HashSet::new();
    for (i, d) in docs.into_iter().enumerate() {
        let field = format!("capabilities_drop[{i}]");
        PolicyError::require_comment(origin, format!("{field}.comment"), &d.comment)?;
        let capability = Capability::from_str(&d.capability).map_err(|_| {
            PolicyError::invalid(
                origin,
                format!("{field}.capability"),
                format!(
                    "unknown capability {:?} (names are spelled like CAP_SYS_ADMIN)",
                    d.capability
                ),
            )
        })?;
        if !seen_caps.insert(capability) {
            return Err(PolicyError::invalid(
                origin,
                format!("{field}.capability"),
                format!("{capability} is listed twice"),
            ));
        }
        capabilities_drop.push(CapabilityDrop {
            capability,
            comment: d.comment,
        });
    }
    Ok(capabilities_drop)
}

/// `rlimits`: known resources, each once, soft within hard, enough
/// descriptors to run a pipeline, each with its comment.
fn rlimit_rules(origin: &Path, docs: Vec<RlimitDoc>) -> Result<Vec<RlimitRule>, PolicyError> {
    let mut rlimits = Vec::with_capacity(docs.len());
    let mut seen_res = HashSet::new();
    for (i, r) in docs.into_iter().enumerate() {
        let field = format!("rlimits[{i}]");
        PolicyError::require_comment(origin, format!("{field}.comment"), &r.comment)?;
        let resource = match RlimitResource::from_name(&r.resource) {
            Some(res) => res,
            None => {
                let reason = match RlimitResource::refusal(&r.resource) {
                    Some(why) => format!("{:?} is not accepted: {why}", r.resource),
                    None => format!(
                        "unknown resource {:?} (known: {})",
                        r.resource,
                        RlimitResource::ALL.map(|r| r.name()).join(", ")
                    ),
                };
                return Err(PolicyError::invalid(
                    origin,
                    format!("{field}.resource"),
                    reason,
                ));
            }
        };
        if !seen_res.insert(resource) {
            return Err(PolicyError::invalid(
                origin,
                format!("{field}.resource"),
                format!("{resource} is listed twice"),
            ));
        }
        if r.soft > r.hard {
            return Err(PolicyError::invalid(
                origin,
                format!("{field}.soft"),
                format!("soft limit {} is above hard limit {}", r.soft, r.hard),
            ));
        }
        if resource == RlimitResource::Nofile {
            if let Limit::Value(v) = r.soft {
                if v < NOFILE_MIN_SOFT {
                    return Err(PolicyError::invalid(
                        origin,
                        format!("{field}.soft"),
                        format!("nofile {v} is below {NOFILE_MIN_SOFT}: scripts could not open enough descriptors to run a pipeline"),
                    ));
                }
            }
        }
        rlimits.push(RlimitRule {
            resource,
            soft: r.soft,
            hard: r.hard,
            comment: r.comment,
        });
    }
    Ok(rlimits)
}

fn parse<T: for<'de> Deserialize<'de>>(origin: &Path, bytes: &[u8]) -> Result<T, PolicyError> {
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            path: origin.to_path_buf(),
            size: bytes.len(),
            limit: MAX_POLICY_BYTES,
        });
    }
    // serde's derive refuses duplicate and unknown fields; its message names
    // the field with line and column.
    serde_json::from_slice(bytes).map_err(|source| PolicyError::Malformed {
        path: origin.to_path_buf(),
        source,
    })
}

fn check_version(origin: &Path, version: u32) -> Result<(), PolicyError> {
    if version != POLICY_VERSION {
        return Err(PolicyError::invalid(
            origin,
            "version",
            format!(
                "version {version} is not understood by this quiesce (expects {POLICY_VERSION})"
            ),
        ));
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a policy file, bounded by [`MAX_POLICY_BYTES`]. This does no trust
/// check of its own: the runner reads installed policies through its
/// descriptor-checked open and calls `from_bytes`.
fn read_bounded(path: &Path) -> Result<Vec<u8>, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

// ---- the script policy ------------------------------------------------------

impl ScriptPolicy {
    /// The shipped policy. It is validated by the test suite, so an error
    /// here is a build defect; it is still returned, never unwrapped.
    pub fn builtin() -> Result<ScriptPolicy, PolicyError> {
        Self::from_bytes(
            Path::new(BUILTIN_SCRIPT_ORIGIN),
            BUILTIN_SCRIPT_POLICY.as_bytes(),
        )
    }

    /// Reads and validates an installed policy file. No trust check here:
    /// the runner reads installed policies through its descriptor-checked
    /// open (SPEC.md §4) and calls [`ScriptPolicy::from_bytes`].
    pub fn load(path: &Path) -> Result<ScriptPolicy, PolicyError> {
        let bytes = read_bounded(path)?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and validates policy bytes read from `origin`.
    pub fn from_bytes(origin: &Path, bytes: &[u8]) -> Result<ScriptPolicy, PolicyError> {
        let doc: ScriptPolicyDoc = parse(origin, bytes)?;
        check_version(origin, doc.version)?;
        PolicyError::require_comment(origin, "comment".into(), &doc.comment)?;

        let capabilities_drop = capability_drops(origin, doc.capabilities_drop)?;
        PolicyError::require_comment(
            origin,
            "no_new_privs.comment".into(),
            &doc.no_new_privs.comment,
        )?;

        let rlimits = rlimit_rules(origin, doc.rlimits)?;

        PolicyError::require_comment(
            origin,
            "kill_grace_seconds.comment".into(),
            &doc.kill_grace_seconds.comment,
        )?;
        if !KILL_GRACE_RANGE.contains(&doc.kill_grace_seconds.value) {
            return Err(PolicyError::invalid(
                origin,
                "kill_grace_seconds.value",
                format!(
                    "{} is outside {}..={} seconds",
                    doc.kill_grace_seconds.value,
                    KILL_GRACE_RANGE.start(),
                    KILL_GRACE_RANGE.end()
                ),
            ));
        }
        PolicyError::require_comment(
            origin,
            "output_cap_bytes.comment".into(),
            &doc.output_cap_bytes.comment,
        )?;
        if !OUTPUT_CAP_RANGE.contains(&doc.output_cap_bytes.value) {
            return Err(PolicyError::invalid(
                origin,
                "output_cap_bytes.value",
                format!(
                    "{} is outside {}..={} bytes",
                    doc.output_cap_bytes.value,
                    OUTPUT_CAP_RANGE.start(),
                    OUTPUT_CAP_RANGE.end()
                ),
            ));
        }

        seccomp::validate(
            origin,
            &format!("seccomp.{SCRIPT_FILTER_NAME}"),
            &doc.seccomp.script,
            FilterKind::Any,
        )?;

        Ok(ScriptPolicy {
            origin: origin.to_path_buf(),
            sha256: sha256_hex(bytes),
            comment: doc.comment,
            capabilities_drop,
            no_new_privs: doc.no_new_privs,
            rlimits,
            kill_grace_seconds: doc.kill_grace_seconds,
            output_cap_bytes: doc.output_cap_bytes,
            seccomp: doc.seccomp.script,
        })
    }

    /// The grace period between SIGTERM and SIGKILL of a timed-out tree.
    pub fn kill_grace(&self) -> Duration {
        Duration::from_secs(self.kill_grace_seconds.value)
    }

    /// Bytes kept from the head and from the tail of each output stream.
    pub fn output_cap(&self) -> usize {
        usize::try_from(self.output_cap_bytes.value).unwrap_or(usize::MAX)
    }

    /// Whether `capability` is dropped from the scripts' bounding set.
    pub fn drops(&self, capability: Capability) -> bool {
        self.capabilities_drop
            .iter()
            .any(|d| d.capability == capability)
    }

    /// Whether every call of `syscall` (any arguments) is refused on this
    /// architecture: an unconditional rule in a deny-list, or no rule in an
    /// allow-list.
    pub fn denies_syscall(&self, syscall: &str) -> bool {
        let f = &self.seccomp;
        let arch = std::env::consts::ARCH;
        let listed = f
            .filter
            .iter()
            .any(|r| r.syscall == syscall && r.args.is_none() && r.applies_to(arch));
        let any_rule = f
            .filter
            .iter()
            .any(|r| r.syscall == syscall && r.applies_to(arch));
        match (f.default_action, f.filter_action) {
            (FilterAction::Allow, deny) if deny != FilterAction::Allow => listed,
            (_, FilterAction::Allow) => !any_rule,
            _ => false,
        }
    }

    /// Whether `ioctl(_, request)` is refused: a deny-list rule on argument 1
    /// equal to `request` (compared as a dword, as the kernel reads it).
    pub fn denies_ioctl(&self, request: u64) -> bool {
        let f = &self.seccomp;
        if f.default_action != FilterAction::Allow {
            // An allow-list: refused unless some rule allows it.
            return !f.filter.iter().any(|r| r.syscall == "ioctl");
        }
        f.filter.iter().any(|r| {
            r.syscall == "ioctl"
                && r.args.as_ref().is_some_and(|args| {
                    args.len() == 1
                        && args[0].index == 1
                        && args[0].op == CmpOp::Eq
                        && args[0].val & 0xFFFF_FFFF == request & 0xFFFF_FFFF
                })
        })
    }

    /// What this policy leaves out of SPEC.md §8's defaults. An installed
    /// policy may be narrower than the shipped one; the caller warns about
    /// each gap (`check`, `audit`). Empty for the built-in policy.
    pub fn baseline_gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for cap in [
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SYS_BOOT,
            Capability::CAP_SYS_RAWIO,
            Capability::CAP_MAC_ADMIN,
            Capability::CAP_MAC_OVERRIDE,
            Capability::CAP_BPF,
            Capability::CAP_SYS_TIME,
            Capability::CAP_SYS_PTRACE,
        ] {
            if !self.drops(cap) {
                gaps.push(format!("{cap} is not dropped from the bounding set"));
            }
        }
        if !self.no_new_privs.value {
            gaps.push("no_new_privs is off".to_string());
        }
        for syscall in [
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapoff",
            "bpf",
            "ptrace",
            "process_vm_writev",
            "pidfd_getfd",
        ] {
            if !self.denies_syscall(syscall) {
                gaps.push(format!("syscall {syscall} is not denied"));
            }
        }
        for (name, request) in [("FIFREEZE", FIFREEZE), ("FITHAW", FITHAW)] {
            if !self.denies_ioctl(request) {
                gaps.push(format!("ioctl {name} is not denied"));
            }
        }
        match self
            .rlimits
            .iter()
            .find(|r| r.resource == RlimitResource::Core)
        {
            Some(r) if r.hard == Limit::Value(0) => {}
            _ => gaps.push("rlimit core is not 0".to_string()),
        }
        if !self
            .rlimits
            .iter()
            .any(|r| r.resource == RlimitResource::Nofile)
        {
            gaps.push("rlimit nofile is not set".to_string());
        }
        gaps
    }
}

// ---- the watchdog policy ----------------------------------------------------

impl WatchdogPolicy {
    /// The shipped allow-list (the watchdog policy is not operator-installable:
    /// it is part of the thaw guarantee, not a site preference).
    pub fn builtin() -> Result<WatchdogPolicy, PolicyError> {
        Self::from_bytes(
            Path::new(BUILTIN_WATCHDOG_ORIGIN),
            BUILTIN_WATCHDOG_POLICY.as_bytes(),
        )
    }

    /// Parses and validates watchdog policy bytes (used by `builtin` and tests).
    pub fn from_bytes(origin: &Path, bytes: &[u8]) -> Result<WatchdogPolicy, PolicyError> {
        let doc: WatchdogPolicyDoc = parse(origin, bytes)?;
        check_version(origin, doc.version)?;
        PolicyError::require_comment(origin, "comment".into(), &doc.comment)?;
        seccomp::validate(
            origin,
            &format!("seccomp.{WATCHDOG_FILTER_NAME}"),
            &doc.seccomp.watchdog,
            FilterKind::AllowList,
        )?;
        Ok(WatchdogPolicy {
            origin: origin.to_path_buf(),
            sha256: sha256_hex(bytes),
            comment: doc.comment,
            seccomp: doc.seccomp.watchdog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin_value() -> serde_json::Value {
        serde_json::from_str(BUILTIN_SCRIPT_POLICY).unwrap()
    }

    fn from_value(v: &serde_json::Value) -> Result<ScriptPolicy, PolicyError> {
        ScriptPolicy::from_bytes(
            Path::new("/etc/quiesce/policy.json"),
            &serde_json::to_vec(v).unwrap(),
        )
    }

    fn field_of(e: &PolicyError) -> String {
        e.field().unwrap_or_default().to_string()
    }

    #[test]
    fn builtin_policies_validate_and_meet_the_baseline() {
        let p = ScriptPolicy::builtin().unwrap();
        assert_eq!(p.baseline_gaps(), Vec::<String>::new());
        assert!(p.kill_grace() == Duration::from_secs(5));
        assert_eq!(p.output_cap(), 65536);
        WatchdogPolicy::builtin().unwrap();
    }

    #[test]
    fn ioctl_constants_match_the_kernel_headers() {
        assert_eq!(
            FIFREEZE as u32,
            nix::request_code_readwrite!(b'X', 119, 4) as u32
        );
        assert_eq!(
            FITHAW as u32,
            nix::request_code_readwrite!(b'X', 120, 4) as u32
        );
    }

    #[test]
    fn empty_comment_names_the_field() {
        let mut v = builtin_value();
        v["rlimits"][1]["comment"] = " ".into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(field_of(&e), "rlimits[1].comment");
        assert!(e.to_string().contains("/etc/quiesce/policy.json"), "{e}");
    }

    #[test]
    fn nproc_is_refused_with_the_reason() {
        let mut v = builtin_value();
        v["rlimits"][0]["resource"] = "nproc".into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(field_of(&e), "rlimits[0].resource");
        assert!(e.to_string().contains("uid 0"), "{e}");
    }

    #[test]
    fn soft_above_hard_is_refused() {
        let mut v = builtin_value();
        v["rlimits"][1]["soft"] = "unlimited".into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(field_of(&e), "rlimits[1].soft");
    }

    #[test]
    fn dword_value_wider_than_32_bits_is_refused() {
        let mut v = builtin_value();
        let rules = v["seccomp"]["script"]["filter"].as_array_mut().unwrap();
        let i = rules.iter().position(|r| r["syscall"] == "ioctl").unwrap();
        rules[i]["args"][0]["val"] = 0xFFFF_FFFF_C004_5877u64.into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(
            field_of(&e),
            format!("seccomp.script.filter[{i}].args[0].val")
        );
    }

    #[test]
    fn unconditional_and_conditional_rules_for_one_syscall_are_refused() {
        let mut v = builtin_value();
        v["seccomp"]["script"]["filter"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"syscall": "ioctl", "comment": "all ioctls"}));
        let e = from_value(&v).unwrap_err();
        assert!(field_of(&e).ends_with(".syscall"), "{e}");
        assert!(e.to_string().contains("both with and without"), "{e}");
    }

    #[test]
    fn syscall_missing_on_one_arch_needs_an_arch_restriction() {
        let mut v = builtin_value();
        v["seccomp"]["script"]["filter"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"syscall": "iopl", "comment": "port I/O"}));
        let e = from_value(&v).unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::SeccompCompile {
                    arch: "aarch64",
                    ..
                }
            ),
            "{e}"
        );
        let last = v["seccomp"]["script"]["filter"].as_array().unwrap().len() - 1;
        v["seccomp"]["script"]["filter"][last]["arch"] = serde_json::json!(["x86_64"]);
        from_value(&v).unwrap();
    }

    #[test]
    fn identical_actions_are_refused() {
        let mut v = builtin_value();
        v["seccomp"]["script"]["filter_action"] = "allow".into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(field_of(&e), "seccomp.script.filter_action");
    }

    #[test]
    fn watchdog_must_be_an_allow_list() {
        let mut v: serde_json::Value = serde_json::from_str(BUILTIN_WATCHDOG_POLICY).unwrap();
        v["seccomp"]["watchdog"]["default_action"] = "allow".into();
        v["seccomp"]["watchdog"]["filter_action"] = serde_json::json!({"errno": 1});
        let e = WatchdogPolicy::from_bytes(Path::new("w.json"), &serde_json::to_vec(&v).unwrap())
            .unwrap_err();
        assert_eq!(field_of(&e), "seccomp.watchdog.default_action");
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut v = builtin_value();
        v["version"] = 2.into();
        assert_eq!(field_of(&from_value(&v).unwrap_err()), "version");
    }

    #[test]
    fn narrower_policy_reports_baseline_gaps() {
        let mut v = builtin_value();
        v["capabilities_drop"].as_array_mut().unwrap().remove(0);
        let rules = v["seccomp"]["script"]["filter"].as_array_mut().unwrap();
        rules.retain(|r| r["syscall"] != "bpf");
        let p = from_value(&v).unwrap();
        let gaps = p.baseline_gaps();
        assert!(
            gaps.iter().any(|g| g.contains("CAP_SYS_MODULE")),
            "{gaps:?}"
        );
        assert!(gaps.iter().any(|g| g.contains("bpf")), "{gaps:?}");
    }
}
