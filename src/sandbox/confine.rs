//! The file-system half of keeping the guards out of the scripts' reach
//! (SPEC.md §8): each script runs in a mount namespace of its own in which
//! the cgroup tree is read-only and `/proc/PID` of every guard is an empty,
//! read-only directory — and the guard filter refuses every system call
//! that mounts, unmounts or joins another mount namespace, so the script
//! cannot undo either.
//!
//! Why: a write to the `cgroup.freeze`, `cgroup.kill` or `cgroup.procs` of
//! the cgroup that holds the runner stops it, kills it or moves it into a
//! frozen cgroup, with no signal sent; a write to `/proc/PID/oom_score_adj`
//! makes a guard the OOM killer's first choice, `/proc/PID/timerslack_ns`
//! or `autogroup` slows it. None of these goes through a system call a
//! seccomp filter can judge (the path is in memory), so the script's view of
//! the tree changes instead. `/proc/sysrq-trigger` (which can thaw every
//! filesystem or kill every process) is masked for the same reason.
//!
//! Why not Landlock: its domains also scope `ptrace` access, so a
//! post-script could no longer look at `/proc/PID/fd` of what its own
//! pre-script left running (a separate `quiesce post` is always another
//! domain) — the shipped MariaDB sample does exactly that.
//!
//! What it costs a script: it cannot mount, unmount or `setns` into another
//! mount namespace (`nsenter -m`), it sees the cgroup tree read-only, and
//! `/proc/PID` of quiesce's own processes empty. Everything else is as on
//! the host: mounts made there later still appear (the namespace is a slave
//! of the host's), and `/proc` of every other process is untouched.
//!
//! Not covered (the README says so): a path through `/proc/PID/root` of a
//! root process that holds no capability the script lacks leads into that
//! process's mount namespace, where the tree is writable.

use std::ffi::{CStr, CString};

use nix::errno::Errno;

use super::{ApplyError, SandboxStep};

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_int = 0x8000;
const MASK_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// What every script's mount namespace is made of, prepared once per run.
#[derive(Debug, Clone)]
pub struct PreparedConfinement {
    /// Mount points made read-only, recursively: every cgroup mount, and
    /// `/sys/fs/cgroup` when it is a mount of its own (the tmpfs of a
    /// hybrid layout).
    pub read_only: Vec<CString>,
    /// Per entry of `read_only`: it lies below an earlier one, so a
    /// recursive `mount_setattr` of that one covered it already.
    covered: Vec<bool>,
    /// Files masked by an empty read-only file.
    pub masked_files: Vec<CString>,
}

/// What one script's namespace hides: `/proc/ID` of every guard process and
/// runner thread, built before its fork. The first is the runner's own: the
/// mask file is made in it.
#[derive(Debug, Clone, Default)]
pub struct ProcMasks {
    pub dirs: Vec<CString>,
    mask_file: CString,
}

impl ProcMasks {
    /// The masks of `ids` (the runner's pid first).
    pub fn of(ids: &[i32]) -> ProcMasks {
        let dirs: Vec<CString> = ids
            .iter()
            .map(|id| CString::new(format!("/proc/{id}")).expect("no NUL"))
            .collect();
        let mask_file = dirs
            .first()
            .map(|d| {
                let mut f = d.as_bytes().to_vec();
                f.extend_from_slice(b"/masked");
                CString::new(f).expect("no NUL")
            })
            .unwrap_or_default();
        ProcMasks { dirs, mask_file }
    }
}

impl PreparedConfinement {
    /// From the text of `/proc/self/mountinfo`.
    pub fn prepare(mountinfo: &str) -> PreparedConfinement {
        let mut read_only: Vec<String> = Vec::new();
        for line in mountinfo.lines() {
            let Some((head, tail)) = line.split_once(" - ") else {
                continue;
            };
            let fs_type = tail.split(' ').next().unwrap_or("");
            let Some(point) = head.split(' ').nth(4).map(unescape) else {
                continue;
            };
            if matches!(fs_type, "cgroup" | "cgroup2") || point == "/sys/fs/cgroup" {
                read_only.push(point);
            }
        }
        // Parents first: a recursive change of /sys/fs/cgroup covers its
        // children already; they are made read-only again, harmlessly.
        read_only.sort();
        read_only.dedup();
        let covered = read_only
            .iter()
            .map(|p| {
                read_only
                    .iter()
                    .any(|q| q != p && std::path::Path::new(p).starts_with(q))
            })
            .collect::<Vec<_>>();
        let (read_only, covered): (Vec<CString>, Vec<bool>) = read_only
            .into_iter()
            .zip(covered)
            .filter_map(|(p, c)| Some((CString::new(p).ok()?, c)))
            .unzip();
        PreparedConfinement {
            read_only,
            covered,
            // Where the kernel has it (CONFIG_MAGIC_SYSRQ).
            masked_files: [c"/proc/sysrq-trigger"]
                .into_iter()
                .filter(|f| std::path::Path::new(f.to_str().unwrap_or("")).exists())
                .map(CStr::to_owned)
                .collect(),
        }
    }

    /// Enters a mount namespace of the calling process's own and sets it up.
    /// Only in a forked child before its exec, while it still holds
    /// `CAP_SYS_ADMIN`, before the guard filter (which refuses `mount`).
    pub(crate) fn apply(&self, masks: &ProcMasks) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — raw syscalls over prepared strings.
        let fail = |errno: Errno| ApplyError {
            step: SandboxStep::Confine,
            errno,
        };
        // SAFETY: unshare(2) and mount(2) take integers and NUL-terminated
        // strings prepared before the fork (or static ones).
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(fail(Errno::last()));
            }
            // A slave of the host's tree: host mounts still reach the
            // script; nothing of the script's reaches the host.
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail(Errno::last()));
            }
        }
        // Parents come first; once `mount_setattr` made one read-only with
        // every mount below it, those below need no call of their own (the
        // remount fallback is not recursive: there each one is done).
        let mut recursive = false;
        for (p, covered) in self.read_only.iter().zip(&self.covered) {
            if *covered && recursive {
                continue;
            }
            recursive = read_only(p, true).map_err(fail)?;
        }
        let Some((first, rest)) = masks.dirs.split_first() else {
            return Ok(());
        };
        mask_dir(first).map_err(fail)?;
        // The runner's /proc/PID is writable for a moment: the mask file is
        // made there, bound over each masked file, then all made read-only.
        for f in &self.masked_files {
            match mask_file(&masks.mask_file, f) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        read_only(first, false).map_err(fail)?;
        for d in rest {
            match mask_dir(d).and_then(|()| read_only(d, false)) {
                // The guard was reaped since the mask was built: nothing to hide.
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(())
    }
}

/// Whether a script's mount namespace can be set up here: a child is
/// forked and does exactly what a script's does, then exits. For `check`
/// and `audit` (runs fail closed instead: a script whose namespace cannot
/// be set up does not start).
pub fn probe(c: &PreparedConfinement) -> Result<(), String> {
    let masks = ProcMasks::of(&[std::process::id() as i32]);
    // SAFETY: the child only applies prepared data with raw syscalls and
    // exits; fork_signals_blocked keeps the runner's handlers out of it.
    let pid = unsafe {
        crate::supervise::fork_signals_blocked(|| {
            let code = match c.apply(&masks) {
                Ok(()) => 0,
                Err(e) => e.errno as i32,
            };
            libc::_exit(code)
        })
    }
    .map_err(|e| format!("cannot fork a probe: {e}"))?;
    let mut status = 0;
    // SAFETY: our own child, waited for once.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(Errno::from_raw(errno).to_string()),
        None => Err("the probe was killed".into()),
    }
}

/// What a failed probe means for the operator.
pub fn unavailable(why: &str) -> String {
    format!("a script's own mount namespace cannot be set up here ({why}): scripts would not start (the sandbox fails closed); the cgroup tree and the guards' /proc entries are kept out of a script's reach this way (SPEC §8). Run quiesce where it may create mount namespaces (CAP_SYS_ADMIN, no seccomp profile refusing unshare or mount), or pass --no-sandbox (loudly logged)")
}

/// An empty tmpfs over `dir` (made read-only by the caller).
fn mask_dir(dir: &CStr) -> Result<(), Errno> {
    // SAFETY: mount(2) with static and prepared NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            c"quiesce-guard".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            MASK_FLAGS,
            c"mode=0555,size=4k,nr_inodes=4".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Binds a new empty file `mask` over `file` and makes the bind read-only.
fn mask_file(mask: &CStr, file: &CStr) -> Result<(), Errno> {
    // SAFETY: open/close/mount on prepared NUL-terminated strings.
    unsafe {
        let fd = libc::open(
            mask.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o444,
        );
        if fd < 0 {
            return Err(Errno::last());
        }
        libc::close(fd);
        if libc::mount(
            mask.as_ptr(),
            file.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(Errno::last());
        }
    }
    read_only(file, false).map(drop)
}

/// Makes the mount at `path` read-only (`recursive`: and every mount below
/// it): `mount_setattr` (Linux 5.12), else a read-only bind remount of that
/// one mount. Whether `mount_setattr` did it.
fn read_only(path: &CStr, recursive: bool) -> Result<bool, Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(2) reads `attr` (ours, of the size passed) and a
    // NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(true);
    }
    if Errno::last() != Errno::ENOSYS {
        return Err(Errno::last());
    }
    let rec = if recursive { libc::MS_REC } else { 0 };
    // SAFETY: mount(2) with a prepared NUL-terminated path.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | MASK_FLAGS | rec,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(false)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |d: &[u8]| d.len() == 3 && d.iter().all(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && i + 3 < b.len() && octal(&b[i + 1..i + 4]) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys rw,nosuid - sysfs sysfs rw
31 30 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
32 31 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 31 0:29 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
34 25 0:30 / /mnt/odd\\040cg rw - cgroup2 cgroup2 rw
";

    #[test]
    fn every_cgroup_mount_and_the_cgroup_tmpfs_are_made_read_only() {
        let c = PreparedConfinement::prepare(HYBRID);
        let got: Vec<&str> = c.read_only.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            got,
            [
                "/mnt/odd cg",
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/freezer",
                "/sys/fs/cgroup/unified"
            ]
        );
        // The recursive change of /sys/fs/cgroup covers the two below it.
        assert_eq!(c.covered, [false, false, true, true]);
    }

    #[test]
    fn the_mask_file_is_made_in_the_runners_own_directory() {
        let m = ProcMasks::of(&[10, 11]);
        assert_eq!(m.dirs, [c"/proc/10".to_owned(), c"/proc/11".to_owned()]);
        assert_eq!(m.mask_file, c"/proc/10/masked".to_owned());
    }
}
