//! The freeze threads and the calls they make (SPEC.md §6.1–§6.2): one
//! thread per mount of the widest stage, so the calls of a stage are all in
//! flight at once, each recorded the instant it returns; the window
//! (window/freeze.rs) issues the calls, waits for them and gives up on them.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::guard::{self, Slot, Taken};
use super::ioctl::FreezeOps;
use super::watchdog::{self, SharedState};

/// How many times a `FITHAW` that fails is issued before the mount is
/// reported still frozen (`FsFreezeFailed`), and the pause between tries.
pub const THAW_ATTEMPTS: u32 = 3;
const THAW_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Stack of a freeze thread: it makes one ioctl at a time.
const FREEZE_THREAD_STACK: usize = 128 * 1024;

/// Thaws `fd`, retrying a failure a bounded number of times. `EINVAL` (not
/// frozen: someone thawed it already) counts as thawed.
pub fn thaw_retrying(ops: &dyn FreezeOps, fd: RawFd) -> Result<(), Errno> {
    let mut last = Ok(());
    for attempt in 0..THAW_ATTEMPTS {
        if attempt > 0 {
            thread::sleep(THAW_RETRY_PAUSE);
        }
        match ops.thaw(fd) {
            Ok(()) | Err(Errno::EINVAL) => return Ok(()),
            Err(e) => last = Err(e),
        }
    }
    last
}

// One freeze call's life (`Call::state`). The window hands a call out
// (ISSUED), its thread takes it (RUNNING) and returns (DONE: the window
// owns the result). When the window gives up on it first (a failure, a
// deadline or a signal in its stage) it is ABANDONED: its thread then owns a
// success and thaws it itself, and marks the call LATE once it returned.
pub(super) const UNUSED: u8 = 0;
pub(super) const ISSUED: u8 = 1;
pub(super) const RUNNING: u8 = 2;
pub(super) const DONE: u8 = 3;
pub(super) const ABANDONED: u8 = 4;
pub(super) const LATE: u8 = 5;

pub(super) const NO_SLOT: usize = usize::MAX;
pub(super) const NO_THAW: i32 = -1;
/// What a call abandoned before its thread took it answers: it never ran.
pub(super) const NEVER_RAN: i32 = libc::ECANCELED;

/// One mount's freeze call, shared by the window and the freeze threads;
/// plain atomics, so neither side allocates or locks inside the window.
pub(super) struct Call {
    pub(super) state: AtomicU8,
    /// 0, or the errno `FIFREEZE` returned (valid from DONE or LATE on).
    pub(super) errno: AtomicI32,
    /// The guard slot armed on success ([`NO_SLOT`] otherwise).
    pub(super) slot: AtomicUsize,
    /// Nanoseconds since [`Crew::base`]: the ioctl issued, and returned.
    pub(super) began: AtomicU64,
    pub(super) ended: AtomicU64,
    /// What its thread's own thaw said ([`NO_THAW`], 0 or the errno).
    pub(super) self_thaw: AtomicI32,
}

impl Call {
    pub(super) fn new() -> Call {
        Call {
            state: AtomicU8::new(UNUSED),
            errno: AtomicI32::new(0),
            slot: AtomicUsize::new(NO_SLOT),
            began: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            self_thaw: AtomicI32::new(NO_THAW),
        }
    }

    pub(super) fn self_thaw(&self) -> Option<Result<(), Errno>> {
        match self.self_thaw.load(Ordering::SeqCst) {
            NO_THAW => None,
            0 => Some(Ok(())),
            e => Some(Err(Errno::from_raw(e))),
        }
    }
}

pub(super) const NO_JOB: usize = usize::MAX;
pub(super) const STOP: usize = usize::MAX - 1;

/// What the freeze threads share with the window, built in `prepare`.
pub(super) struct Crew {
    pub(super) ops: Arc<dyn FreezeOps>,
    pub(super) shared: Arc<SharedState>,
    /// The threads' own references to the descriptors (index = target): a
    /// `FIFREEZE` still blocked in the kernel keeps its descriptor, so its
    /// number can never be closed or reused under it.
    pub(super) fds: Vec<Arc<OwnedFd>>,
    pub(super) calls: Vec<Call>,
    /// One per thread: the target it is to freeze next, [`NO_JOB`] or [`STOP`].
    pub(super) mailboxes: Vec<AtomicUsize>,
    /// The thread that waits for the calls (the one that prepared the window).
    pub(super) waiter: thread::Thread,
    pub(super) base: Instant,
}

impl Crew {
    pub(super) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub(super) fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// One `FIFREEZE`, recorded the instant it returns, in the thread that made
/// it: the watchdog's page and the signal guard learn of a freeze of ours
/// only when it succeeded, and of nothing else (EBUSY: another tool's).
fn run_call(crew: &Crew, i: usize) {
    let call = &crew.calls[i];
    if call
        .state
        .compare_exchange(ISSUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The window gave up on it before it began: no freeze of this mount.
        crew.shared.set_state(i, watchdog::IDLE);
        call.errno.store(NEVER_RAN, Ordering::SeqCst);
        call.state.store(LATE, Ordering::SeqCst);
        return;
    }
    let fd = crew.fds[i].as_raw_fd();
    call.began.store(crew.now_ns(), Ordering::SeqCst);
    let result = crew.ops.freeze(fd);
    call.ended.store(crew.now_ns(), Ordering::SeqCst);
    if crate::fault::active("freeze-return-delay") {
        // Widens the gap between the call's return and its record, which a
        // signal or a SIGKILL could otherwise only hit by luck.
        thread::sleep(Duration::from_secs(1));
    }
    let slot = match result {
        Ok(()) => {
            // Unless the watchdog thawed it first (its deadline passed while
            // this call was in flight in a stopped runner): then it is not
            // frozen any more, and marking it so would have the watchdog
            // look at it again for nothing.
            crew.shared.mark_frozen(i);
            guard::arm(fd)
        }
        Err(Errno::EBUSY) => {
            crew.shared.set_state(i, watchdog::NOT_OURS);
            None
        }
        Err(_) => {
            crew.shared.set_state(i, watchdog::IDLE);
            None
        }
    };
    call.slot
        .store(slot.map_or(NO_SLOT, Slot::raw), Ordering::SeqCst);
    call.errno
        .store(result.err().map_or(0, |e| e as i32), Ordering::SeqCst);
    // A signal is thawing everything (it raised `closing` before it thawed
    // the table, and the slot was armed before this look): thaw it now.
    let closing = result.is_ok() && guard::closing();
    if closing {
        self_thaw(crew, i, slot);
    }
    let owned_by_window = call
        .state
        .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !owned_by_window {
        // The window gave up on this call: nobody else thaws it in time.
        if result.is_ok() && !closing {
            self_thaw(crew, i, slot);
        }
        call.state.store(LATE, Ordering::SeqCst);
    }
}

/// The freeze thread's own thaw of mount `i`, whose `FIFREEZE` succeeded.
fn self_thaw(crew: &Crew, i: usize, slot: Option<Slot>) {
    let fd = crew.fds[i].as_raw_fd();
    let r = match slot.map(guard::take) {
        Some(Taken::Thawed(Ok(()))) => Ok(()),
        _ => thaw_retrying(&*crew.ops, fd),
    };
    if r.is_ok() {
        crew.shared.set_state(i, watchdog::THAWED);
    } else {
        // Still frozen: armed again for a later signal, and the descriptor
        // kept open for the life of the process so that number stays this
        // mount's. The watchdog still sees FROZEN.
        guard::arm(fd);
        std::mem::forget(crew.fds[i].clone());
    }
    crew.calls[i]
        .self_thaw
        .store(r.err().map_or(0, |e| e as i32), Ordering::SeqCst);
}

/// A freeze thread's life with its crew: wait for a call, make it, wake
/// the window.
fn worker_main(crew: &Crew, me: usize) {
    loop {
        match crew.mailboxes[me].swap(NO_JOB, Ordering::SeqCst) {
            NO_JOB => thread::park(),
            STOP => return,
            i => {
                run_call(crew, i);
                crew.waiter.unpark();
            }
        }
    }
}

/// The freeze threads, started before the crew they serve exists: a run
/// that has scripts starts them before its first script (SPEC §8: a script
/// can only be kept from signalling the runner's threads that exist when it
/// is forked — a thread id names its whole process to `kill(2)`). Each
/// thread waits, every signal blocked (signals are for the main thread,
/// whose handler thaws), until a window hands it its crew.
pub struct FreezeThreads {
    hand: Arc<Hand>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// How a window hands its crew to threads already running.
#[derive(Default)]
struct Hand {
    crew: OnceLock<Arc<Crew>>,
    stop: AtomicBool,
}

fn idle_main(hand: &Hand, me: usize) {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
    loop {
        if hand.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(crew) = hand.crew.get() {
            return worker_main(crew, me);
        }
        thread::park();
    }
}

impl FreezeThreads {
    /// Starts `n` idle freeze threads.
    pub fn start(n: usize) -> std::io::Result<FreezeThreads> {
        if crate::fault::active("freeze-thread-spawn") {
            // What TasksMax or RLIMIT_NPROC make of a thread spawn.
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let mut t = FreezeThreads {
            hand: Arc::new(Hand::default()),
            threads: Vec::with_capacity(n),
        };
        for me in 0..n {
            let hand = t.hand.clone();
            let spawned = thread::Builder::new()
                .name("quiesce-freeze".into())
                .stack_size(FREEZE_THREAD_STACK)
                .spawn(move || idle_main(&hand, me));
            match spawned {
                Ok(h) => t.threads.push(h),
                Err(e) => {
                    t.dismiss();
                    return Err(e);
                }
            }
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// No window came: the threads end.
    pub fn dismiss(mut self) {
        self.hand.stop.store(true, Ordering::SeqCst);
        for h in self.threads.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for FreezeThreads {
    fn drop(&mut self) {
        self.hand.stop.store(true, Ordering::SeqCst);
        for h in &self.threads {
            h.thread().unpark();
        }
    }
}

/// The freeze threads at work for one window: as many as the widest stage,
/// so a stage's calls are all in flight at once and a call that blocks can
/// be abandoned at its deadline. If an abandoned call later succeeds while
/// the runner lives, its thread thaws that mount itself; once the runner is
/// gone, the watchdog does (it waits for the whole thread group).
pub(super) struct FreezeWorkers {
    pub(super) crew: Arc<Crew>,
    threads: FreezeThreads,
}

impl FreezeWorkers {
    /// Hands `crew` to `threads` (which must be as many as its mailboxes).
    pub(super) fn start(crew: Arc<Crew>, threads: FreezeThreads) -> FreezeWorkers {
        debug_assert_eq!(threads.len(), crew.mailboxes.len());
        let _ = threads.hand.crew.set(crew.clone());
        for h in &threads.threads {
            h.thread().unpark();
        }
        FreezeWorkers { crew, threads }
    }

    /// Hands mount `i` to thread `k`.
    pub(super) fn issue(&self, k: usize, i: usize) {
        self.crew.mailboxes[k].store(i, Ordering::SeqCst);
        self.threads.threads[k].thread().unpark();
    }

    /// Stops the threads and joins those not blocked in the kernel (`stuck`:
    /// targets whose call has not returned; their thread ends once it does).
    pub(super) fn stop(&mut self, stuck: &[usize]) {
        for (k, h) in self.threads.threads.iter().enumerate() {
            self.crew.mailboxes[k].store(STOP, Ordering::SeqCst);
            h.thread().unpark();
        }
        if stuck.is_empty() {
            for h in self.threads.threads.drain(..) {
                let _ = h.join();
            }
        }
    }
}
