//! Seccomp filters in seccompiler's JSON format, compiled before the fork and
//! installed with one raw `seccomp(2)` call after it.
//!
//! The `seccomp` section of a policy is seccompiler 0.4's format
//! (`default_action`/`filter_action`/`filter`, rules `{syscall, args}`,
//! conditions `{index, type, op, val}`), with three stricter rules and two
//! additions:
//! - every rule and every argument condition needs a non-empty `comment`, and
//!   so does the filter itself (`comment` next to `default_action`);
//! - a rule may carry `"arch": ["x86_64"]` to exist on one architecture only
//!   (`poll` has no aarch64 syscall); every rule is checked against every
//!   architecture seccompiler supports, so a policy valid here is valid on the
//!   other one too;
//! - a `dword` condition whose value or mask does not fit in 32 bits is refused
//!   (seccompiler would silently compare only the low half), and so is a
//!   syscall listed both with and without argument conditions (seccompiler
//!   would keep only the conditional rules, quietly narrowing the
//!   unconditional one).
//!
//! The validated document is serialised back into plain seccompiler JSON (no
//! comments, rules for this architecture only) and compiled with
//! [`seccompiler::compile_from_json`], so what is reviewed, described by
//! `quiesce audit` and compiled is one and the same value.
//!
//! On x86_64 the compiled program is prefixed with a guard for x32 syscall
//! numbers (`nr | 0x4000_0000`): they share `AUDIT_ARCH_X86_64`, so a
//! deny-list keyed on 64-bit numbers would not see `kexec_load` called through
//! the x32 table. The guard answers them with the filter's deny action, as
//! libseccomp and Docker do. Other ABIs (32-bit `int 0x80`) fail seccompiler's
//! own architecture check, which kills the process.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use nix::errno::Errno;
use seccompiler::{sock_filter, TargetArch};
use serde::{Deserialize, Serialize};

use super::{ApplyError, PolicyError, SandboxStep};

/// What the kernel does with a syscall; seccompiler's `SeccompAction` in its
/// JSON spelling (`"allow"`, `{"errno": 1}`, `"kill_process"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Log,
    Trace(u32),
    Trap,
}

impl FilterAction {
    fn to_seccompiler(self) -> seccompiler::SeccompAction {
        use seccompiler::SeccompAction as S;
        match self {
            FilterAction::Allow => S::Allow,
            FilterAction::Errno(e) => S::Errno(e),
            FilterAction::KillThread => S::KillThread,
            FilterAction::KillProcess => S::KillProcess,
            FilterAction::Log => S::Log,
            FilterAction::Trace(t) => S::Trace(t),
            FilterAction::Trap => S::Trap,
        }
    }

    /// `SECCOMP_RET_*` value returned by the BPF program.
    fn ret_value(self) -> u32 {
        u32::from(self.to_seccompiler())
    }
}

/// Width of the compared syscall argument: `dword` compares the low 32 bits
/// only (right for `ioctl`'s request, which the kernel reads as `unsigned int`
/// whatever userspace sign-extended into the register).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgWidth {
    Dword,
    Qword,
}

/// Comparison operator, seccompiler's `SeccompCmpOp` in its JSON spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
    MaskedEq(u64),
    Ne,
}

/// One argument condition of a rule; all conditions of a rule must hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCondition {
    pub index: u8,
    #[serde(rename = "type")]
    pub width: ArgWidth,
    pub op: CmpOp,
    pub val: u64,
    pub comment: String,
}

/// One rule: a syscall, optionally narrowed by argument conditions. Rules for
/// the same syscall are or-ed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallRule {
    pub syscall: String,
    #[serde(default)]
    pub args: Option<Vec<ArgCondition>>,
    /// Architectures the rule exists on (`x86_64`, `aarch64`); all when absent.
    #[serde(default)]
    pub arch: Option<Vec<String>>,
    pub comment: String,
}

impl SyscallRule {
    /// Whether the rule applies on `arch`.
    pub fn applies_to(&self, arch: &str) -> bool {
        match &self.arch {
            None => true,
            Some(list) => list.iter().any(|a| a == arch),
        }
    }
}

/// One named filter of the `seccomp` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompFilterDoc {
    pub comment: String,
    #[serde(alias = "mismatch_action")]
    pub default_action: FilterAction,
    #[serde(alias = "match_action")]
    pub filter_action: FilterAction,
    pub filter: Vec<SyscallRule>,
}

impl SeccompFilterDoc {
    /// The action that refuses: `filter_action` for a deny-list,
    /// `default_action` for an allow-list. Used for x32 syscall numbers.
    pub fn deny_action(&self) -> FilterAction {
        if self.default_action == FilterAction::Allow {
            self.filter_action
        } else {
            self.default_action
        }
    }
}

/// What kind of filter a policy must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterKind {
    /// Anything seccompiler accepts (the script policy: a deny-list by default,
    /// but an operator may tighten it into an allow-list).
    Any,
    /// `default_action` refuses and `filter_action` is `allow` (the watchdog).
    AllowList,
}

/// Every architecture seccompiler 0.4 can compile for, with its name as it
/// appears in `std::env::consts::ARCH` and in a rule's `arch` list.
const ARCHES: [(&str, TargetArch); 2] = [
    ("x86_64", TargetArch::x86_64),
    ("aarch64", TargetArch::aarch64),
];

/// Largest program the kernel accepts (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;
/// Largest errno a filter may return (`MAX_ERRNO` in the kernel).
const MAX_ERRNO: u32 = 4095;

// Plain seccompiler JSON, serialised from the validated document.
#[derive(Serialize)]
struct CompileFilter<'a> {
    mismatch_action: FilterAction,
    match_action: FilterAction,
    filter: Vec<CompileRule<'a>>,
}

#[derive(Serialize)]
struct CompileRule<'a> {
    syscall: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Vec<CompileCondition>>,
}

#[derive(Serialize)]
struct CompileCondition {
    index: u8,
    #[serde(rename = "type")]
    width: ArgWidth,
    op: CmpOp,
    val: u64,
}

/// Compiles `rules` with seccompiler; `Err` carries seccompiler's message.
fn compile_rules(
    doc: &SeccompFilterDoc,
    rules: &[&SyscallRule],
    arch: TargetArch,
) -> Result<Vec<sock_filter>, String> {
    let filter = CompileFilter {
        mismatch_action: doc.default_action,
        match_action: doc.filter_action,
        filter: rules
            .iter()
            .map(|r| CompileRule {
                syscall: &r.syscall,
                args: r.args.as_ref().map(|args| {
                    args.iter()
                        .map(|c| CompileCondition {
                            index: c.index,
                            width: c.width,
                            op: c.op,
                            val: c.val,
                        })
                        .collect()
                }),
            })
            .collect(),
    };
    let mut map = BTreeMap::new();
    map.insert("filter", filter);
    let json = serde_json::to_vec(&map).map_err(|e| e.to_string())?;
    let mut programs =
        seccompiler::compile_from_json(json.as_slice(), arch).map_err(|e| e.to_string())?;
    programs
        .remove("filter")
        .ok_or_else(|| "seccompiler returned no program".to_string())
}

fn check_action(origin: &Path, field: String, action: FilterAction) -> Result<(), PolicyError> {
    match action {
        FilterAction::Errno(e) if e == 0 || e > MAX_ERRNO => Err(PolicyError::invalid(
            origin,
            field,
            format!("errno {e} is not an error number (1..={MAX_ERRNO}); 0 would make a refused call look successful"),
        )),
        _ => Ok(()),
    }
}

/// For one (syscall, arch): the index of an unconditional rule and of a
/// conditional rule seen so far.
type RulesSeen = (Option<usize>, Option<usize>);

/// Validates one filter: comments, actions, argument conditions, rule
/// conflicts, then a compilation for every supported architecture so that an
/// unknown syscall name is reported with the rule that names it.
pub(crate) fn validate(
    origin: &Path,
    prefix: &str,
    doc: &SeccompFilterDoc,
    kind: FilterKind,
) -> Result<(), PolicyError> {
    validate_header(origin, prefix, doc, kind)?;
    let mut seen: HashMap<(&str, &str), RulesSeen> = HashMap::new();
    for (i, rule) in doc.filter.iter().enumerate() {
        let at = format!("{prefix}.filter[{i}]");
        validate_rule(origin, &at, rule)?;
        check_conflicts(origin, &at, i, rule, &mut seen)?;
    }
    check_compiles(origin, prefix, doc)
}

/// The filter's own fields: its comment, its actions, and that it has rules.
fn validate_header(
    origin: &Path,
    prefix: &str,
    doc: &SeccompFilterDoc,
    kind: FilterKind,
) -> Result<(), PolicyError> {
    PolicyError::require_comment(origin, format!("{prefix}.comment"), &doc.comment)?;
    check_action(
        origin,
        format!("{prefix}.default_action"),
        doc.default_action,
    )?;
    check_action(origin, format!("{prefix}.filter_action"), doc.filter_action)?;
    if doc.default_action == doc.filter_action {
        return Err(PolicyError::invalid(
            origin,
            format!("{prefix}.filter_action"),
            "equals default_action: the filter would change nothing",
        ));
    }
    if kind == FilterKind::AllowList
        && (doc.filter_action != FilterAction::Allow
            || matches!(doc.default_action, FilterAction::Allow | FilterAction::Log))
    {
        return Err(PolicyError::invalid(
            origin,
            format!("{prefix}.default_action"),
            "this filter must be an allow-list: filter_action \"allow\" and a default_action that refuses",
        ));
    }
    if doc.filter.is_empty() {
        return Err(PolicyError::invalid(
            origin,
            format!("{prefix}.filter"),
            "no rules: an empty filter is no sandbox",
        ));
    }
    Ok(())
}

/// One rule's fields: comment, syscall name, architectures, conditions.
fn validate_rule(origin: &Path, at: &str, rule: &SyscallRule) -> Result<(), PolicyError> {
    PolicyError::require_comment(origin, format!("{at}.comment"), &rule.comment)?;
    if rule.syscall.trim().is_empty() {
        return Err(PolicyError::invalid(
            origin,
            format!("{at}.syscall"),
            "empty syscall name",
        ));
    }
    if let Some(arches) = &rule.arch {
        if arches.is_empty() {
            return Err(PolicyError::invalid(
                origin,
                format!("{at}.arch"),
                "empty list: the rule would exist nowhere; remove the rule or the list",
            ));
        }
        for (j, a) in arches.iter().enumerate() {
            if !ARCHES.iter().any(|(name, _)| name == a) {
                return Err(PolicyError::invalid(
                    origin,
                    format!("{at}.arch[{j}]"),
                    format!("unknown architecture {a:?} (known: x86_64, aarch64)"),
                ));
            }
        }
    }
    if let Some(args) = &rule.args {
        if args.is_empty() {
            return Err(PolicyError::invalid(
                origin,
                format!("{at}.args"),
                "empty list: omit `args` to match every call of the syscall",
            ));
        }
        for (j, cond) in args.iter().enumerate() {
            let cat = format!("{at}.args[{j}]");
            PolicyError::require_comment(origin, format!("{cat}.comment"), &cond.comment)?;
            if cond.index > 5 {
                return Err(PolicyError::invalid(
                    origin,
                    format!("{cat}.index"),
                    format!("{} is not a syscall argument (0..=5)", cond.index),
                ));
            }
            if cond.width == ArgWidth::Dword {
                if cond.val > u64::from(u32::MAX) {
                    return Err(PolicyError::invalid(
                        origin,
                        format!("{cat}.val"),
                        format!(
                            "{:#x} does not fit a dword; only its low 32 bits would be compared",
                            cond.val
                        ),
                    ));
                }
                if let CmpOp::MaskedEq(mask) = cond.op {
                    if mask > u64::from(u32::MAX) {
                        return Err(PolicyError::invalid(
                            origin,
                            format!("{cat}.op"),
                            format!("mask {mask:#x} does not fit a dword"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A syscall listed twice for one architecture: seccompiler would keep one
/// of the two rules without saying so.
fn check_conflicts<'a>(
    origin: &Path,
    at: &str,
    i: usize,
    rule: &'a SyscallRule,
    seen: &mut HashMap<(&'a str, &'static str), RulesSeen>,
) -> Result<(), PolicyError> {
    for (arch, _) in ARCHES {
        if !rule.applies_to(arch) {
            continue;
        }
        let entry = seen.entry((rule.syscall.as_str(), arch)).or_default();
        match (&rule.args, entry.0, entry.1) {
            (None, Some(first), _) => {
                return Err(PolicyError::invalid(
                    origin,
                    format!("{at}.syscall"),
                    format!("`{}` is already listed unconditionally at filter[{first}]", rule.syscall),
                ))
            }
            (None, None, Some(cond)) | (Some(_), Some(cond), _) => {
                return Err(PolicyError::invalid(
                    origin,
                    format!("{at}.syscall"),
                    format!(
                        "`{}` is listed both with and without argument conditions (see filter[{cond}]); seccompiler would keep only the conditional rules",
                        rule.syscall
                    ),
                ))
            }
            (None, None, None) => entry.0 = Some(i),
            (Some(_), None, _) => entry.1 = Some(i),
        }
    }
    Ok(())
}

/// A compilation for every supported architecture; when it fails, the
/// rule at fault is named.
fn check_compiles(origin: &Path, prefix: &str, doc: &SeccompFilterDoc) -> Result<(), PolicyError> {
    for (arch_name, arch) in ARCHES {
        let rules: Vec<&SyscallRule> = doc
            .filter
            .iter()
            .filter(|r| r.applies_to(arch_name))
            .collect();
        if compile_rules(doc, &rules, arch).is_ok() {
            continue;
        }
        // Find the rule at fault: its name alone, then with its conditions.
        for (i, rule) in doc.filter.iter().enumerate() {
            if !rule.applies_to(arch_name) {
                continue;
            }
            let bare = SyscallRule {
                args: None,
                ..rule.clone()
            };
            if let Err(reason) = compile_rules(doc, &[&bare], arch) {
                return Err(PolicyError::SeccompCompile {
                    path: origin.to_path_buf(),
                    field: format!("{prefix}.filter[{i}].syscall"),
                    arch: arch_name,
                    reason: format!(
                        "`{}` is not a syscall there ({reason}); restrict the rule with \"arch\" if it exists elsewhere",
                        rule.syscall
                    ),
                });
            }
            if let Err(reason) = compile_rules(doc, &[rule], arch) {
                return Err(PolicyError::SeccompCompile {
                    path: origin.to_path_buf(),
                    field: format!("{prefix}.filter[{i}].args"),
                    arch: arch_name,
                    reason,
                });
            }
        }
        let reason = compile_rules(doc, &rules, arch)
            .err()
            .unwrap_or_else(|| "unknown error".to_string());
        return Err(PolicyError::SeccompCompile {
            path: origin.to_path_buf(),
            field: prefix.to_string(),
            arch: arch_name,
            reason,
        });
    }
    Ok(())
}

/// The architecture this binary runs on, as seccompiler names it.
pub(crate) fn native_arch() -> Option<(&'static str, TargetArch)> {
    ARCHES
        .iter()
        .copied()
        .find(|(name, _)| *name == std::env::consts::ARCH)
}

/// Classic BPF opcodes (linux/bpf_common.h) and `struct seccomp_data`
/// offsets, for the programs built by hand: the x32 guard here and the
/// guard filter (guards.rs).
pub(crate) mod bpf {
    /// BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)
    pub const LD_W_ABS: u16 = 0x20;
    /// BPF_JMP (0x05) | BPF_JEQ (0x10) | BPF_K (0x00)
    pub const JEQ_K: u16 = 0x15;
    /// BPF_JMP (0x05) | BPF_JGE (0x30) | BPF_K (0x00)
    pub const JGE_K: u16 = 0x35;
    /// BPF_JMP (0x05) | BPF_JSET (0x40) | BPF_K (0x00): `A & k != 0`.
    pub const JSET_K: u16 = 0x45;
    /// BPF_JMP (0x05) | BPF_JA (0x00): an unconditional jump by `k`.
    pub const JA: u16 = 0x05;
    /// BPF_RET (0x06) | BPF_K (0x00)
    pub const RET_K: u16 = 0x06;
    /// `offsetof(struct seccomp_data, nr)` and `arch`.
    pub const SECCOMP_DATA_NR: u32 = 0;
    pub const SECCOMP_DATA_ARCH: u32 = 4;
}
use bpf::{
    JEQ_K as BPF_JEQ_K, JGE_K as BPF_JGE_K, LD_W_ABS as BPF_LD_W_ABS, RET_K as BPF_RET_K,
    SECCOMP_DATA_ARCH, SECCOMP_DATA_NR,
};
/// `AUDIT_ARCH_X86_64` = EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64` = EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// The `seccomp_data.arch` of this machine's native system calls.
pub(crate) fn native_audit_arch() -> u32 {
    if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_AARCH64
    } else {
        AUDIT_ARCH_X86_64
    }
}
/// `__X32_SYSCALL_BIT` (arch/x86/include/uapi/asm/unistd.h).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Refuses x32 syscall numbers before seccompiler's program sees them. Falls
/// through to that program (whose own architecture check kills) for any
/// other architecture.
fn x32_guard(deny: FilterAction) -> [sock_filter; 5] {
    [
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        // not x86_64 → skip the next 3 instructions, straight to seccompiler's check
        insn(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        // nr >= X32 bit → the deny return; else skip it
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, deny.ret_value()),
    ]
}

/// `struct sock_fprog` (linux/filter.h), pointing into a prepared program.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// A compiled BPF program for this machine, ready to install.
#[derive(Debug, Clone)]
pub struct PreparedProgram {
    program: Vec<sock_filter>,
}

impl PreparedProgram {
    /// Compiles an already validated filter for the running architecture.
    pub(crate) fn compile_native(
        origin: &Path,
        name: &str,
        doc: &SeccompFilterDoc,
    ) -> Result<PreparedProgram, PolicyError> {
        let (arch_name, arch) = native_arch().ok_or_else(|| PolicyError::UnsupportedArch {
            path: origin.to_path_buf(),
            arch: std::env::consts::ARCH,
        })?;
        let rules: Vec<&SyscallRule> = doc
            .filter
            .iter()
            .filter(|r| r.applies_to(arch_name))
            .collect();
        let compiled =
            compile_rules(doc, &rules, arch).map_err(|reason| PolicyError::SeccompCompile {
                path: origin.to_path_buf(),
                field: format!("seccomp.{name}"),
                arch: arch_name,
                reason,
            })?;
        let mut program = Vec::with_capacity(compiled.len() + 5);
        if arch == TargetArch::x86_64 {
            program.extend(x32_guard(doc.deny_action()));
        }
        program.extend(compiled);
        if program.is_empty() || program.len() > BPF_MAXINSNS {
            return Err(PolicyError::SeccompCompile {
                path: origin.to_path_buf(),
                field: format!("seccomp.{name}"),
                arch: arch_name,
                reason: format!(
                    "{} BPF instructions; the kernel accepts 1..={BPF_MAXINSNS}",
                    program.len()
                ),
            });
        }
        Ok(PreparedProgram { program })
    }

    /// A program built by hand (the guard filter); `None` when the kernel
    /// would refuse its length.
    pub(crate) fn from_instructions(program: Vec<sock_filter>) -> Option<PreparedProgram> {
        (!program.is_empty() && program.len() <= BPF_MAXINSNS)
            .then_some(PreparedProgram { program })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Always false: an empty program is refused when compiling.
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// The instructions (for tests and audits).
    pub fn instructions(&self) -> &[sock_filter] {
        &self.program
    }

    /// Installs the filter on the calling thread (flags 0: the forked child
    /// has exactly one thread). Needs `no_new_privs` or `CAP_SYS_ADMIN`.
    pub(crate) fn install(&self) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — runs between fork and exec, and in the
        // watchdog. The sock_fprog lives on the stack and points into the
        // program prepared before the fork.
        let prog = SockFprog {
            // compile_native bounds the length by BPF_MAXINSNS (4096).
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr(),
        };
        // SAFETY: `prog` is a valid sock_fprog whose `filter` points to `len`
        // initialised `sock_filter`s (repr(C), the kernel's layout) owned by
        // `self`, which outlives the call; the kernel copies the program
        // (copy_from_user) and keeps no reference to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(ApplyError {
                step: SandboxStep::Seccomp,
                errno: Errno::last(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_use_seccompiler_spelling() {
        assert_eq!(
            serde_json::to_string(&FilterAction::Errno(1)).unwrap(),
            r#"{"errno":1}"#
        );
        assert_eq!(
            serde_json::to_string(&FilterAction::KillProcess).unwrap(),
            r#""kill_process""#
        );
        assert_eq!(
            serde_json::to_string(&CmpOp::MaskedEq(4)).unwrap(),
            r#"{"masked_eq":4}"#
        );
        assert_eq!(
            serde_json::to_string(&ArgWidth::Dword).unwrap(),
            r#""dword""#
        );
    }

    #[test]
    fn x32_guard_returns_the_deny_action() {
        let guard = x32_guard(FilterAction::Errno(1));
        // SECCOMP_RET_ERRNO | EPERM
        assert_eq!(guard[4].k, 0x0005_0001);
        assert_eq!(
            guard[1].jf, 3,
            "non-x86_64 falls through to seccompiler's check"
        );
    }
}
