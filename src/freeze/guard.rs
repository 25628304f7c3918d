//! The thaw table: the descriptors of every mount the window is freezing or
//! has frozen, readable from a signal handler. The handler, the panic hook and
//! the normal thaw path all take descriptors out of it with an atomic swap, so
//! each mount is thawed once, whoever gets there first.
//!
//! INVARIANT: `thaw_all_armed` is async-signal-safe: atomics and one ioctl per
//! mount, no allocation, no lock.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use super::ioctl::thaw_fd;

/// More mounts than any VM has; a plan larger than this is refused up front.
pub const MAX_MOUNTS: usize = 1024;

static FDS: [AtomicI32; MAX_MOUNTS] = [const { AtomicI32::new(-1) }; MAX_MOUNTS];
static LEN: AtomicUsize = AtomicUsize::new(0);

/// A slot of the thaw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

/// Arms `fd` before its `FIFREEZE` is issued: from then on any way out thaws it
/// (a thaw of a mount that is not frozen returns EINVAL and is harmless).
pub fn arm(fd: RawFd) -> Option<Slot> {
    let i = LEN.load(Ordering::SeqCst);
    if i >= MAX_MOUNTS {
        return None;
    }
    FDS[i].store(fd, Ordering::SeqCst);
    LEN.store(i + 1, Ordering::SeqCst);
    Some(Slot(i))
}

/// Takes the descriptor out of the table without thawing: for a mount whose
/// freeze failed (EBUSY: someone else froze it; never thaw what we did not
/// freeze). Returns `None` if a handler already took it.
pub fn disarm(slot: Slot) -> Option<RawFd> {
    let fd = FDS[slot.0].swap(-1, Ordering::SeqCst);
    (fd >= 0).then_some(fd)
}

/// Thaws everything still armed, newest first (reverse freeze order).
/// Returns how many thaw ioctls were issued.
pub fn thaw_all_armed() -> usize {
    let mut n = 0;
    let len = LEN.load(Ordering::SeqCst).min(MAX_MOUNTS);
    for i in (0..len).rev() {
        let fd = FDS[i].swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            let _ = thaw_fd(fd);
            n += 1;
        }
    }
    n
}

/// Empties the table once a window is over. With `cond` false (a freeze call
/// still blocked in the kernel) the table is kept, so a later signal still
/// thaws that mount once the call completes.
pub fn reset_if(cond: bool) {
    if cond {
        thaw_all_armed();
        LEN.store(0, Ordering::SeqCst);
    }
}

/// Whether any descriptor is still armed.
pub fn any_armed() -> bool {
    let len = LEN.load(Ordering::SeqCst).min(MAX_MOUNTS);
    FDS[..len].iter().any(|f| f.load(Ordering::SeqCst) >= 0)
}
