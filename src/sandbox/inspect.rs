//! Capability audit (SPEC.md §8): what the runner holds, what a started
//! script actually holds (`/proc/PID/status`), and the rules in force, for
//! the audit trail and `quiesce audit`.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use ::caps::Capability;
use serde::Serialize;

use super::caps::names_from_mask;
use super::policy::{Commented, ScriptPolicy, SCRIPT_FILTER_NAME};
use super::rlimits::Limit;
use super::seccomp::{self, ArgWidth, CmpOp, FilterAction};

/// Number of a capability name (`CAP_CHOWN` → 0, `cap_41` → 41), for sorting.
fn cap_number(name: &str) -> u8 {
    if let Ok(c) = Capability::from_str(name) {
        return c.index();
    }
    name.strip_prefix("cap_")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u8::MAX)
}

/// The runner's own capability sets, as sorted names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerCaps {
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub bounding: Vec<String>,
    pub ambient: Vec<String>,
}

impl RunnerCaps {
    /// Reads the calling thread's sets from `/proc/thread-self/status`: one
    /// read, where asking the kernel set by set costs a `prctl` per
    /// capability and set (the bounding and ambient sets have no call that
    /// returns them whole) — about 120 system calls a run.
    pub fn current() -> Result<RunnerCaps, StatusError> {
        let path = PathBuf::from("/proc/thread-self/status");
        let text = std::fs::read_to_string(&path).map_err(|source| StatusError::Read {
            path: path.clone(),
            source,
        })?;
        let s = ProcessSandboxState::parse(std::process::id() as i32, &path, &text)?;
        Ok(RunnerCaps {
            effective: s.cap_eff,
            permitted: s.cap_prm,
            inheritable: s.cap_inh,
            bounding: s.cap_bnd,
            ambient: s.cap_amb,
        })
    }

    /// Freezing needs `CAP_SYS_ADMIN` in the effective set (FIFREEZE checks
    /// it on the superblock's user namespace); without it the runner refuses
    /// to start a freeze.
    pub fn has_sys_admin(&self) -> bool {
        self.effective.iter().any(|c| c == "CAP_SYS_ADMIN")
    }
}

/// `/proc/PID/status` could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed line {line:?}", path.display())]
    Malformed { path: PathBuf, line: String },
    #[error("{}: no {field} line", path.display())]
    Missing { path: PathBuf, field: &'static str },
}

/// What a process actually holds, from `/proc/PID/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSandboxState {
    pub pid: i32,
    pub cap_eff: Vec<String>,
    pub cap_prm: Vec<String>,
    pub cap_bnd: Vec<String>,
    pub cap_amb: Vec<String>,
    pub cap_inh: Vec<String>,
    /// `NoNewPrivs` (Linux ≥ 4.10).
    pub no_new_privs: Option<bool>,
    /// `Seccomp`: 0 disabled, 1 strict, 2 filter.
    pub seccomp: Option<u8>,
    /// `Seccomp_filters` (Linux ≥ 5.9): filters stacked on the process.
    pub seccomp_filters: Option<u32>,
}

impl ProcessSandboxState {
    /// Reads `/proc/PID/status`. Read it while the process is alive (e.g.
    /// right after exec, before reaping): a reaped pid may be reused.
    pub fn read(pid: i32) -> Result<ProcessSandboxState, StatusError> {
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let text = std::fs::read_to_string(&path).map_err(|source| StatusError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(pid, &path, &text)
    }

    /// Parses the text of a status file (`path` only names it in errors).
    pub fn parse(
        pid: i32,
        path: &std::path::Path,
        text: &str,
    ) -> Result<ProcessSandboxState, StatusError> {
        let malformed = |line: &str| StatusError::Malformed {
            path: path.to_path_buf(),
            line: line.to_string(),
        };
        let mut masks: [Option<u64>; 5] = [None; 5];
        const MASK_KEYS: [&str; 5] = ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"];
        let mut no_new_privs = None;
        let mut seccomp = None;
        let mut seccomp_filters = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if let Some(i) = MASK_KEYS.iter().position(|k| *k == key) {
                masks[i] = Some(u64::from_str_radix(value, 16).map_err(|_| malformed(line))?);
                continue;
            }
            match key {
                "NoNewPrivs" => {
                    no_new_privs = Some(match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(malformed(line)),
                    })
                }
                "Seccomp" => seccomp = Some(value.parse().map_err(|_| malformed(line))?),
                "Seccomp_filters" => {
                    seccomp_filters = Some(value.parse().map_err(|_| malformed(line))?)
                }
                _ => {}
            }
        }
        let mut names: [Vec<String>; 5] = Default::default();
        for (i, key) in MASK_KEYS.iter().enumerate() {
            let mask = masks[i].ok_or(StatusError::Missing {
                path: path.to_path_buf(),
                field: key,
            })?;
            names[i] = names_from_mask(mask);
        }
        let [cap_eff, cap_prm, cap_bnd, cap_amb, cap_inh] = names;
        Ok(ProcessSandboxState {
            pid,
            cap_eff,
            cap_prm,
            cap_bnd,
            cap_amb,
            cap_inh,
            no_new_privs,
            seccomp,
            seccomp_filters,
        })
    }
}

/// The rules in force for scripts, for `quiesce audit` and the audit trail.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDescription {
    pub policy: String,
    pub policy_sha256: String,
    pub comment: String,
    pub capabilities_dropped: Vec<CapabilityDescription>,
    pub no_new_privs: Commented<bool>,
    pub rlimits: Vec<RlimitDescription>,
    pub kill_grace_seconds: Commented<u64>,
    pub output_cap_bytes: Commented<u64>,
    pub seccomp: SeccompDescription,
    /// Differences from SPEC.md §8's defaults (empty for the built-in policy).
    pub baseline_gaps: Vec<String>,
    /// The runner's sets, when they could be read.
    pub runner: Option<RunnerCaps>,
    /// What a script started by this runner would hold after its `execve`.
    pub script: Option<ScriptCapsForecast>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityDescription {
    pub name: String,
    pub comment: String,
    /// False when the running kernel does not know the capability (then it
    /// cannot be held anyway and the drop is skipped).
    pub supported_by_kernel: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RlimitDescription {
    pub resource: &'static str,
    pub soft: Limit,
    pub hard: Limit,
    pub comment: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompDescription {
    pub filter: &'static str,
    pub comment: String,
    /// The architecture the filter is compiled for here.
    pub arch: &'static str,
    pub default_action: FilterAction,
    pub filter_action: FilterAction,
    /// x32 syscall numbers get the deny action (x86_64 only).
    pub x32_denied: bool,
    pub rules: Vec<SeccompRuleDescription>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompRuleDescription {
    pub syscall: String,
    pub args: Vec<SeccompArgDescription>,
    pub arch: Option<Vec<String>>,
    /// Whether the rule exists on this machine's architecture.
    pub in_force_here: bool,
    pub comment: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArgDescription {
    pub index: u8,
    #[serde(rename = "type")]
    pub width: ArgWidth,
    pub op: CmpOp,
    pub value: u64,
    pub value_hex: String,
    pub comment: String,
}

/// A script's capability sets after its `execve`, for a uid-0 runner
/// (capabilities(7): root's new permitted set is the bounding set, plus the
/// inheritable and ambient sets; effective equals permitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptCapsForecast {
    pub bounding: Vec<String>,
    pub permitted: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

impl ScriptCapsForecast {
    /// The forecast for a uid-0 runner holding `runner` under `policy`.
    pub fn for_root(runner: &RunnerCaps, policy: &ScriptPolicy) -> ScriptCapsForecast {
        let dropped: BTreeSet<String> = policy
            .capabilities_drop
            .iter()
            .map(|d| d.capability.to_string())
            .collect();
        let keep = |set: &[String]| -> Vec<String> {
            set.iter()
                .filter(|c| !dropped.contains(*c))
                .cloned()
                .collect()
        };
        let bounding = keep(&runner.bounding);
        let inheritable = keep(&runner.inheritable);
        let ambient = keep(&runner.ambient);
        let mut permitted: Vec<String> = bounding
            .iter()
            .chain(&inheritable)
            .chain(&ambient)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        permitted.sort_by_key(|c| cap_number(c));
        ScriptCapsForecast {
            effective: permitted.clone(),
            permitted,
            bounding,
            inheritable,
            ambient,
        }
    }
}

/// Describes `policy` together with this runner's capabilities.
pub fn describe(policy: &ScriptPolicy) -> SandboxDescription {
    describe_for(policy, RunnerCaps::current().ok())
}

/// Describes `policy` for a runner holding `runner` (`None`: not known).
pub fn describe_for(policy: &ScriptPolicy, runner: Option<RunnerCaps>) -> SandboxDescription {
    let supported = ::caps::runtime::thread_all_supported();
    let arch = seccomp::native_arch()
        .map(|(name, _)| name)
        .unwrap_or(std::env::consts::ARCH);
    let f = &policy.seccomp;
    let script = runner
        .as_ref()
        .map(|r| ScriptCapsForecast::for_root(r, policy));
    SandboxDescription {
        policy: policy.origin.display().to_string(),
        policy_sha256: policy.sha256.clone(),
        comment: policy.comment.clone(),
        capabilities_dropped: policy
            .capabilities_drop
            .iter()
            .map(|d| CapabilityDescription {
                name: d.capability.to_string(),
                comment: d.comment.clone(),
                supported_by_kernel: supported.contains(&d.capability),
            })
            .collect(),
        no_new_privs: policy.no_new_privs.clone(),
        rlimits: policy
            .rlimits
            .iter()
            .map(|r| RlimitDescription {
                resource: r.resource.name(),
                soft: r.soft,
                hard: r.hard,
                comment: r.comment.clone(),
            })
            .collect(),
        kill_grace_seconds: policy.kill_grace_seconds.clone(),
        output_cap_bytes: policy.output_cap_bytes.clone(),
        seccomp: SeccompDescription {
            filter: SCRIPT_FILTER_NAME,
            comment: f.comment.clone(),
            arch,
            default_action: f.default_action,
            filter_action: f.filter_action,
            x32_denied: arch == "x86_64",
            rules: f
                .filter
                .iter()
                .map(|r| SeccompRuleDescription {
                    syscall: r.syscall.clone(),
                    args: r
                        .args
                        .iter()
                        .flatten()
                        .map(|c| SeccompArgDescription {
                            index: c.index,
                            width: c.width,
                            op: c.op,
                            value: c.val,
                            value_hex: format!("{:#x}", c.val),
                            comment: c.comment.clone(),
                        })
                        .collect(),
                    arch: r.arch.clone(),
                    in_force_here: r.applies_to(arch),
                    comment: r.comment.clone(),
                })
                .collect(),
        },
        baseline_gaps: policy.baseline_gaps(),
        runner,
        script,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const STATUS: &str = "Name:\tsh\nPid:\t42\nCapInh:\t0000000000000000\nCapPrm:\t000001fffffeffff\nCapEff:\t000001fffffeffff\nCapBnd:\t000001fffffeffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    #[test]
    fn parses_proc_status() {
        let s = ProcessSandboxState::parse(42, Path::new("/proc/42/status"), STATUS).unwrap();
        assert!(!s.cap_bnd.contains(&"CAP_SYS_MODULE".to_string()));
        assert!(s.cap_bnd.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(s.no_new_privs, Some(true));
        assert_eq!(s.seccomp, Some(2));
        assert_eq!(s.seccomp_filters, Some(1));
        assert!(s.cap_amb.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["noNewPrivs"], true);
        assert_eq!(json["seccompFilters"], 1);
    }

    #[test]
    fn missing_cap_line_is_an_error() {
        let text = STATUS.replace("CapBnd", "Nope");
        let e = ProcessSandboxState::parse(1, Path::new("/proc/1/status"), &text).unwrap_err();
        assert!(e.to_string().contains("CapBnd"), "{e}");
    }

    #[test]
    fn describe_builtin_lists_rules_with_comments() {
        let policy = ScriptPolicy::builtin().unwrap();
        let runner = RunnerCaps {
            effective: vec!["CAP_SYS_ADMIN".into(), "CAP_SYS_BOOT".into()],
            permitted: vec!["CAP_SYS_ADMIN".into(), "CAP_SYS_BOOT".into()],
            inheritable: vec![],
            bounding: vec!["CAP_SYS_BOOT".into(), "CAP_SYS_ADMIN".into()],
            ambient: vec![],
        };
        let d = describe_for(&policy, Some(runner));
        let json = serde_json::to_value(&d).unwrap();
        assert!(json["capabilitiesDropped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["comment"].as_str().unwrap().is_empty()));
        let ioctl = json["seccomp"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["syscall"] == "ioctl")
            .unwrap();
        assert_eq!(ioctl["args"][0]["valueHex"], "0xc0045877");
        assert_eq!(
            json["seccomp"]["filterAction"],
            serde_json::json!({"errno": 1})
        );
        assert_eq!(
            json["script"]["bounding"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert!(d.baseline_gaps.is_empty());
    }
}
