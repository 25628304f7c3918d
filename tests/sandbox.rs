//! The script sandbox and the watchdog's allow-list, observed the way a user
//! would: from inside a sandboxed process, and through syscalls that must be
//! refused (SPEC.md §8, §6.4 point 4).
//!
//! Root tests freeze nothing real: every ioctl probe runs against a scratch
//! ext4 image loop-mounted under a root-owned 0700 directory in /run, and the
//! mount's guard thaws (`fsfreeze -u`) and unmounts it on every path,
//! including panics. A probe that would freeze runs only inside a sandbox
//! that must refuse it; if the sandbox failed, the guard still thaws.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use quiesce::sandbox::policy::{BUILTIN_SCRIPT_POLICY, FIFREEZE, FITHAW};
use quiesce::sandbox::seccomp::{ArgWidth, CmpOp, FilterAction};
use quiesce::sandbox::{
    PolicyError, PreparedFilter, PreparedSandbox, ProcessSandboxState, RunnerCaps, ScriptPolicy,
    WatchdogPolicy,
};

mod common;

use common::scratchfs::ScratchFs;

// ---- fixtures ---------------------------------------------------------------

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found; the root sandbox tests need util-linux and e2fsprogs");
}

/// A child process killed and reaped when the test ends, even on panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MAX_PROBES: usize = 24;

/// Result of each probe: the raw return value and errno (0 when it did not fail).
#[derive(Clone, Copy, Debug)]
struct Probe {
    ret: i64,
    errno: i32,
}

/// What a forked child reported: the sandbox step's errno (0 = applied) and
/// one [`Probe`] per slot.
struct ChildReport {
    apply_errno: i64,
    probes: [Probe; MAX_PROBES],
}

/// Forks; in the child runs `setup` (which applies a sandbox), then `probes`,
/// and writes the results through a pipe as plain integers. The child only
/// makes raw syscalls and never allocates: the test binary has other threads.
fn in_forked_child(
    setup: impl Fn() -> i64,
    probes: impl Fn(&mut [i64; 2 * MAX_PROBES]),
) -> ChildReport {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    // SAFETY: the child below only makes async-signal-safe calls (raw
    // syscalls over stack data and prepared, already-allocated data) and
    // leaves with _exit, so no lock or allocator state inherited from other
    // threads of the test binary is touched.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut buf = [0i64; 2 * MAX_PROBES + 1];
        let applied = setup();
        buf[0] = applied;
        if applied == 0 {
            let mut slots = [0i64; 2 * MAX_PROBES];
            probes(&mut slots);
            buf[1..].copy_from_slice(&slots);
        }
        // SAFETY: writes the stack buffer to a pipe descriptor we own; then
        // leaves without running destructors or atexit handlers.
        unsafe {
            libc::write(
                w.as_raw_fd(),
                buf.as_ptr().cast(),
                std::mem::size_of_val(&buf),
            );
            libc::_exit(0);
        }
    }
    drop(w);
    let mut bytes = Vec::new();
    fs::File::from(r).read_to_end(&mut bytes).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        bytes.len(),
        8 * (2 * MAX_PROBES + 1),
        "probe child died before reporting: {status:?}"
    );
    let words: Vec<i64> = bytes
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    let mut probes = [Probe { ret: 0, errno: 0 }; MAX_PROBES];
    for (i, p) in probes.iter_mut().enumerate() {
        p.ret = words[1 + 2 * i];
        p.errno = words[2 + 2 * i] as i32;
    }
    ChildReport {
        apply_errno: words[0],
        probes,
    }
}

/// Records a raw syscall result in slot `i`.
fn record(slots: &mut [i64; 2 * MAX_PROBES], i: usize, ret: libc::c_long) {
    slots[2 * i] = ret;
    slots[2 * i + 1] = if ret == -1 {
        i64::from(nix::errno::Errno::last_raw())
    } else {
        0
    };
}

fn policy_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn builtin_json() -> serde_json::Value {
    serde_json::from_str(BUILTIN_SCRIPT_POLICY).unwrap()
}

const ORIGIN: &str = "/etc/quiesce/policy.json";

fn load(bytes: &[u8]) -> Result<ScriptPolicy, PolicyError> {
    ScriptPolicy::from_bytes(Path::new(ORIGIN), bytes)
}

// ---- the policy as data -------------------------------------------------------

#[test]
fn builtin_policy_holds_at_least_the_spec_defaults() {
    let p = ScriptPolicy::builtin().unwrap();
    for cap in [
        "CAP_SYS_MODULE",
        "CAP_SYS_BOOT",
        "CAP_SYS_RAWIO",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
        "CAP_BPF",
        "CAP_SYS_TIME",
        "CAP_SYS_PTRACE",
    ] {
        assert!(
            p.capabilities_drop
                .iter()
                .any(|d| d.capability.to_string() == cap && !d.comment.trim().is_empty()),
            "{cap} must be dropped, with a comment"
        );
    }
    assert!(p.no_new_privs.value);
    let f = &p.seccomp;
    assert_eq!(f.default_action, FilterAction::Allow);
    assert_eq!(f.filter_action, FilterAction::Errno(libc::EPERM as u32));
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
        assert!(
            f.filter
                .iter()
                .any(|r| r.syscall == syscall && r.args.is_none() && r.arch.is_none()),
            "{syscall} must be denied unconditionally on every architecture"
        );
    }
    for request in [FIFREEZE, FITHAW] {
        assert!(
            f.filter.iter().any(|r| r.syscall == "ioctl"
                && r.args.as_ref().is_some_and(|a| a.len() == 1
                    && a[0].index == 1
                    && a[0].width == ArgWidth::Dword
                    && a[0].op == CmpOp::Eq
                    && a[0].val == request)),
            "ioctl {request:#x} must be denied on the request's low 32 bits"
        );
    }
    assert!(f.filter.iter().all(|r| !r.comment.trim().is_empty()
        && r.args
            .iter()
            .flatten()
            .all(|a| !a.comment.trim().is_empty())));
    let core = p
        .rlimits
        .iter()
        .find(|r| r.resource.name() == "core")
        .unwrap();
    assert_eq!(
        (core.soft.to_string(), core.hard.to_string()),
        ("0".into(), "0".into())
    );
    assert!(p.rlimits.iter().any(|r| r.resource.name() == "nofile"));
    assert_eq!(p.kill_grace_seconds.value, 5);
    assert_eq!(p.output_cap_bytes.value, 65536);
    assert!(p.baseline_gaps().is_empty());
    assert_eq!(p.sha256.len(), 64);
}

#[test]
fn builtin_watchdog_policy_is_a_tight_allow_list() {
    let w = WatchdogPolicy::builtin().unwrap();
    let f = &w.seccomp;
    assert_eq!(f.default_action, FilterAction::Errno(libc::EPERM as u32));
    assert_eq!(f.filter_action, FilterAction::Allow);
    let ioctls: Vec<_> = f.filter.iter().filter(|r| r.syscall == "ioctl").collect();
    assert_eq!(ioctls.len(), 1, "one ioctl rule: FITHAW");
    let args = ioctls[0].args.as_ref().expect("ioctl must be narrowed");
    assert_eq!((args[0].index, args[0].val), (1, FITHAW));
    for absent in [
        "openat",
        "open",
        "execve",
        "execveat",
        "tkill",
        "tgkill",
        "pidfd_send_signal",
        "clone",
        "fork",
        "socket",
        "mprotect",
    ] {
        assert!(
            f.filter.iter().all(|r| r.syscall != absent),
            "{absent} must not be allowed in the watchdog"
        );
    }
    // kill(2) only as SIGKILL to a process group other than its own, never -1.
    let kills: Vec<_> = f.filter.iter().filter(|r| r.syscall == "kill").collect();
    assert_eq!(kills.len(), 1);
    let a = kills[0].args.as_ref().expect("kill must be narrowed");
    let bound = |index: u8, op: CmpOp| {
        a.iter()
            .find(|c| c.index == index && c.op == op)
            .map(|c| c.val)
    };
    assert_eq!(bound(0, CmpOp::Ge), Some(0x8000_0000), "negative pids only");
    assert_eq!(bound(0, CmpOp::Le), Some(0xFFFF_FFFE), "never -1");
    assert_eq!(bound(1, CmpOp::Eq), Some(libc::SIGKILL as u64));
    for needed in [
        "ppoll",
        "read",
        "write",
        "clock_gettime",
        "close",
        "exit_group",
    ] {
        assert!(f.filter.iter().any(|r| r.syscall == needed), "{needed}");
    }
}

#[test]
fn broken_policy_json_is_refused_naming_the_file() {
    let text = BUILTIN_SCRIPT_POLICY;
    let e = load(&text.as_bytes()[..text.len() / 2]).unwrap_err();
    assert!(matches!(e, PolicyError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains(ORIGIN), "{e}");

    let e = load(format!("{text} {{}}").as_bytes()).unwrap_err();
    assert!(
        matches!(e, PolicyError::Malformed { .. }),
        "trailing garbage: {e}"
    );

    let e = load(b"\xff\xfe{}").unwrap_err();
    assert!(matches!(e, PolicyError::Malformed { .. }), "{e}");

    let big = vec![b' '; 300 * 1024];
    assert!(matches!(
        load(&big).unwrap_err(),
        PolicyError::TooLarge { .. }
    ));
}

#[test]
fn rule_without_comment_is_refused_naming_the_field() {
    let mut v = builtin_json();
    v["capabilities_drop"][0]
        .as_object_mut()
        .unwrap()
        .remove("comment");
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert!(e.to_string().contains(ORIGIN), "{e}");
    assert!(e.to_string().contains("missing field `comment`"), "{e}");

    let mut v = builtin_json();
    v["seccomp"]["script"]["filter"][2]["comment"] = "".into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("seccomp.script.filter[2].comment"), "{e}");

    let mut v = builtin_json();
    let rules = v["seccomp"]["script"]["filter"].as_array_mut().unwrap();
    let i = rules.iter().position(|r| r["syscall"] == "ioctl").unwrap();
    rules[i]["args"][0]
        .as_object_mut()
        .unwrap()
        .remove("comment");
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert!(e.to_string().contains("missing field `comment`"), "{e}");

    let mut v = builtin_json();
    v["no_new_privs"]["comment"] = "   ".into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("no_new_privs.comment"), "{e}");
}

#[test]
fn unknown_capability_is_refused_naming_the_field() {
    let mut v = builtin_json();
    v["capabilities_drop"][3]["capability"] = "CAP_SYS_MODUEL".into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("capabilities_drop[3].capability"), "{e}");
    assert!(e.to_string().contains("CAP_SYS_MODUEL"), "{e}");
    assert!(e.to_string().contains(ORIGIN), "{e}");
}

#[test]
fn unknown_syscall_is_refused_naming_the_field() {
    let mut v = builtin_json();
    v["seccomp"]["script"]["filter"][4]["syscall"] = "delete_modul".into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("seccomp.script.filter[4].syscall"), "{e}");
    assert!(e.to_string().contains("delete_modul"), "{e}");
    assert!(e.to_string().contains(ORIGIN), "{e}");
}

#[test]
fn unknown_fields_and_names_are_refused() {
    let mut v = builtin_json();
    v["sccomp"] = serde_json::json!({});
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert!(e.to_string().contains("unknown field `sccomp`"), "{e}");

    let mut v = builtin_json();
    v["rlimits"][0]["resource"] = "cores".into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("rlimits[0].resource"), "{e}");

    let mut v = builtin_json();
    v["kill_grace_seconds"]["value"] = 0.into();
    let e = load(&policy_bytes(&v)).unwrap_err();
    assert_eq!(e.field(), Some("kill_grace_seconds.value"), "{e}");

    let dup =
        BUILTIN_SCRIPT_POLICY.replacen("\"version\": 1,", "\"version\": 1, \"version\": 1,", 1);
    let e = load(dup.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("duplicate field `version`"), "{e}");
}

#[test]
fn installed_policy_file_is_loaded_or_refused_with_its_path() {
    let dir = std::env::temp_dir().join(format!("quiesce-sbx-load-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let good = dir.join("policy.json");
    fs::write(&good, BUILTIN_SCRIPT_POLICY).unwrap();
    let p = ScriptPolicy::load(&good).unwrap();
    assert_eq!(p.origin, good);
    let missing = dir.join("absent.json");
    let e = ScriptPolicy::load(&missing).unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
    assert!(e.to_string().contains("absent.json"), "{e}");
    let _ = fs::remove_dir_all(&dir);
}

// ---- the script sandbox, from inside --------------------------------------------

#[test]
fn script_sees_dropped_caps_no_new_privs_seccomp_and_cannot_freeze() {
    require_root!("drops bounding capabilities and loop-mounts a scratch ext4");
    let policy = ScriptPolicy::builtin().unwrap();
    let sandbox = PreparedSandbox::prepare(&policy).unwrap();
    let scratch = common::Scratch::new("sbx-inside");
    let m = ScratchFs::with_size(&scratch.dir, "fs", "ext4", "64M");

    let script = r#"
cat /proc/self/status
echo "ULIMIT_C=$(ulimit -c)"
echo "ULIMIT_N=$(ulimit -n)"
echo "ULIMIT_HN=$(ulimit -Hn)"
"$2" -f "$1" 2>&1
echo "FREEZE_RC=$?"
"$2" -u "$1" 2>&1
echo "THAW_RC=$?"
"#;
    let sb = sandbox.clone();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&m.mnt)
        .arg(tool("fsfreeze"));
    // SAFETY: apply_in_child makes only raw syscalls over data prepared
    // before the fork and does not allocate; the ApplyError → io::Error
    // conversion is an OS error code (no allocation).
    unsafe {
        cmd.pre_exec(move || sb.apply_in_child(None).map_err(std::io::Error::from));
    }
    let out = cmd.output().unwrap();
    // Whatever happened inside, the scratch mount must be writable.
    m.assert_writable();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "script failed: {stdout}");

    let state = ProcessSandboxState::parse(0, Path::new("/proc/self/status"), &stdout).unwrap();
    for d in &policy.capabilities_drop {
        if sandbox.unsupported_capabilities().contains(&d.capability) {
            continue;
        }
        let name = d.capability.to_string();
        assert!(!state.cap_bnd.contains(&name), "{name} still in CapBnd");
        assert!(!state.cap_eff.contains(&name), "{name} still in CapEff");
        assert!(!state.cap_prm.contains(&name), "{name} still in CapPrm");
        assert!(!state.cap_amb.contains(&name), "{name} still in CapAmb");
    }
    // Scripts keep what backup work needs (mount, lvm, DB clients).
    assert!(state.cap_eff.contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(state.no_new_privs, Some(true));
    assert_eq!(state.seccomp, Some(2), "seccomp filter mode");

    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_string()
    };
    assert_eq!(line("ULIMIT_C="), "0", "no core dumps");
    let (_, runner_hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert_eq!(line("ULIMIT_HN="), 4096.min(runner_hard).to_string());
    assert_eq!(line("ULIMIT_N="), 1024.min(runner_hard).to_string());

    assert_ne!(line("FREEZE_RC="), "0", "fsfreeze -f must fail: {stdout}");
    assert!(
        stdout.contains("Operation not permitted"),
        "FIFREEZE must be refused with EPERM: {stdout}"
    );
    assert_ne!(line("THAW_RC="), "0", "fsfreeze -u must fail too: {stdout}");
}

#[test]
fn running_script_state_is_visible_from_outside() {
    require_root!("drops bounding capabilities of a child process");
    let policy = ScriptPolicy::builtin().unwrap();
    let sandbox = PreparedSandbox::prepare(&policy).unwrap();
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("30");
    // SAFETY: as above — raw syscalls over prepared data only.
    unsafe {
        cmd.pre_exec(move || sandbox.apply_in_child(None).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().unwrap();
    // spawn() returns after the exec succeeded, so this is the script's state.
    let state = ProcessSandboxState::read(child.id() as i32);
    let _ = child.kill();
    let _ = child.wait();
    let state = state.unwrap();
    assert!(!state.cap_bnd.contains(&"CAP_SYS_BOOT".to_string()));
    assert_eq!(state.no_new_privs, Some(true));
    assert_eq!(state.seccomp, Some(2));
    if let Some(n) = state.seccomp_filters {
        assert!(n >= 1);
    }
    let json = serde_json::to_value(&state).unwrap();
    assert!(json["capBnd"].is_array() && json["noNewPrivs"] == true);
}

#[test]
fn runner_caps_are_audited() {
    require_root!("the runner's capability sets are those of root");
    let caps = RunnerCaps::current().unwrap();
    assert!(caps.has_sys_admin());
    let json = serde_json::to_value(&caps).unwrap();
    for key in [
        "effective",
        "permitted",
        "bounding",
        "ambient",
        "inheritable",
    ] {
        assert!(json[key].is_array(), "{key}");
    }
    let mut sorted = caps.bounding.clone();
    sorted.sort_by_key(|n| {
        n.parse::<caps::Capability>()
            .map(|c| c.index())
            .unwrap_or(255)
    });
    assert_eq!(sorted, caps.bounding, "sorted by capability number");
}

/// Probe slots used by the denial test.
mod slot {
    pub const REBOOT: usize = 0;
    pub const FINIT_MODULE: usize = 1;
    pub const BPF: usize = 2;
    pub const USERFAULTFD: usize = 3;
    pub const SWAPOFF: usize = 4;
    pub const FITHAW: usize = 5;
    pub const PIVOT_ROOT: usize = 6;
    pub const OPEN_BY_HANDLE_AT: usize = 7;
    pub const X32_GETPID: usize = 8;
    pub const GETPPID: usize = 9;
    pub const FIFREEZE_SIGN_EXTENDED: usize = 10;
}

/// Syscalls the script filter denies, called with harmless arguments. Without
/// the filter each fails with its own argument error (or is not run at all:
/// FIFREEZE); with it each must fail with EPERM before reaching the kernel.
fn denied_probes(mnt_fd: i32, include_freeze: bool, slots: &mut [i64; 2 * MAX_PROBES]) {
    // SAFETY: all calls below are raw syscalls with integer arguments or
    // null pointers, which the kernel validates; the wrong reboot magic (0) can
    // never reboot, finit_module/open_by_handle_at get an invalid descriptor,
    // bpf an invalid command, userfaultfd invalid flags, swapoff/pivot_root
    // null paths (EFAULT), FITHAW a filesystem that is not frozen (EINVAL).
    unsafe {
        record(
            slots,
            slot::REBOOT,
            libc::syscall(libc::SYS_reboot, 0, 0, 0, std::ptr::null::<libc::c_void>()),
        );
        record(
            slots,
            slot::FINIT_MODULE,
            libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0),
        );
        record(
            slots,
            slot::BPF,
            libc::syscall(libc::SYS_bpf, -1, std::ptr::null::<libc::c_void>(), 0),
        );
        record(
            slots,
            slot::USERFAULTFD,
            libc::syscall(libc::SYS_userfaultfd, 0x7fff_ffff),
        );
        record(
            slots,
            slot::SWAPOFF,
            libc::syscall(libc::SYS_swapoff, std::ptr::null::<libc::c_char>()),
        );
        record(
            slots,
            slot::FITHAW,
            libc::syscall(libc::SYS_ioctl, mnt_fd, FITHAW),
        );
        record(
            slots,
            slot::PIVOT_ROOT,
            libc::syscall(
                libc::SYS_pivot_root,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
            ),
        );
        record(
            slots,
            slot::OPEN_BY_HANDLE_AT,
            libc::syscall(
                libc::SYS_open_by_handle_at,
                -1,
                std::ptr::null::<libc::c_void>(),
                0,
            ),
        );
        if cfg!(target_arch = "x86_64") {
            record(
                slots,
                slot::X32_GETPID,
                libc::syscall(0x4000_0000 | libc::SYS_getpid),
            );
        }
        record(slots, slot::GETPPID, libc::syscall(libc::SYS_getppid));
        if include_freeze {
            // Sign-extended request, as a careless caller might pass it: the
            // kernel reads an unsigned int, and the filter compares a dword.
            record(
                slots,
                slot::FIFREEZE_SIGN_EXTENDED,
                libc::syscall(libc::SYS_ioctl, mnt_fd, 0xFFFF_FFFF_0000_0000u64 | FIFREEZE),
            );
        }
    }
}

#[test]
fn denied_syscalls_fail_with_eperm_where_they_would_otherwise_reach_the_kernel() {
    require_root!("needs CAP_SYS_BOOT etc. so the unsandboxed control reaches argument checks");
    let policy = ScriptPolicy::builtin().unwrap();
    let sandbox = PreparedSandbox::prepare(&policy).unwrap();
    let scratch = common::Scratch::new("sbx-denied");
    let m = ScratchFs::with_size(&scratch.dir, "fs", "ext4", "64M");
    let mnt = m.open();
    let fd = mnt.as_raw_fd();

    // Control: the same probes without the sandbox (never FIFREEZE).
    let control = in_forked_child(|| 0, |s| denied_probes(fd, false, s));
    let c = &control.probes;
    assert_eq!(
        (c[slot::REBOOT].ret, c[slot::REBOOT].errno),
        (-1, libc::EINVAL),
        "unsandboxed reboot with a wrong magic number fails on the magic"
    );
    assert_eq!(c[slot::BPF].errno, libc::EINVAL);
    assert_eq!(c[slot::USERFAULTFD].errno, libc::EINVAL);
    assert_eq!(c[slot::SWAPOFF].errno, libc::EFAULT);
    assert_eq!(
        c[slot::FITHAW].errno,
        libc::EINVAL,
        "FITHAW on a filesystem that is not frozen"
    );
    assert_eq!(c[slot::PIVOT_ROOT].errno, libc::EFAULT);

    let sandboxed = in_forked_child(
        || match sandbox.apply_in_child(None) {
            Ok(()) => 0,
            Err(e) => e.errno as i64,
        },
        |s| denied_probes(fd, true, s),
    );
    m.assert_writable();
    assert_eq!(sandboxed.apply_errno, 0, "sandbox applied");
    let s = &sandboxed.probes;
    let mut denied = vec![
        ("reboot", slot::REBOOT),
        ("finit_module", slot::FINIT_MODULE),
        ("bpf", slot::BPF),
        ("userfaultfd", slot::USERFAULTFD),
        ("swapoff", slot::SWAPOFF),
        ("ioctl(FITHAW)", slot::FITHAW),
        ("pivot_root", slot::PIVOT_ROOT),
        ("open_by_handle_at", slot::OPEN_BY_HANDLE_AT),
        (
            "ioctl(FIFREEZE, sign-extended)",
            slot::FIFREEZE_SIGN_EXTENDED,
        ),
    ];
    if cfg!(target_arch = "x86_64") {
        denied.push(("x32 getpid", slot::X32_GETPID));
    }
    for (name, i) in denied {
        assert_eq!(
            (s[i].ret, s[i].errno),
            (-1, libc::EPERM),
            "{name} must be refused by the filter with EPERM (control: {:?})",
            c[i]
        );
    }
    assert!(s[slot::GETPPID].ret > 0, "unlisted syscalls still work");
}

// ---- the watchdog's allow-list ------------------------------------------------------

mod wslot {
    pub const FITHAW: usize = 0;
    pub const FIFREEZE: usize = 1;
    pub const OPENAT: usize = 2;
    pub const EXECVE: usize = 3;
    pub const CLOCK_GETTIME: usize = 4;
    pub const PPOLL: usize = 5;
    pub const MMAP_EXEC: usize = 6;
    pub const MMAP_DATA: usize = 7;
    pub const MUNMAP: usize = 8;
    pub const GETPID: usize = 9;
    pub const KILL: usize = 10;
    pub const SOCKET: usize = 11;
    pub const X32: usize = 12;
    pub const POLL: usize = 13;
    pub const OTHER_IOCTL: usize = 14;
    pub const KILL_GROUP_TERM: usize = 15;
    pub const KILL_GROUP_KILL: usize = 16;
    pub const KILL_OWN_GROUP: usize = 17;
}

#[test]
fn watchdog_filter_allows_fithaw_and_refuses_the_rest() {
    require_root!("FITHAW needs CAP_SYS_ADMIN and a loop-mounted scratch ext4");
    let policy = WatchdogPolicy::builtin().unwrap();
    let filter = PreparedFilter::prepare(&policy).unwrap();
    let scratch = common::Scratch::new("sbx-watchdog");
    let m = ScratchFs::with_size(&scratch.dir, "fs", "ext4", "64M");
    let mnt = m.open();
    let fd = mnt.as_raw_fd();
    let (pr, _pw): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let pipe_fd = pr.as_raw_fd();
    // execve arguments built before the fork (the child must not allocate).
    let true_path = c"/bin/true";
    let argv: [*const libc::c_char; 2] = [true_path.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let (argv_ptr, envp_ptr) = (argv.as_ptr(), envp.as_ptr());
    // A stand-in for the snapshot command: a process group of its own that
    // the watchdog may SIGKILL (and nothing else).
    let mut victim = KillOnDrop(
        Command::new("/bin/sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let victim_group = victim.0.id() as libc::pid_t;

    let report = in_forked_child(
        || {
            // Its own process group first, so that a wrongly allowed
            // kill(0, SIGKILL) below could only kill the probe child itself
            // (the report would then be missing and the test fail).
            // SAFETY: setpgid(2) with integer arguments, async-signal-safe.
            if unsafe { libc::setpgid(0, 0) } != 0 {
                return i64::from(nix::errno::Errno::last_raw());
            }
            match filter.apply() {
                Ok(()) => 0,
                Err(e) => e.errno as i64,
            }
        },
        |s| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let mut pfd = libc::pollfd {
                fd: pipe_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: all calls below are raw syscalls over stack data and
            // descriptors held by the child; FIFREEZE is expected to be
            // refused, and should it not be, the mount's guard thaws.
            unsafe {
                record(s, wslot::FITHAW, libc::syscall(libc::SYS_ioctl, fd, FITHAW));
                record(
                    s,
                    wslot::FIFREEZE,
                    libc::syscall(libc::SYS_ioctl, fd, FIFREEZE),
                );
                record(
                    s,
                    wslot::OPENAT,
                    libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        c"/".as_ptr(),
                        libc::O_RDONLY,
                    ),
                );
                record(
                    s,
                    wslot::EXECVE,
                    libc::syscall(libc::SYS_execve, true_path.as_ptr(), argv_ptr, envp_ptr),
                );
                record(
                    s,
                    wslot::CLOCK_GETTIME,
                    libc::syscall(
                        libc::SYS_clock_gettime,
                        libc::CLOCK_MONOTONIC,
                        &mut ts as *mut libc::timespec,
                    ),
                );
                record(
                    s,
                    wslot::PPOLL,
                    libc::syscall(
                        libc::SYS_ppoll,
                        &mut pfd as *mut libc::pollfd,
                        1,
                        &zero as *const libc::timespec,
                        std::ptr::null::<libc::sigset_t>(),
                        0 as libc::size_t,
                    ),
                );
                record(
                    s,
                    wslot::MMAP_EXEC,
                    libc::syscall(
                        libc::SYS_mmap,
                        std::ptr::null::<libc::c_void>(),
                        4096 as libc::size_t,
                        libc::c_long::from(libc::PROT_READ | libc::PROT_EXEC),
                        libc::c_long::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
                        -1 as libc::c_long,
                        0 as libc::c_long,
                    ),
                );
                let data = libc::syscall(
                    libc::SYS_mmap,
                    std::ptr::null::<libc::c_void>(),
                    4096 as libc::size_t,
                    libc::c_long::from(libc::PROT_READ | libc::PROT_WRITE),
                    libc::c_long::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
                    -1 as libc::c_long,
                    0 as libc::c_long,
                );
                record(s, wslot::MMAP_DATA, data);
                if data != -1 {
                    record(
                        s,
                        wslot::MUNMAP,
                        libc::syscall(libc::SYS_munmap, data, 4096 as libc::size_t),
                    );
                }
                record(s, wslot::GETPID, libc::syscall(libc::SYS_getpid));
                record(
                    s,
                    wslot::KILL,
                    libc::syscall(libc::SYS_kill, libc::getpid(), 0),
                );
                record(
                    s,
                    wslot::KILL_GROUP_TERM,
                    libc::syscall(libc::SYS_kill, -victim_group, libc::SIGTERM),
                );
                record(
                    s,
                    wslot::KILL_OWN_GROUP,
                    libc::syscall(libc::SYS_kill, 0, libc::SIGKILL),
                );
                record(
                    s,
                    wslot::KILL_GROUP_KILL,
                    libc::syscall(libc::SYS_kill, -victim_group, libc::SIGKILL),
                );
                record(
                    s,
                    wslot::SOCKET,
                    libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0),
                );
                record(
                    s,
                    wslot::OTHER_IOCTL,
                    libc::syscall(libc::SYS_ioctl, pipe_fd, libc::FIONREAD, &mut ts as *mut _),
                );
                #[cfg(target_arch = "x86_64")]
                {
                    record(s, wslot::X32, libc::syscall(0x4000_0000 | libc::SYS_getpid));
                    record(
                        s,
                        wslot::POLL,
                        libc::syscall(libc::SYS_poll, &mut pfd as *mut libc::pollfd, 1, 0),
                    );
                }
            }
        },
    );
    m.assert_writable();
    assert_eq!(report.apply_errno, 0, "filter applied");
    let p = &report.probes;
    assert_eq!(
        (p[wslot::FITHAW].ret, p[wslot::FITHAW].errno),
        (-1, libc::EINVAL),
        "FITHAW reaches the kernel (EINVAL: the scratch mount is not frozen)"
    );
    for (name, i) in [
        ("ioctl(FIFREEZE)", wslot::FIFREEZE),
        ("openat", wslot::OPENAT),
        ("execve", wslot::EXECVE),
        ("mmap(PROT_EXEC)", wslot::MMAP_EXEC),
        ("kill(self, 0)", wslot::KILL),
        ("kill(-group, SIGTERM)", wslot::KILL_GROUP_TERM),
        ("kill(0, SIGKILL)", wslot::KILL_OWN_GROUP),
        ("socket", wslot::SOCKET),
        ("ioctl(FIONREAD)", wslot::OTHER_IOCTL),
    ] {
        assert_eq!(
            (p[i].ret, p[i].errno),
            (-1, libc::EPERM),
            "{name} must be refused with EPERM"
        );
    }
    for (name, i) in [
        ("clock_gettime", wslot::CLOCK_GETTIME),
        ("ppoll", wslot::PPOLL),
        ("munmap", wslot::MUNMAP),
    ] {
        assert_eq!(p[i].ret, 0, "{name} must be allowed: {:?}", p[i]);
    }
    assert_eq!(
        p[wslot::KILL_GROUP_KILL].ret,
        0,
        "SIGKILL to another process group is allowed: {:?}",
        p[wslot::KILL_GROUP_KILL]
    );
    let status = victim.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the snapshot stand-in died of the watchdog's SIGKILL"
    );
    assert!(p[wslot::MMAP_DATA].ret > 0, "data mmap allowed");
    assert!(p[wslot::GETPID].ret > 0, "getpid allowed");
    if cfg!(target_arch = "x86_64") {
        assert_eq!((p[wslot::X32].ret, p[wslot::X32].errno), (-1, libc::EPERM));
        assert_eq!(p[wslot::POLL].ret, 0, "poll allowed on x86_64");
    }
}

// ---- a real script against its runner (SPEC §8: no attaching to the runner) ----

/// A pre-script in Python (its parent is the runner) that tries every way
/// of reaching into the runner and prints one `NAME=ret errno` line each.
/// A successful PTRACE_SEIZE is never followed by PTRACE_ATTACH: attaching
/// would SIGSTOP the runner and leave it stopped when the script exits.
const REACH_INTO_RUNNER: &str = r#"#!/usr/bin/python3
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
runner = os.getppid()
def out(name, ret):
    print(f"{name}={ret} {ctypes.get_errno() if ret < 0 else 0}", flush=True)
    ctypes.set_errno(0)
# The runner's /proc/PID is masked in the script's mount namespace (SPEC
# §8): its comm cannot be read there; its parent is the runner all the same.
print("PARENT_VISIBLE=" + str(os.path.exists(f"/proc/{runner}/comm")), flush=True)
print(f"PARENT={runner}", flush=True)
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
seize = libc.ptrace(PTRACE_SEIZE, runner, None, None)
out("SEIZE", seize)
if seize < 0:
    out("ATTACH", libc.ptrace(PTRACE_ATTACH, runner, None, None))
try:
    os.close(os.open(f"/proc/{runner}/mem", os.O_RDWR))
    print("MEM_RW=0 0", flush=True)
except OSError as e:
    print(f"MEM_RW=-1 {e.errno}", flush=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(1)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 1)
# Remote address 0: where the access check passes this fails with EFAULT
# and writes nothing; a refusal is EPERM.
remote = iovec(None, 1)
SYS_process_vm_writev, SYS_pidfd_open, SYS_pidfd_getfd = 311, 434, 438
out("VM_WRITEV", libc.syscall(SYS_process_vm_writev, runner, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
pidfd = libc.syscall(SYS_pidfd_open, runner, 0)
out("PIDFD_OPEN", pidfd)
if pidfd >= 0:
    out("PIDFD_GETFD", libc.syscall(SYS_pidfd_getfd, pidfd, 0, 0))
"#;

#[test]
fn a_script_cannot_trace_or_write_into_its_runner() {
    require_root!("runs quiesce pre with a root-owned script");
    if !cfg!(target_arch = "x86_64") || !Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: needs x86_64 syscall numbers and /usr/bin/python3");
        return;
    }
    let s = common::Setup::new("ptrace");
    fs::write(&s.pre, REACH_INTO_RUNNER).unwrap();
    let run = s.quiesce(&["pre", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    let out = v["phases"]["pre"]["attempts"][0]["stdoutTail"]
        .as_str()
        .unwrap_or_else(|| panic!("no output: {v}"))
        .to_string();
    let line = |key: &str| -> (i64, i32) {
        let rest = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {out}"));
        let (ret, errno) = rest.split_once(' ').unwrap();
        (ret.parse().unwrap(), errno.parse().unwrap())
    };
    let runner: i64 = out
        .lines()
        .find_map(|l| l.strip_prefix("PARENT="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PARENT in {out}"));
    assert_eq!(
        v["phases"]["pre"]["attempts"][0]["pid"]
            .as_i64()
            .map(|_| ()),
        Some(()),
        "{v}"
    );
    assert!(runner > 1, "the script's parent is the runner: {out}");
    assert!(
        out.contains("PARENT_VISIBLE=False"),
        "the runner's /proc/PID is masked for the script: {out}"
    );
    assert_eq!(
        line("SEIZE"),
        (-1, libc::EPERM),
        "PTRACE_SEIZE of the runner: {out}"
    );
    assert_eq!(
        line("ATTACH"),
        (-1, libc::EPERM),
        "PTRACE_ATTACH of the runner: {out}"
    );
    assert_eq!(
        line("MEM_RW").0,
        -1,
        "/proc/<runner>/mem opened for writing: {out}"
    );
    assert_eq!(
        line("VM_WRITEV"),
        (-1, libc::EPERM),
        "process_vm_writev: {out}"
    );
    assert!(line("PIDFD_OPEN").0 >= 0, "pidfd_open stays allowed: {out}");
    assert_eq!(line("PIDFD_GETFD"), (-1, libc::EPERM), "pidfd_getfd: {out}");
}

#[test]
fn audit_lists_the_rules_that_keep_scripts_out_of_the_runner() {
    require_root!("quiesce audit probes a sandboxed process");
    let s = common::Setup::new("audit-ptrace");
    let run = s.quiesce(&["audit", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    let sandbox = &v["audit"]["sandbox"];
    let dropped: Vec<&str> = sandbox["capabilitiesDropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(dropped.contains(&"CAP_SYS_PTRACE"), "{dropped:?}");
    let rules = sandbox["seccomp"]["rules"].as_array().unwrap();
    for syscall in ["ptrace", "process_vm_writev", "pidfd_getfd"] {
        assert!(
            rules.iter().any(|r| r["syscall"] == syscall
                && !r["comment"].as_str().unwrap_or("").trim().is_empty()),
            "{syscall} is not listed with its reason: {rules:?}"
        );
    }
    let observed = v["audit"]["observedScript"]["capBnd"].as_array().unwrap();
    assert!(
        !observed.iter().any(|c| c == "CAP_SYS_PTRACE"),
        "{observed:?}"
    );
    // SPEC §8: the guards out of the scripts' reach, each rule with its reason.
    let guards = &v["audit"]["guards"];
    let rules = guards["rules"].as_array().unwrap();
    for syscall in [
        "kill",
        "tgkill",
        "pidfd_send_signal",
        "setpriority",
        "prlimit64",
        "mount",
        "setns",
    ] {
        assert!(
            rules.iter().any(|r| r["syscall"] == syscall
                && !r["comment"].as_str().unwrap_or("").trim().is_empty()
                && !r["refuses"].as_str().unwrap_or("").is_empty()),
            "{syscall} is not listed with its reason: {guards}"
        );
    }
    assert!(
        guards["readOnlyInScripts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap_or("").starts_with("/sys/fs/cgroup")),
        "{guards}"
    );
    assert!(run.stderr.contains("refuse kill"), "{}", run.stderr);
}

// ---- script cgroups stay inside the caller's cgroup (SPEC §7) -------------------

/// The cgroup v2 mount and the v1 `pids` mount, from /proc/self/mounts.
fn cgroup_mounts() -> (Option<PathBuf>, Option<PathBuf>) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let mut v2 = None;
    let mut v1_pids = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() < 4 {
            continue;
        }
        if f[2] == "cgroup2" && v2.is_none() {
            v2 = Some(PathBuf::from(f[1]));
        } else if f[2] == "cgroup" && f[3].split(',').any(|o| o == "pids") {
            v1_pids = Some(PathBuf::from(f[1]));
        }
    }
    (v2, v1_pids)
}

/// A cgroup the test creates (under the v2 and v1-pids mounts) to start
/// quiesce in, as a systemd unit would; removed with whatever quiesce left
/// in it once quiesce is gone.
struct CallerCgroup {
    dirs: Vec<PathBuf>,
}

impl Drop for CallerCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

#[test]
fn script_cgroups_are_created_inside_the_callers_cgroup() {
    require_root!("creates cgroups and runs quiesce pre");
    let (Some(v2), v1_pids) = cgroup_mounts() else {
        eprintln!("SKIPPED: no cgroup v2 hierarchy mounted");
        return;
    };
    let name = format!("qtest-caller-{}", std::process::id());
    let mut caller = CallerCgroup { dirs: Vec::new() };
    for mount in std::iter::once(&v2).chain(v1_pids.as_ref()) {
        let dir = mount.join(&name);
        if fs::create_dir(&dir).is_err() {
            eprintln!("SKIPPED: cannot create a cgroup under {}", mount.display());
            return;
        }
        caller.dirs.push(dir);
    }
    let s = common::Setup::new("cg-inside");
    fs::write(&s.pre, "#!/bin/sh\ncat /proc/self/cgroup\n").unwrap();
    // The runner starts inside the caller's cgroup(s), as under a unit.
    let joins: String = caller
        .dirs
        .iter()
        .map(|d| format!("echo $$ > '{}/cgroup.procs' && ", d.display()))
        .collect();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{joins}exec \"$@\""))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_quiesce"))
        .args(s.global_args())
        .args(["pre", "--json"])
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    let seen = v["phases"]["pre"]["attempts"][0]["stdoutTail"]
        .as_str()
        .unwrap()
        .to_string();
    let own = format!("/{name}/");
    let v2_line = seen
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {seen}"));
    assert!(
        v2_line.starts_with(&own),
        "the script's cgroup {v2_line} is not inside the caller's /{name}"
    );
    if v1_pids.is_some() {
        let pids_line = seen
            .lines()
            .find_map(|l| l.split_once(":pids:").map(|(_, p)| p))
            .unwrap_or_else(|| panic!("no pids line in {seen}"));
        assert!(
            pids_line.starts_with(&own),
            "the script's pids cgroup {pids_line} is not inside the caller's /{name}"
        );
    }
    // Its cgroup is gone once it ended, and nothing was made at the root.
    for dir in &caller.dirs {
        let left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("quiesce-runner-"))
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
}
