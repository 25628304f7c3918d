//! The mounts a window freezes: each one's descriptor, opened before the
//! window and checked against the plan, and the stages they come in.

use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;

use crate::freeze::error::FreezeError;
use crate::freeze::mounts::PlanEntry;

/// A mount to freeze, with its descriptor opened before the window. The
/// descriptor is shared with the freeze worker: a `FIFREEZE` still blocked in
/// the kernel keeps its own reference, so its fd number can never be closed
/// or reused under it (a late thaw always lands on that mount).
#[derive(Debug)]
pub struct MountTarget {
    pub path: PathBuf,
    pub device: String,
    pub fs_type: String,
    pub fd: Arc<OwnedFd>,
    /// Its stage in the plan (SPEC.md §6.1): the mounts of one stage are
    /// frozen concurrently; targets come in stage order.
    pub stage: u32,
}

impl MountTarget {
    /// Opens the mount point (a read-only directory open: harmless even on a
    /// frozen filesystem), in stage 1. Failure is `UnableToOpenMount` (123).
    pub fn open(
        path: PathBuf,
        device: String,
        fs_type: String,
    ) -> Result<MountTarget, FreezeError> {
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| FreezeError::Open {
            path: path.clone(),
            errno,
        })?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(MountTarget {
            path,
            device,
            fs_type,
            fd: Arc::new(fd),
            stage: 1,
        })
    }

    /// Opens a mount of the plan and checks that the descriptor is still on
    /// the planned mount: the pre-script ran since the plan was made, and a
    /// mount point unmounted in between opens its parent's filesystem, which
    /// must never be frozen in its place. The mount id (statx) identifies the
    /// mount; when it changed, the same filesystem remounted there (same
    /// `st_dev` as the planned `major:minor`) is still accepted. btrfs
    /// subvolumes have an `st_dev` of their own, so for them only the mount
    /// id can confirm. A mismatch is `UnableToOpenMount` (123). The target
    /// is in the entry's stage.
    pub fn open_planned(e: &PlanEntry) -> Result<MountTarget, FreezeError> {
        let mount_id = e.mount_id;
        let mut t = MountTarget::open(e.path.clone(), e.device.clone(), e.fs_type.clone())?;
        t.stage = e.stage.unwrap_or(1);
        let changed = |why: String| FreezeError::MountChanged {
            path: t.path.clone(),
            device: t.device.clone(),
            why,
        };
        let id = mount_id_of(t.fd.as_raw_fd())
            .map_err(|e| changed(format!("cannot read its mount id: {e}")))?;
        if id == u64::from(mount_id) {
            return Ok(t);
        }
        let st = nix::sys::stat::fstat(t.fd.as_raw_fd())
            .map_err(|e| changed(format!("cannot stat it: {e}")))?;
        let dev = crate::freeze::state::dev_string(st.st_dev);
        if dev == t.device {
            return Ok(t);
        }
        Err(changed(format!(
            "it is now mount {id} on device {dev}, planned mount {mount_id}"
        )))
    }
}

/// `stx_mnt_id` of an open descriptor.
fn mount_id_of(fd: RawFd) -> Result<u64, Errno> {
    // SAFETY: a zeroed statx buffer we own; the empty path with AT_EMPTY_PATH
    // makes statx describe `fd` itself.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the path is a static NUL-terminated empty string.
    let r = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    Errno::result(r)?;
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(stx.stx_mnt_id)
}

/// The stages of `targets` (consecutive runs of one stage number), or what
/// is wrong with their order.
pub(super) fn stage_ranges(targets: &[MountTarget]) -> Result<Vec<Range<usize>>, String> {
    let mut stages: Vec<Range<usize>> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match stages.last_mut() {
            Some(r) if targets[r.start].stage == t.stage => r.end = i + 1,
            Some(r) if targets[r.start].stage > t.stage => {
                return Err(format!(
                    "{} (stage {}) comes after {} (stage {}): the mounts are not in stage order",
                    t.path.display(),
                    t.stage,
                    targets[r.start].path.display(),
                    targets[r.start].stage
                ))
            }
            _ => stages.push(i..i + 1),
        }
    }
    Ok(stages)
}
