//! The thaw table: the descriptors of every mount this window has frozen,
//! readable from a signal handler. The handler, the panic hook, the freeze
//! worker and the normal thaw path all take descriptors out of it with an
//! atomic swap, so each mount is thawed once, whoever gets there first.
//!
//! Only what this run froze is ever armed: a slot is filled the moment a
//! `FIFREEZE` of ours returned success, never before the call (a call that
//! answers EBUSY means another tool froze it, and a handler running in
//! between must not thaw that tool's freeze). A call still in flight when a
//! signal comes is covered by its worker instead: the handler raises
//! [`closing`] *before* it thaws the table, and the worker arms *before* it
//! looks at `closing`, both sequentially consistent, so either the handler
//! sees the new slot or the worker sees the flag and thaws it itself.
//!
//! INVARIANT: `shut` and `thaw_all_armed` are async-signal-safe: atomics and
//! one ioctl per mount, no allocation, no lock.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use nix::errno::Errno;

use super::ioctl::thaw_fd;

/// More mounts than any VM has; a plan larger than this is refused up front.
pub const MAX_MOUNTS: usize = 1024;

static FDS: [AtomicI32; MAX_MOUNTS] = [const { AtomicI32::new(-1) }; MAX_MOUNTS];
/// What the thaw of a slot taken by [`thaw_all_armed`] returned: `NO_RESULT`
/// until it returned, then 0 or the errno.
static RESULTS: [AtomicI32; MAX_MOUNTS] = [const { AtomicI32::new(NO_RESULT) }; MAX_MOUNTS];
static LEN: AtomicUsize = AtomicUsize::new(0);
/// A signal or a panic is thawing everything: nothing may stay frozen.
static CLOSING: AtomicBool = AtomicBool::new(false);

const NO_RESULT: i32 = -1;

/// A slot of the thaw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

impl Slot {
    /// The slot as a number, for a freeze thread to hand over in an atomic.
    pub fn raw(self) -> usize {
        self.0
    }

    /// A slot handed over by [`Slot::raw`]; `None` for a number no slot has.
    pub fn from_raw(i: usize) -> Option<Slot> {
        (i < MAX_MOUNTS).then_some(Slot(i))
    }
}

/// Who holds a slot's mount now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Still armed: the caller now owns the thaw.
    Armed(RawFd),
    /// A handler (or the worker) thawed it; this is what its `FITHAW` said.
    Thawed(Result<(), Errno>),
    /// A handler took it and its `FITHAW` has not returned yet.
    InProgress,
}

/// Arms `fd`, whose `FIFREEZE` just succeeded: from now on any way out
/// thaws it. The caller checks [`closing`] right after.
pub fn arm(fd: RawFd) -> Option<Slot> {
    let i = LEN.fetch_add(1, Ordering::SeqCst);
    if i >= MAX_MOUNTS {
        LEN.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    RESULTS[i].store(NO_RESULT, Ordering::SeqCst);
    FDS[i].store(fd, Ordering::SeqCst);
    Some(Slot(i))
}

/// Takes the slot's mount out of the table without thawing it.
pub fn take(slot: Slot) -> Taken {
    let fd = FDS[slot.0].swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        return Taken::Armed(fd);
    }
    match RESULTS[slot.0].load(Ordering::SeqCst) {
        NO_RESULT => Taken::InProgress,
        0 => Taken::Thawed(Ok(())),
        e => Taken::Thawed(Err(Errno::from_raw(e))),
    }
}

/// Whether a signal or a panic has started thawing everything.
pub fn closing() -> bool {
    CLOSING.load(Ordering::SeqCst)
}

/// What a signal handler and the panic hook call: raise [`closing`] first
/// (see the module docs for why the order matters), then thaw the table.
pub fn shut() -> usize {
    CLOSING.store(true, Ordering::SeqCst);
    thaw_all_armed()
}

/// Thaws everything still armed, newest first (reverse freeze order), and
/// records each result for [`take`]. Returns how many thaws were issued.
pub fn thaw_all_armed() -> usize {
    let mut n = 0;
    let len = LEN.load(Ordering::SeqCst).min(MAX_MOUNTS);
    for i in (0..len).rev() {
        let fd = FDS[i].swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            let r = match thaw_fd(fd) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            RESULTS[i].store(r, Ordering::SeqCst);
            n += 1;
        }
    }
    n
}

/// Empties the table once a window is over and nothing of it can still be
/// frozen (every slot was taken by its thaw). Kept as it is otherwise: a
/// mount whose thaw failed stays armed (its descriptor is kept open for the
/// life of the process), so a later signal retries it.
pub fn reset_if(cond: bool) {
    if cond && !any_armed() {
        LEN.store(0, Ordering::SeqCst);
        CLOSING.store(false, Ordering::SeqCst);
    }
}

/// Whether any descriptor is still armed.
pub fn any_armed() -> bool {
    let len = LEN.load(Ordering::SeqCst).min(MAX_MOUNTS);
    FDS[..len].iter().any(|f| f.load(Ordering::SeqCst) >= 0)
}
