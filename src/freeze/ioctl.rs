//! The two ioctls of the freeze window, and a thin trait over them so the
//! call order (freeze → run → thaw, thaw before kill) can be tested with a
//! recording double, as youki does for its syscalls.

use std::os::fd::RawFd;

use nix::errno::Errno;

/// `_IOWR('X', 119, int)` from `<linux/fs.h>`.
pub const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)` from `<linux/fs.h>`.
pub const FITHAW: libc::c_ulong = 0xC004_5878;

/// The freeze/thaw operations the window needs.
pub trait FreezeOps: Send + Sync {
    fn freeze(&self, fd: RawFd) -> Result<(), Errno>;
    fn thaw(&self, fd: RawFd) -> Result<(), Errno>;
}

/// The real ioctls.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelFreeze;

impl FreezeOps for KernelFreeze {
    fn freeze(&self, fd: RawFd) -> Result<(), Errno> {
        freeze_fd(fd)
    }
    fn thaw(&self, fd: RawFd) -> Result<(), Errno> {
        thaw_fd(fd)
    }
}

/// `FIFREEZE` on a descriptor of the mount point. May block (writers
/// draining, fanotify permission events): callers bound it with a deadline.
pub fn freeze_fd(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: FIFREEZE takes no pointer argument that the kernel dereferences
    // (the int argument is ignored); an invalid fd yields EBADF.
    let r = unsafe { libc::ioctl(fd, FIFREEZE as _, 0) };
    Errno::result(r).map(drop)
}

/// `FITHAW`. Async-signal-safe: one syscall, no allocation, so the signal
/// handler and the watchdog use it too. `EINVAL` means "was not frozen".
pub fn thaw_fd(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: as for FIFREEZE: no memory is passed to the kernel.
    let r = unsafe { libc::ioctl(fd, FITHAW as _, 0) };
    Errno::result(r).map(drop)
}
