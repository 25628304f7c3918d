//! The runner's signal handling (SPEC.md §6.4 point 3, §7).
//!
//! One action for the terminating signals: it records the signal, thaws
//! every armed mount on its pre-opened descriptor (async-signal-safe), and
//! wakes the main loop through a self-pipe, which kills the children (thaw
//! first, then kill), reports and exits 128+N. Fatal signals (SEGV, BUS, ILL,
//! ABRT, FPE, TRAP, SYS) thaw and then take their default action. A panic
//! hook thaws too.
//!
//! The terminating signals are registered through `signal-hook` (its
//! handler runs our action; `SA_RESTART` is harmless here: the waits that
//! must notice a signal are `poll`/`ppoll`, which the kernel never
//! restarts). The fatal ones keep a plain `sigaction`: they need
//! `SA_ONSTACK`, so a stack overflow's SIGSEGV still runs on the alternate
//! stack and thaws, and `signal-hook` neither sets that flag nor lets SEGV,
//! ILL or FPE be registered through its checked API.
//!
//! Which signal is which: every signal whose default action ends the process
//! thaws first. Those a process gets asked to stop by (TERM, INT, HUP, QUIT,
//! USR1/2, PIPE, ALRM, the job-control stops, PWR, the real-time signals) and
//! the resource-limit ones (XCPU, XFSZ: the limit is the operator's way of
//! saying stop) end the run cleanly with 128+N, post-script included. TRAP
//! (a debugger breakpoint or `int3`) and SYS (a seccomp or bad-syscall kill)
//! mean the process itself is broken: thaw, then the default action.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::freeze::guard;

/// Signals that end a run cleanly (after thawing): 128+N.
pub const TERMINATING: [Signal; 14] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGPWR,
];

/// Signals of a crash: thaw, then the default action (core or death).
pub const FATAL: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGABRT,
    Signal::SIGFPE,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// The real-time signals (`SIGRTMIN..=SIGRTMAX` as libc numbers them, past
/// the ones glibc keeps for itself): terminating, like TERM.
pub fn realtime() -> std::ops::RangeInclusive<libc::c_int> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Process group of the child running right now (0: none). The panic hook
/// kills it after thawing: a bug must not leave a script or the snapshot
/// command running. The child is unreaped while it is tracked, so the group
/// id cannot have been recycled.
static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);

/// Tracks the running child's process group (its pid: children run in their
/// own session) for the panic hook; 0 clears it.
pub fn track_child_group(pgid: i32) {
    CHILD_GROUP.store(pgid, Ordering::SeqCst);
}
static PENDING: AtomicI32 = AtomicI32::new(0);

/// The action of a terminating signal, run by `signal-hook`'s handler.
fn on_terminating(sig: libc::c_int) {
    // INVARIANT: async-signal-safe only: atomics, ioctl, write.
    // The signal is recorded before the thaw: a freeze that completes while
    // this runs then sees it (and `guard::closing`) and is thawed by its worker.
    let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    guard::shut();
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [1u8];
        // SAFETY: writing one byte from a live stack buffer; the pipe is
        // non-blocking, so a full pipe just drops the wake-up (one is enough).
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
}

extern "C" fn on_fatal(sig: libc::c_int) {
    // INVARIANT: async-signal-safe only.
    guard::shut();
    // SAFETY: restoring the default disposition and re-raising are
    // async-signal-safe; the signal is blocked while we run, so it is
    // delivered with its default action as soon as the handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The read end of the self-pipe: readable once a terminating signal came.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Waits up to `d`; whether a signal came (the wait is cut short).
    pub fn wait(&self, d: std::time::Duration) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.read.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = d.as_millis().min(i32::MAX as u128) as i32;
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)), Ok(n) if n > 0)
    }

    /// Consumes the wake-ups received so far, so that only a further signal
    /// interrupts the next wait (the post-script after a first signal).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

/// Installs the handlers and the panic hook. Call once, early, before any
/// child is spawned or any mount is frozen; a later call only makes a new
/// self-pipe (the handlers stay).
pub fn install() -> std::io::Result<SignalPipe> {
    if crate::fault::active("signals-install") {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    PIPE_WRITE.store(std::os::fd::AsRawFd::as_raw_fd(&write), Ordering::SeqCst);
    static HANDLERS: std::sync::OnceLock<Result<(), std::io::ErrorKind>> =
        std::sync::OnceLock::new();
    HANDLERS
        .get_or_init(|| install_handlers().map_err(|e| e.kind()))
        .map_err(std::io::Error::from)?;
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Thaw before anything else: printing the panic may write to a
            // file on a frozen filesystem. Then kill the running child's
            // group (thaw first: it may be blocked on a frozen filesystem).
            guard::shut();
            let pgid = CHILD_GROUP.swap(0, Ordering::SeqCst);
            if pgid > 1 {
                // SAFETY: kill(2) with integers; the group leader is our
                // unreaped child, so the group id is not recycled.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            previous(info);
        }));
    });
    Ok(SignalPipe {
        read,
        _write: write,
    })
}

fn install_handlers() -> std::io::Result<()> {
    let terminating = TERMINATING
        .iter()
        .map(|s| *s as libc::c_int)
        .chain(realtime());
    for sig in terminating {
        // SAFETY: the action only makes async-signal-safe calls (atomics,
        // the thaw ioctls, one write) and allocates nothing.
        unsafe { signal_hook::low_level::register(sig, move || on_terminating(sig)) }?;
    }
    // SA_ONSTACK: a stack overflow's SIGSEGV runs on the alternate stack that
    // the Rust runtime sets up. The full mask: nothing interrupts the thaw.
    let fatal = SigAction::new(
        SigHandler::Handler(on_fatal),
        SaFlags::SA_ONSTACK,
        SigSet::all(),
    );
    for sig in FATAL {
        // SAFETY: the handler only makes async-signal-safe calls.
        unsafe { sigaction(sig, &fatal) }?;
    }
    Ok(())
}

/// The first terminating signal received, if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// The write end's raw descriptor (children must not inherit it; it is
/// close-on-exec).
pub fn pipe_write_fd() -> RawFd {
    PIPE_WRITE.load(Ordering::SeqCst)
}
