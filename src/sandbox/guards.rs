//! The guards out of the scripts' reach (SPEC.md §8): a second seccomp
//! filter, stacked under the policy's, that refuses every way a script — or
//! a holder it leaves running — could signal, stop, slow or re-prioritise
//! the processes that guard the run: the runner and each of its threads,
//! the watchdog, the post guard and the run sentinel. Its other half is the
//! script's own mount namespace ([`super::confine`]): the cgroup tree
//! read-only, the guards' `/proc/PID` empty; this filter refuses the calls
//! that would undo it (mounting, unmounting, joining another mount
//! namespace).
//!
//! The filter names those processes by pid, so it is built right before each
//! script is forked, from the set that exists at that moment; every guard a
//! run needs is started before its first script for that reason (the
//! watchdog and the freeze threads of a `snapshot`, the post guard, the
//! run sentinel). A script can still signal and manage its own application:
//! any pid not in the set is left alone.
//!
//! Why a hand-built program and not rules in the policy's seccompiler JSON:
//! the values are pids known only at run time, and seccompiler spends four or
//! five instructions per (syscall, value) pair; here every syscall loads its
//! argument once and jumps into one shared membership block, so the program
//! grows by about one instruction per guarded pid and stays far below the
//! kernel's 4096 even with a freeze thread for each of a hundred mounts.
//!
//! The rules, with the reason for each, are [`RULES`]; `quiesce audit` lists
//! them. The filter answers EPERM, except `pidfd_send_signal`, which answers
//! ENOSYS: a pidfd's target cannot be read by a filter, so pidfd signalling
//! is refused outright, and ENOSYS is what makes the tools that prefer it
//! (Go's runtime, systemd's helpers) fall back to `kill(2)`, which is
//! filtered by pid.

use std::sync::Mutex;

use nix::errno::Errno;
use seccompiler::sock_filter;

use super::confine::ProcMasks;
use super::seccomp::{self, bpf, PreparedProgram};

/// One protected process: a guard the job started (the runner and its
/// threads are added by [`GuardSet::now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Protected {
    pid: i32,
    role: &'static str,
}

static PROTECTED: Mutex<Vec<Protected>> = Mutex::new(Vec::new());

/// From now on every script filter protects `pid` — and its process group,
/// which every guard leads (each one calls `setsid`). Call it as soon as the
/// guard is forked, before any script can start.
pub fn protect(pid: i32, role: &'static str) {
    let mut p = PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
    if !p.iter().any(|g| g.pid == pid) {
        p.push(Protected { pid, role });
    }
}

/// `pid` was reaped: its number may be recycled by anyone.
pub fn release(pid: i32) {
    let mut p = PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
    p.retain(|g| g.pid != pid);
}

/// What a rule refuses, by argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Argument `.0` equal to 0 or with any bit of `.1` set.
    ZeroOrBits(u8, u32),
    /// The argument names a guarded pid or thread, a guard's process group
    /// (as `-pgid`), or every process (`-1`).
    Signal(u8),
    /// The argument names a guarded pid or thread.
    Pid(u8),
    /// `which` (argument `.0`) selects what `who` (argument `.1`) names:
    /// a process (value `.2`), a process group (`.3`) or a user (`.4`: uid 0
    /// is refused, which covers every root process).
    Which(u8, u8, u32, u32, u32),
    /// Argument `.0` equal to `.1` selects an owner in argument `.2`
    /// (`fcntl(F_SETOWN)`).
    OwnerWhen(u8, u32, u8),
    /// Argument `.0` equal to any of the values: refused (the target is in
    /// memory the filter cannot read).
    Always(u8, &'static [u32]),
    /// Refused whatever the arguments.
    Any,
}

/// One rule of the guard filter.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub syscall: &'static str,
    pub nr: i64,
    pub target: Target,
    pub errno: i32,
    pub comment: &'static str,
}

const F_SETOWN: u32 = libc::F_SETOWN as u32;
/// `F_SETOWN_EX` (asm-generic/fcntl.h; not in every libc crate build).
const F_SETOWN_EX: u32 = 15;
/// `FIOSETOWN`, `SIOCSPGRP` (asm-generic/sockios.h): set a socket's owner.
const SET_OWNER_IOCTLS: &[u32] = &[0x8901, 0x8902];

/// Every way a script could reach a guard that the filter closes; `quiesce
/// audit` prints this table.
pub const RULES: &[Rule] = &[
    Rule {
        syscall: "kill",
        nr: libc::SYS_kill,
        target: Target::Signal(0),
        errno: libc::EPERM,
        comment: "no signal to the runner or any of its threads (a thread id names the whole process), the watchdog, the post guard or the run sentinel, to their process groups, or to -1 (every process): SIGSTOP or SIGKILL there would leave a filesystem frozen or a post-script unrun",
    },
    Rule {
        syscall: "tkill",
        nr: libc::SYS_tkill,
        target: Target::Signal(0),
        errno: libc::EPERM,
        comment: "the same signals addressed to one thread",
    },
    Rule {
        syscall: "tgkill",
        nr: libc::SYS_tgkill,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "the same signals addressed to a thread of a guarded process (its thread group is checked, so a thread started later is covered too)",
    },
    Rule {
        syscall: "rt_sigqueueinfo",
        nr: libc::SYS_rt_sigqueueinfo,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "a queued signal with data to a guarded process",
    },
    Rule {
        syscall: "rt_tgsigqueueinfo",
        nr: libc::SYS_rt_tgsigqueueinfo,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "a queued signal with data to a thread of a guarded process",
    },
    Rule {
        syscall: "pidfd_send_signal",
        nr: libc::SYS_pidfd_send_signal,
        target: Target::Any,
        errno: libc::ENOSYS,
        comment: "a pidfd (from pidfd_open or an open /proc/PID) does not show its target to a filter, so pidfd signalling is refused outright; ENOSYS makes the tools that prefer it fall back to kill(2), which is filtered by pid",
    },
    Rule {
        syscall: "fcntl",
        nr: libc::SYS_fcntl,
        target: Target::OwnerWhen(1, F_SETOWN, 2),
        errno: libc::EPERM,
        comment: "F_SETOWN to a guarded pid or group would have the kernel signal it (SIGIO, SIGURG, or any signal chosen with F_SETSIG)",
    },
    Rule {
        syscall: "fcntl",
        nr: libc::SYS_fcntl,
        target: Target::Always(1, &[F_SETOWN_EX]),
        errno: libc::EPERM,
        comment: "F_SETOWN_EX names its owner in memory the filter cannot read; F_SETOWN remains for a script's own processes",
    },
    Rule {
        syscall: "ioctl",
        nr: libc::SYS_ioctl,
        target: Target::Always(1, SET_OWNER_IOCTLS),
        errno: libc::EPERM,
        comment: "FIOSETOWN and SIOCSPGRP set a socket's signal owner through a pointer the filter cannot read",
    },
    Rule {
        syscall: "setpriority",
        nr: libc::SYS_setpriority,
        target: Target::Which(0, 1, 0, 1, 2),
        errno: libc::EPERM,
        comment: "no renice of a guarded process or group, and none of every process of uid 0 (PRIO_USER 0 includes the runner)",
    },
    Rule {
        syscall: "ioprio_set",
        nr: libc::SYS_ioprio_set,
        target: Target::Which(0, 1, 1, 2, 3),
        errno: libc::EPERM,
        comment: "no change of the I/O priority of a guarded process or group, nor of every process of uid 0",
    },
    Rule {
        syscall: "sched_setscheduler",
        nr: libc::SYS_sched_setscheduler,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no scheduling policy change (SCHED_IDLE starves the watchdog of the CPU) for a guarded process",
    },
    Rule {
        syscall: "sched_setparam",
        nr: libc::SYS_sched_setparam,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no scheduling priority change for a guarded process",
    },
    Rule {
        syscall: "sched_setattr",
        nr: libc::SYS_sched_setattr,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no scheduling attributes (policy, nice, utilisation clamps) for a guarded process",
    },
    Rule {
        syscall: "sched_setaffinity",
        nr: libc::SYS_sched_setaffinity,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no CPU pinning of a guarded process (onto a CPU a busy loop holds)",
    },
    Rule {
        syscall: "prlimit64",
        nr: libc::SYS_prlimit64,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no resource limit set on a guarded process (RLIMIT_CPU ends it with SIGKILL; RLIMIT_NOFILE or RLIMIT_NPROC starve it)",
    },
    Rule {
        syscall: "mount",
        nr: libc::SYS_mount,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "a script runs in a mount namespace of its own where the cgroup tree is read-only and the guards' /proc/PID are masked; remounting would undo that (a backup script has no mounting to do: the snapshot command is the operator's, outside the sandbox)",
    },
    Rule {
        syscall: "umount2",
        nr: libc::SYS_umount2,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "unmounting a mask would uncover a guard's /proc/PID or /proc/sysrq-trigger",
    },
    Rule {
        syscall: "mount_setattr",
        nr: libc::SYS_mount_setattr,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "would make the read-only cgroup tree writable again",
    },
    Rule {
        syscall: "open_tree",
        nr: libc::SYS_open_tree,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: a detached copy of a mount can be attached writable",
    },
    Rule {
        syscall: "move_mount",
        nr: libc::SYS_move_mount,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: attaching or moving a mount",
    },
    Rule {
        syscall: "fsopen",
        nr: libc::SYS_fsopen,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: a fresh cgroup2 or proc instance would be writable",
    },
    Rule {
        syscall: "fspick",
        nr: libc::SYS_fspick,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: reconfiguring an existing superblock",
    },
    Rule {
        syscall: "fsconfig",
        nr: libc::SYS_fsconfig,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: configuring a filesystem context",
    },
    Rule {
        syscall: "fsmount",
        nr: libc::SYS_fsmount,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "the new mount API: creating a mount from a context",
    },
    Rule {
        syscall: "pivot_root",
        nr: libc::SYS_pivot_root,
        target: Target::Any,
        errno: libc::EPERM,
        comment: "changing the root of the script's mount namespace",
    },
    Rule {
        syscall: "setns",
        nr: libc::SYS_setns,
        target: Target::ZeroOrBits(1, libc::CLONE_NEWNS as u32),
        errno: libc::EPERM,
        comment: "joining another mount namespace (nstype 0 takes any namespace a descriptor names; CLONE_NEWNS, alone or in a pidfd's set) leaves the script's confined view; joining a network or other namespace stays possible",
    },
    Rule {
        syscall: "migrate_pages",
        nr: libc::SYS_migrate_pages,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "no moving a guarded process's memory (also refused without CAP_SYS_PTRACE; kept for kernels that check less)",
    },
    Rule {
        syscall: "move_pages",
        nr: libc::SYS_move_pages,
        target: Target::Pid(0),
        errno: libc::EPERM,
        comment: "the same, page by page",
    },
];

/// The processes a filter protects, as they are right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardSet {
    /// The runner, each of its threads, each guard.
    pub pids: Vec<i32>,
    /// The runner's process group and each guard's.
    pub groups: Vec<i32>,
    /// `pid role` of each guard, for the audit trail.
    pub roles: Vec<(i32, &'static str)>,
}

impl GuardSet {
    /// The runner (its threads read from `/proc/self/task`) and every guard
    /// registered with [`protect`].
    pub fn now() -> GuardSet {
        let me = std::process::id() as i32;
        let mut pids = vec![me];
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            pids.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()),
            );
        }
        // SAFETY: getpgrp(2) takes no argument and cannot fail.
        let mut groups = vec![unsafe { libc::getpgrp() }];
        let mut roles = vec![(me, "runner")];
        for g in PROTECTED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            pids.push(g.pid);
            groups.push(g.pid);
            roles.push((g.pid, g.role));
        }
        pids.sort_unstable();
        pids.dedup();
        groups.retain(|&g| g > 1);
        groups.sort_unstable();
        groups.dedup();
        GuardSet {
            pids,
            groups,
            roles,
        }
    }
}

/// The guard filter, compiled for this machine before a fork, and the
/// `/proc` entries of the same guards that the script's namespace masks.
#[derive(Debug, Clone)]
pub struct GuardFilter {
    program: PreparedProgram,
    pub masks: ProcMasks,
    pub set: GuardSet,
}

/// The guard filter could not be built (too many guarded pids for one BPF
/// program): the script is not started.
#[derive(Debug, thiserror::Error)]
#[error("the guard filter for {pids} guarded pids is {len} BPF instructions; the kernel accepts at most 4096")]
pub struct TooLarge {
    pub pids: usize,
    pub len: usize,
}

impl GuardFilter {
    /// The filter protecting `set`.
    pub fn build(set: GuardSet) -> Result<GuardFilter, TooLarge> {
        let code = compile(&set);
        let len = code.len();
        let program = PreparedProgram::from_instructions(code).ok_or(TooLarge {
            pids: set.pids.len(),
            len,
        })?;
        // The runner's own directory first: the namespace makes its mask
        // file there.
        let me = std::process::id() as i32;
        let ids: Vec<i32> = std::iter::once(me)
            .chain(set.pids.iter().copied().filter(|&p| p != me))
            .collect();
        Ok(GuardFilter {
            program,
            masks: ProcMasks::of(&ids),
            set,
        })
    }

    /// The filter protecting everything that guards the run right now.
    pub fn now() -> Result<GuardFilter, TooLarge> {
        GuardFilter::build(GuardSet::now())
    }

    pub fn instructions(&self) -> usize {
        self.program.len()
    }

    /// Installs the filter on the calling process. Only in a forked child
    /// before its exec, after `no_new_privs`.
    pub(crate) fn install(&self) -> Result<(), super::ApplyError> {
        // INVARIANT: no allocation (see PreparedProgram::install).
        self.program.install()
    }
}

/// What `quiesce audit` shows of the guards (SPEC §8): every rule with its
/// reason, the processes protected right now, and the script's view of the
/// mounts.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardsDescription {
    pub comment: &'static str,
    pub rules: Vec<RuleDescription>,
    /// `pid role` of what a script forked now could not reach.
    pub protected_now: Vec<String>,
    pub instructions: usize,
    /// Made read-only in every script's mount namespace.
    pub read_only_in_scripts: Vec<String>,
    pub masked_in_scripts: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDescription {
    pub syscall: &'static str,
    pub refuses: String,
    pub answer: String,
    pub comment: &'static str,
}

impl Target {
    /// The refused arguments, in words.
    fn describe(self) -> String {
        match self {
            Target::Signal(a) => format!("arg{a} a guarded pid or thread, -pgid of a guard's group, or -1"),
            Target::Pid(a) => format!("arg{a} a guarded pid or thread"),
            Target::Which(w, who, p, g, u) => format!(
                "arg{w} = {p} with arg{who} a guarded pid; = {g} with a guard's group; = {u} with uid 0"
            ),
            Target::OwnerWhen(a, v, o) => format!(
                "arg{a} = {v:#x} with arg{o} a guarded pid or -pgid of a guard's group"
            ),
            Target::Always(a, vals) => format!(
                "arg{a} one of {}",
                vals.iter().map(|v| format!("{v:#x}")).collect::<Vec<_>>().join(", ")
            ),
            Target::ZeroOrBits(a, bits) => format!("arg{a} = 0 or with any bit of {bits:#x}"),
            Target::Any => "every call".into(),
        }
    }
}

/// The guards as `audit` shows them, with `confinement` (the script's
/// namespace) and the filter a script forked now would get.
pub fn describe(confinement: &super::confine::PreparedConfinement) -> GuardsDescription {
    let now = GuardFilter::now().ok();
    GuardsDescription {
        comment: "a second seccomp filter, built before each script's fork from the guards that exist then (every guard of a run is started before its first script), and the script's own mount namespace; together a script, or anything it starts, cannot signal, stop, slow, re-prioritise, limit or re-cgroup the runner, its threads, the watchdog, the post guard or the run sentinel, and can still manage every other process",
        rules: RULES
            .iter()
            .map(|r| RuleDescription {
                syscall: r.syscall,
                refuses: r.target.describe(),
                answer: Errno::from_raw(r.errno).to_string(),
                comment: r.comment,
            })
            .collect(),
        protected_now: now
            .as_ref()
            .map(|f| f.set.roles.iter().map(|(p, r)| format!("{p} {r}")).collect())
            .unwrap_or_default(),
        instructions: now.as_ref().map_or(0, GuardFilter::instructions),
        read_only_in_scripts: confinement
            .read_only
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        masked_in_scripts: std::iter::once("/proc/PID of every guard (empty, read-only)".to_string())
            .chain(confinement.masked_files.iter().map(|p| p.to_string_lossy().into_owned()))
            .collect(),
    }
}

/// `SECCOMP_RET_ERRNO | errno`.
fn ret_errno(errno: i32) -> u32 {
    0x0005_0000 | (errno as u32 & 0xffff)
}
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offset of the low 32 bits of argument `i` in `struct seccomp_data`
/// (little-endian: both supported architectures are).
fn arg_low(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}

/// A program under construction: instructions, plus the jumps into the
/// shared blocks, patched once their place is known.
struct Builder {
    code: Vec<sock_filter>,
    /// (index of a `JA`, block it jumps to).
    fixups: Vec<(usize, Block)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Signal,
    Pid,
    Group,
    Uid0,
}

impl Builder {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.code.push(sock_filter { code, jt, jf, k });
    }

    /// Loads argument `arg` and jumps to `block`.
    fn check(&mut self, arg: u8, block: Block) {
        self.push(bpf::LD_W_ABS, 0, 0, arg_low(arg));
        self.fixups.push((self.code.len(), block));
        self.push(bpf::JA, 0, 0, 0);
    }

    /// One rule: the syscall number is in A. Falls through when the rule
    /// does not apply (A still holds the number, reloaded to be sure).
    fn rule(&mut self, r: &Rule) {
        let start = self.code.len();
        self.push(bpf::JEQ_K, 0, 0, r.nr as u32); // jf patched: skip the body
        match r.target {
            Target::Signal(a) => self.check(a, Block::Signal),
            Target::Pid(a) => self.check(a, Block::Pid),
            Target::Any => self.push(bpf::RET_K, 0, 0, ret_errno(r.errno)),
            Target::Always(a, values) => {
                self.push(bpf::LD_W_ABS, 0, 0, arg_low(a));
                for &v in values {
                    self.push(bpf::JEQ_K, 0, 1, v);
                    self.push(bpf::RET_K, 0, 0, ret_errno(r.errno));
                }
            }
            Target::ZeroOrBits(a, bits) => {
                self.push(bpf::LD_W_ABS, 0, 0, arg_low(a));
                self.push(bpf::JEQ_K, 1, 0, 0);
                self.push(bpf::JSET_K, 0, 1, bits);
                self.push(bpf::RET_K, 0, 0, ret_errno(r.errno));
            }
            Target::OwnerWhen(a, v, owner) => {
                self.push(bpf::LD_W_ABS, 0, 0, arg_low(a));
                self.push(bpf::JEQ_K, 0, 2, v);
                self.check(owner, Block::Signal);
            }
            Target::Which(which, who, process, group, user) => {
                for (v, block) in [
                    (process, Block::Pid),
                    (group, Block::Group),
                    (user, Block::Uid0),
                ] {
                    self.push(bpf::LD_W_ABS, 0, 0, arg_low(which));
                    self.push(bpf::JEQ_K, 0, 2, v);
                    self.check(who, block);
                }
            }
        }
        // The syscall did not match: skip to the reload after the body.
        let body = self.code.len() - start - 1;
        // Bodies are a handful of instructions: always within a u8 jump.
        self.code[start].jf = u8::try_from(body).expect("short rule body");
        self.push(bpf::LD_W_ABS, 0, 0, bpf::SECCOMP_DATA_NR);
    }

    /// A block refusing with `errno` when A is one of `values`, else
    /// allowing. Chunks of up to 255 comparisons, each jumping to its own
    /// refusal (a BPF conditional jump reaches 255 instructions at most).
    fn block(&mut self, values: &[u32], errno: i32) {
        for chunk in values.chunks(255) {
            let n = chunk.len();
            for (i, &v) in chunk.iter().enumerate() {
                // Equal: jump over the rest of the chunk and the JA to the RET.
                self.push(bpf::JEQ_K, (n - i) as u8, 0, v);
            }
            self.push(bpf::JA, 0, 0, 1);
            self.push(bpf::RET_K, 0, 0, ret_errno(errno));
        }
        self.push(bpf::RET_K, 0, 0, RET_ALLOW);
    }
}

/// The whole program for `set`.
fn compile(set: &GuardSet) -> Vec<sock_filter> {
    let mut b = Builder {
        code: Vec::new(),
        fixups: Vec::new(),
    };
    // Another architecture, or an x32 number: the policy's filter decides
    // (it kills foreign architectures and refuses x32).
    b.push(bpf::LD_W_ABS, 0, 0, bpf::SECCOMP_DATA_ARCH);
    b.push(bpf::JEQ_K, 1, 0, seccomp::native_audit_arch());
    b.push(bpf::RET_K, 0, 0, RET_ALLOW);
    b.push(bpf::LD_W_ABS, 0, 0, bpf::SECCOMP_DATA_NR);
    for r in RULES {
        b.rule(r);
    }
    b.push(bpf::RET_K, 0, 0, RET_ALLOW);
    let pids: Vec<u32> = set.pids.iter().map(|&p| p as u32).collect();
    let mut signal = pids.clone();
    signal.extend(set.groups.iter().map(|&g| g.wrapping_neg() as u32));
    signal.push(u32::MAX); // -1
    let groups: Vec<u32> = set.groups.iter().map(|&g| g as u32).collect();
    let mut starts = Vec::new();
    for (block, values) in [
        (Block::Signal, &signal[..]),
        (Block::Pid, &pids[..]),
        (Block::Group, &groups[..]),
        (Block::Uid0, &[0u32][..]),
    ] {
        starts.push((block, b.code.len()));
        b.block(values, libc::EPERM);
    }
    for (at, block) in std::mem::take(&mut b.fixups) {
        let (_, start) = starts.iter().find(|(s, _)| *s == block).expect("block");
        b.code[at].k = (start - at - 1) as u32;
    }
    b.code
}

/// Runs `code` on one `seccomp_data` (nr, arch, args) the way the kernel
/// does, for the unit tests below and for `quiesce audit`'s self-check.
pub fn evaluate(code: &[sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            0 => nr as u32,
            4 => arch,
            o if (16..64).contains(&o) => {
                let a = args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => 0,
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    while pc < code.len() {
        let i = &code[pc];
        pc += 1;
        match i.code {
            bpf::LD_W_ABS => acc = word(i.k),
            bpf::JA => pc += i.k as usize,
            bpf::JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
            bpf::JSET_K => pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize,
            bpf::RET_K => return i.k,
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
    panic!("the program fell off its end")
}

/// What the filter answers for a call, as an errno (`None`: allowed).
pub fn answer(code: &[sock_filter], nr: i64, args: [u64; 6]) -> Option<Errno> {
    let r = evaluate(code, nr, seccomp::native_audit_arch(), args);
    (r != RET_ALLOW).then(|| Errno::from_raw((r & 0xffff) as i32))
}

impl GuardFilter {
    /// The program's instructions (tests, audit).
    pub fn code(&self) -> &[sock_filter] {
        self.program.instructions()
    }
}

/// What the filter answers on this machine, for an audit self-check.
pub fn self_check(f: &GuardFilter) -> Result<(), String> {
    let runner = std::process::id() as u64;
    let probes: [(i64, [u64; 6], Option<Errno>); 4] = [
        (libc::SYS_kill, [runner, 19, 0, 0, 0, 0], Some(Errno::EPERM)),
        (
            libc::SYS_kill,
            [u64::MAX, 9, 0, 0, 0, 0],
            Some(Errno::EPERM),
        ),
        (libc::SYS_kill, [1, 0, 0, 0, 0, 0], None),
        (
            libc::SYS_pidfd_send_signal,
            [3, 9, 0, 0, 0, 0],
            Some(Errno::ENOSYS),
        ),
    ];
    for (nr, args, want) in probes {
        let got = answer(f.code(), nr, args);
        if got != want {
            return Err(format!(
                "syscall {nr} with {args:?}: the filter answers {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> GuardSet {
        GuardSet {
            pids: vec![100, 101, 102, 200],
            groups: vec![50, 200],
            roles: vec![],
        }
    }

    fn a(v: &[i64]) -> [u64; 6] {
        let mut out = [0u64; 6];
        for (i, x) in v.iter().enumerate() {
            out[i] = *x as u64;
        }
        out
    }

    fn ask(code: &[sock_filter], nr: i64, args: &[i64]) -> Option<Errno> {
        answer(code, nr, a(args))
    }

    #[test]
    fn signals_to_guards_their_groups_and_everyone_are_refused() {
        let code = compile(&set());
        let eperm = Some(Errno::EPERM);
        assert_eq!(ask(&code, libc::SYS_kill, &[100, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_kill, &[101, 9]), eperm, "a thread");
        assert_eq!(ask(&code, libc::SYS_kill, &[-50, 19]), eperm, "a group");
        assert_eq!(ask(&code, libc::SYS_kill, &[-200, 9]), eperm);
        assert_eq!(ask(&code, libc::SYS_kill, &[-1, 9]), eperm);
        assert_eq!(ask(&code, libc::SYS_tkill, &[102, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_tgkill, &[100, 555, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_rt_sigqueueinfo, &[200, 9]), eperm);
        assert_eq!(
            ask(&code, libc::SYS_pidfd_send_signal, &[3, 9]),
            Some(Errno::ENOSYS)
        );
    }

    #[test]
    fn a_scripts_own_processes_stay_reachable() {
        let code = compile(&set());
        assert_eq!(ask(&code, libc::SYS_kill, &[4242, 1]), None);
        assert_eq!(ask(&code, libc::SYS_kill, &[0, 15]), None, "own group");
        assert_eq!(ask(&code, libc::SYS_kill, &[-4242, 15]), None);
        assert_eq!(ask(&code, libc::SYS_tgkill, &[4242, 4243, 15]), None);
        assert_eq!(ask(&code, libc::SYS_setpriority, &[0, 4242, 5]), None);
        assert_eq!(ask(&code, libc::SYS_setpriority, &[2, 1000, 5]), None);
        assert_eq!(ask(&code, libc::SYS_prlimit64, &[0, 7, 0, 0]), None);
        assert_eq!(ask(&code, libc::SYS_getpid, &[]), None);
        assert_eq!(ask(&code, libc::SYS_fcntl, &[3, 8, 4242]), None);
        assert_eq!(ask(&code, libc::SYS_fcntl, &[3, 2, 100]), None, "F_SETFD");
    }

    #[test]
    fn priority_scheduling_and_limits_of_guards_are_refused() {
        let code = compile(&set());
        let eperm = Some(Errno::EPERM);
        assert_eq!(ask(&code, libc::SYS_setpriority, &[0, 100, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_setpriority, &[1, 50, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_setpriority, &[2, 0, 19]), eperm);
        assert_eq!(ask(&code, libc::SYS_ioprio_set, &[1, 200, 7]), eperm);
        assert_eq!(ask(&code, libc::SYS_ioprio_set, &[2, 200, 7]), eperm);
        assert_eq!(ask(&code, libc::SYS_ioprio_set, &[3, 0, 7]), eperm);
        assert_eq!(ask(&code, libc::SYS_ioprio_set, &[1, 4242, 7]), None);
        assert_eq!(ask(&code, libc::SYS_sched_setscheduler, &[101, 5]), eperm);
        assert_eq!(ask(&code, libc::SYS_sched_setattr, &[100]), eperm);
        assert_eq!(ask(&code, libc::SYS_sched_setaffinity, &[200]), eperm);
        assert_eq!(ask(&code, libc::SYS_prlimit64, &[100, 0, 1, 0]), eperm);
        assert_eq!(ask(&code, libc::SYS_fcntl, &[3, 8, 100]), eperm);
        assert_eq!(ask(&code, libc::SYS_fcntl, &[3, 8, -50]), eperm);
        assert_eq!(ask(&code, libc::SYS_fcntl, &[3, 15, 0]), eperm);
        assert_eq!(ask(&code, libc::SYS_ioctl, &[3, 0x8901, 0]), eperm);
    }

    #[test]
    fn mounting_and_joining_another_mount_namespace_are_refused() {
        let code = compile(&set());
        let eperm = Some(Errno::EPERM);
        assert_eq!(ask(&code, libc::SYS_mount, &[0, 0, 0, 0]), eperm);
        assert_eq!(ask(&code, libc::SYS_umount2, &[0, 0]), eperm);
        assert_eq!(ask(&code, libc::SYS_fsopen, &[0, 0]), eperm);
        let newns = libc::CLONE_NEWNS as i64;
        let newnet = libc::CLONE_NEWNET as i64;
        assert_eq!(ask(&code, libc::SYS_setns, &[3, 0]), eperm);
        assert_eq!(ask(&code, libc::SYS_setns, &[3, newns]), eperm);
        assert_eq!(ask(&code, libc::SYS_setns, &[3, newns | newnet]), eperm);
        assert_eq!(ask(&code, libc::SYS_setns, &[3, newnet]), None);
    }

    #[test]
    fn the_high_half_of_an_argument_is_ignored_as_the_kernel_does() {
        let code = compile(&set());
        // pid_t is an int: a register with garbage above bit 31 still names 100.
        let args = [0xdead_0000_0000_0064, 19, 0, 0, 0, 0];
        assert_eq!(answer(&code, libc::SYS_kill, args), Some(Errno::EPERM));
    }

    #[test]
    fn a_thousand_guarded_threads_still_fit_in_one_program() {
        let big = GuardSet {
            pids: (1000..2100).collect(),
            groups: vec![7],
            roles: vec![],
        };
        let code = compile(&big);
        assert!(code.len() < 4096, "{} instructions", code.len());
        assert_eq!(ask(&code, libc::SYS_kill, &[2099, 9]), Some(Errno::EPERM));
        assert_eq!(ask(&code, libc::SYS_kill, &[1000, 9]), Some(Errno::EPERM));
        assert_eq!(ask(&code, libc::SYS_kill, &[2100, 9]), None);
        assert_eq!(
            ask(&code, libc::SYS_tgkill, &[1500, 1, 9]),
            Some(Errno::EPERM)
        );
    }

    #[test]
    fn another_architecture_is_left_to_the_policy_filter() {
        let code = compile(&set());
        let other = seccomp::native_audit_arch() ^ 1;
        assert_eq!(
            evaluate(&code, libc::SYS_kill, other, a(&[100, 9])),
            RET_ALLOW
        );
    }

    #[test]
    fn now_includes_the_runner_its_threads_and_registered_guards() {
        protect(999_999, "test-guard");
        let s = GuardSet::now();
        release(999_999);
        assert!(s.pids.contains(&(std::process::id() as i32)));
        assert!(s.pids.contains(&999_999) && s.groups.contains(&999_999));
        assert!(!GuardSet::now().pids.contains(&999_999));
    }
}
