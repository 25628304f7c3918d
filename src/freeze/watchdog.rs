//! The watchdog (SPEC.md §6.4 point 4): the layer of the thaw guarantee that
//! acts when the runner cannot — killed (SIGKILL, OOM), stopped (SIGSTOP, a
//! debugger, a cgroup freezer) or stuck.
//!
//! It is forked before the run's first script, idle, so that every script's
//! guard filter can name it (SPEC §8: a script, or a holder it leaves
//! running, must not be able to kill it), in its own session (outside the
//! runner's process group, so a group-wide signal does not take both), with
//! a pidfd of the runner. Just before the first freeze the runner *arms* it:
//! it writes the mount descriptors' numbers and the window's deadline into
//! the page they share and says so on the control socket; the watchdog
//! takes its own copies of those descriptors from the runner
//! (`pidfd_getfd`) and answers. The runner marks each mount attempting /
//! frozen / thawed in the page.
//!
//! When the runner dies the watchdog thaws every mount marked attempting or
//! frozen, newest first, then kills the snapshot command's process group.
//! At the window's deadline (plus a margin) it thaws every mount whose
//! `FIFREEZE` the runner issued — frozen, or attempting: a call still in
//! flight may complete at any moment, in a runner that is stopped and will
//! never look — and from then on keeps thawing, every few tens of
//! milliseconds, whatever becomes frozen, until the runner dismisses it or is
//! gone. What it thawed, and when, is in the page, for the runner's status.
//!
//! INVARIANT: the watchdog child makes only async-signal-safe raw syscalls and
//! never allocates: it is forked from a process that may have other threads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::guard::MAX_MOUNTS;
use super::ioctl::FITHAW;

/// Per-mount states in the shared page.
pub const IDLE: u8 = 0;
pub const ATTEMPTING: u8 = 1;
pub const FROZEN: u8 = 2;
pub const THAWED: u8 = 3;
/// `FIFREEZE` said EBUSY: frozen by someone else, never thawed by us.
pub const NOT_OURS: u8 = 4;

/// What the watchdog did, as recorded in the shared page.
pub const ACTED_NONE: i32 = 0;
pub const ACTED_RUNNER_DIED: i32 = 1;
pub const ACTED_DEADLINE: i32 = 2;

#[repr(C)]
struct Page {
    /// Process group of the snapshot command while it runs, else 0.
    snapshot_pgid: AtomicI32,
    /// ACTED_* once the watchdog thawed.
    acted: AtomicI32,
    /// How many mounts the watchdog thawed.
    thawed: AtomicI32,
    states: [AtomicU8; MAX_MOUNTS],
    /// Set by the runner when it arms the watchdog: how many mounts, the
    /// runner's descriptor of each, and the window's deadline
    /// (CLOCK_MONOTONIC nanoseconds, the margin included).
    armed_mounts: AtomicI32,
    deadline_ns: AtomicI64,
    runner_fds: [AtomicI32; MAX_MOUNTS],
    /// When the watchdog thawed mount i (CLOCK_MONOTONIC ns; 0: it did not).
    thawed_at_ns: [AtomicU64; MAX_MOUNTS],
}

/// The page shared by the runner and its watchdog (`MAP_SHARED|MAP_ANONYMOUS`
/// survives the fork as one physical page).
pub struct SharedState {
    page: *mut Page,
}

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for SharedState {}
// SAFETY: as above.
unsafe impl Sync for SharedState {}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `Instant` reads).
pub fn monotonic_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// `at` as CLOCK_MONOTONIC nanoseconds.
pub fn instant_ns(at: Instant) -> i64 {
    let now = Instant::now();
    let ns = monotonic_ns();
    if at >= now {
        ns + at.duration_since(now).as_nanos() as i64
    } else {
        ns - now.duration_since(at).as_nanos() as i64
    }
}

/// CLOCK_MONOTONIC nanoseconds as an `Instant`.
pub fn ns_instant(ns: i64) -> Instant {
    let now = Instant::now();
    let delta = monotonic_ns() - ns;
    if delta >= 0 {
        now - Duration::from_nanos(delta as u64)
    } else {
        now + Duration::from_nanos((-delta) as u64)
    }
}

impl SharedState {
    pub fn new() -> io::Result<SharedState> {
        let len = std::mem::size_of::<Page>();
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Anonymous mappings are zero-filled: every atomic starts at 0 (IDLE).
        Ok(SharedState { page: p.cast() })
    }

    /// The page as a shared mapping of `path` (a new file on tmpfs, 0600):
    /// the same atomics, and recovery can read what became of each mount
    /// after the runner and the watchdog are both gone. Stores to it are
    /// memory stores, not writes: nothing reaches a disk.
    pub fn in_file(path: &std::path::Path) -> io::Result<SharedState> {
        use std::os::unix::fs::OpenOptionsExt;
        let len = std::mem::size_of::<Page>();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        file.set_len(len as u64)?;
        // SAFETY: a fresh shared mapping of a file we just sized; no existing
        // memory is affected. The mapping outlives the descriptor.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The file was truncated to zero first: every atomic starts at 0.
        Ok(SharedState { page: p.cast() })
    }

    /// The first `n` per-mount states of a page file left by
    /// [`in_file`](SharedState::in_file).
    pub fn read_states(path: &std::path::Path, n: usize) -> io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        let at = std::mem::offset_of!(Page, states);
        if n > MAX_MOUNTS || bytes.len() < at + n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is too short for {n} mounts", path.display()),
            ));
        }
        Ok(bytes[at..at + n].to_vec())
    }

    fn page(&self) -> &Page {
        // SAFETY: the mapping lives as long as self and holds a zeroed Page,
        // a valid bit pattern for atomics.
        unsafe { &*self.page }
    }

    pub fn set_state(&self, i: usize, state: u8) {
        self.page().states[i].store(state, Ordering::SeqCst);
    }

    pub fn state(&self, i: usize) -> u8 {
        self.page().states[i].load(Ordering::SeqCst)
    }

    pub fn set_snapshot_pgid(&self, pgid: i32) {
        self.page().snapshot_pgid.store(pgid, Ordering::SeqCst);
    }

    /// When the watchdog thawed mount `i`, if it did.
    pub fn watchdog_thawed_at(&self, i: usize) -> Option<Instant> {
        match self.page().thawed_at_ns[i].load(Ordering::SeqCst) {
            0 => None,
            ns => Some(ns_instant(ns as i64)),
        }
    }

    /// Marks mount `i` frozen, unless the watchdog got there first (it
    /// thawed a call still marked attempting): whether it did.
    pub fn mark_frozen(&self, i: usize) -> bool {
        self.page().states[i]
            .compare_exchange(ATTEMPTING, FROZEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// ACTED_* and how many mounts the watchdog thawed.
    pub fn acted(&self) -> (i32, i32) {
        (
            self.page().acted.load(Ordering::SeqCst),
            self.page().thawed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `new`, not used afterwards.
        unsafe { libc::munmap(self.page.cast(), std::mem::size_of::<Page>()) };
    }
}

/// A filter the watchdog child installs on itself right after the fork
/// (its seccomp allow-list). Must be async-signal-safe; returns 0 or an errno.
pub type ChildFilter<'a> = &'a (dyn Fn() -> i32 + Sync);

/// The runner's handle on its watchdog.
pub struct Watchdog {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    control: Option<OwnedFd>,
    reaped: bool,
}

/// Margin past the window's deadline before the watchdog acts on its own: the
/// runner's own deadline thaws first; the watchdog is the backstop.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1000);

/// How long the runner waits for the watchdog's ready and armed answers.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Past the deadline, how often the watchdog thaws what became frozen (a
/// `FIFREEZE` completing late in a stopped runner is thawed within this).
pub const POLICING_INTERVAL_MS: i32 = 20;

/// Control bytes: runner → watchdog "armed, take the descriptors" and
/// "dismissed"; watchdog → runner "ready" and "holding them".
const ARM: u8 = b'A';
const DISMISS: u8 = b'D';
const READY: u8 = b'R';

/// Waits for one byte `want` on `fd`: EOF, silence or another byte means
/// the watchdog is not there.
fn wait_byte(fd: RawFd, want: u8, what: &str) -> io::Result<()> {
    let mut pfd = crate::supervise::pollfd(Some(fd));
    let ms = READY_TIMEOUT.as_millis() as i32;
    // SAFETY: one pollfd on our stack.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    let mut b = [0u8; 1];
    if n == 1 && nix::unistd::read(fd, &mut b) == Ok(1) && b[0] == want {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "the watchdog did not report {what} (it died or hung)"
    )))
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets `pid`'s `oom_score_adj` to -1000: the OOM killer must not take the
/// watchdog while a window may open (the runner lowers its own for the
/// window; the watchdog, forked earlier, does not inherit that).
fn shield_from_oom(pid: libc::pid_t) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000")
}

impl Watchdog {
    /// Forks the watchdog, idle until [`Watchdog::arm`]: before the run's
    /// first script, so every script's filter protects it.
    pub fn spawn(shared: &SharedState, filter: Option<ChildFilter<'_>>) -> io::Result<Watchdog> {
        // Everything the child needs is prepared here, before the fork.
        let runner_pidfd = pidfd_open(std::process::id() as libc::pid_t)?;
        // A socket pair, not a pipe: both ways (arm, its answer), and the
        // runner's bytes are sent with MSG_NOSIGNAL, so a watchdog that was
        // killed costs an EPIPE, never a SIGPIPE.
        let (ctl_child, ctl_runner) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let devnull = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        // SAFETY: `open` just returned it.
        let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };
        let mut keep = [runner_pidfd.as_raw_fd(), ctl_child.as_raw_fd()];
        keep.sort_unstable();
        let page = shared.page;
        let never_ready = crate::fault::active("watchdog-not-ready");

        // Every signal blocked across the fork: until the child has ignored
        // them, a signal would run the runner's handler in the child (and
        // thaw through the runner's table). The child unblocks them itself.
        let mut old_mask = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::all()),
            Some(&mut old_mask),
        )
        .map_err(io::Error::from)?;
        // SAFETY: fork is called with everything prepared; the child runs
        // only `watchdog_main`, which is async-signal-safe and never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child; see watchdog_main's contract.
            unsafe {
                watchdog_main(ChildArgs {
                    page,
                    keep: &keep,
                    runner_pidfd: runner_pidfd.as_raw_fd(),
                    ctl: if never_ready {
                        -1
                    } else {
                        ctl_child.as_raw_fd()
                    },
                    devnull: devnull.as_raw_fd(),
                    filter,
                })
            }
        }
        let forked = if pid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old_mask),
            None,
        );
        forked?;
        drop(ctl_child);
        let mut w = Watchdog {
            pid,
            pidfd: pidfd_open(pid)?,
            control: Some(ctl_runner),
            reaped: false,
        };
        let ready = w.control_fd().and_then(|fd| wait_byte(fd, READY, "ready"));
        if let Err(e) = ready {
            w.abandon();
            return Err(e);
        }
        // Best effort, like the runner's own (which the window reports when
        // it fails: without CAP_SYS_RESOURCE neither can be lowered).
        let _ = shield_from_oom(pid);
        Ok(w)
    }

    fn control_fd(&self) -> io::Result<RawFd> {
        self.control
            .as_ref()
            .map(|c| c.as_raw_fd())
            .ok_or_else(|| io::Error::other("the watchdog was dismissed"))
    }

    /// Kills and reaps a watchdog that failed to start or arm.
    fn abandon(&mut self) {
        // SAFETY: kill(2) of our own unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.control = None;
        self.reap();
    }

    /// Arms the watchdog for a window: `mounts` are the runner's descriptors
    /// in freeze order (index i matches state i of `shared`), `deadline` the
    /// window's. Returns once the watchdog holds its own copies; nothing may
    /// be frozen before that.
    pub fn arm(
        &mut self,
        shared: &SharedState,
        mounts: &[RawFd],
        deadline: Instant,
    ) -> io::Result<()> {
        assert!(mounts.len() <= MAX_MOUNTS);
        let page = shared.page();
        for (i, &fd) in mounts.iter().enumerate() {
            page.runner_fds[i].store(fd, Ordering::SeqCst);
            page.thawed_at_ns[i].store(0, Ordering::SeqCst);
        }
        page.armed_mounts
            .store(mounts.len() as i32, Ordering::SeqCst);
        let wake = instant_ns(deadline + DEADLINE_MARGIN);
        page.deadline_ns.store(wake, Ordering::SeqCst);
        let fd = self.control_fd()?;
        nix::sys::socket::send(fd, &[ARM], nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)?;
        let armed = wait_byte(fd, ARM, "that it holds the mounts");
        if armed.is_err() {
            self.abandon();
        }
        armed
    }

    /// Forks and arms at once (a window with no script before it).
    pub fn spawn_armed(
        shared: &SharedState,
        mounts: &[RawFd],
        deadline: Instant,
        filter: Option<ChildFilter<'_>>,
    ) -> io::Result<Watchdog> {
        let mut w = Watchdog::spawn(shared, filter)?;
        w.arm(shared, mounts, deadline)?;
        Ok(w)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the watchdog is still running (it may have been killed).
    pub fn alive(&self) -> bool {
        let mut pfd = crate::supervise::pollfd(Some(self.pidfd.as_raw_fd()));
        // SAFETY: one pollfd on our stack, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0
    }

    /// The window is closed and every mount thawed (or no window came):
    /// tell the watchdog to exit and reap it.
    pub fn dismiss(mut self) {
        if let Some(ctl) = self.control.take() {
            let _ = nix::sys::socket::send(
                ctl.as_raw_fd(),
                &[DISMISS],
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            );
        }
        self.reap();
    }

    /// Leaves the watchdog running past the runner's exit: used when a freeze
    /// ioctl is still pending in the kernel and only the watchdog can thaw
    /// the mount once it completes (it acts when the runner is gone).
    pub fn leave_armed(self) {
        // Drop keeps the control socket open until the runner exits.
    }

    fn reap(&mut self) {
        if !self.reaped {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
            self.reaped = true;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the control socket without "D" means the runner is going
        // away: the watchdog then waits for the runner's death and thaws
        // whatever is still marked frozen. So never wait for it here.
        if let Some(ctl) = self.control.take() {
            std::mem::forget(ctl);
        }
    }
}

struct ChildArgs<'a> {
    page: *mut Page,
    keep: &'a [RawFd; 2],
    runner_pidfd: RawFd,
    /// -1: never report ready (fault injection).
    ctl: RawFd,
    devnull: RawFd,
    filter: Option<ChildFilter<'a>>,
}

/// The mounts the watchdog holds: its own descriptors, by page index.
struct Held {
    fds: [RawFd; MAX_MOUNTS],
    n: usize,
}

/// Thaws mount `i`: whether `FITHAW` said so (`EINVAL`: not frozen).
///
/// # Safety
/// Async-signal-safe; a descriptor the watchdog holds.
unsafe fn fithaw(fd: RawFd) -> Result<(), i32> {
    // SAFETY: one ioctl on a descriptor we hold; errno is read from this
    // thread's errno location.
    unsafe {
        if libc::ioctl(fd, FITHAW as _, 0) == 0 {
            Ok(())
        } else {
            Err(*libc::__errno_location())
        }
    }
}

/// Records that the watchdog thawed mount `i` now, for the runner's status.
fn record_thaw(page: &Page, i: usize, acted: i32) {
    page.thawed_at_ns[i].store(monotonic_ns() as u64, Ordering::SeqCst);
    page.thawed.fetch_add(1, Ordering::SeqCst);
    page.acted.store(acted, Ordering::SeqCst);
}

/// One pass over the mounts, newest first, thawing those in the states
/// `which`. A frozen mount is marked THAWED once `FITHAW` said so (or
/// EINVAL: someone thawed it already); a failing thaw is retried a few
/// times. An attempting mount is a `FIFREEZE` that may not have returned:
/// EINVAL then means "not frozen yet", so it stays attempting for the next
/// pass. Every thaw that succeeded is recorded with its time.
///
/// # Safety
/// Async-signal-safe; call with the page and descriptors of the watchdog.
unsafe fn thaw_pass(held: &Held, page: &Page, which: &[u8], acted: i32) {
    for i in (0..held.n).rev() {
        let s = page.states[i].load(Ordering::SeqCst);
        if !which.contains(&s) {
            continue;
        }
        for attempt in 0..3 {
            // SAFETY: a descriptor the watchdog holds.
            match unsafe { fithaw(held.fds[i]) } {
                Ok(()) => {
                    page.states[i].store(THAWED, Ordering::SeqCst);
                    record_thaw(page, i, acted);
                }
                Err(libc::EINVAL) if s == ATTEMPTING => {}
                Err(libc::EINVAL) => page.states[i].store(THAWED, Ordering::SeqCst),
                Err(_) if s == ATTEMPTING || attempt == 2 => {}
                Err(_) => {
                    let pause = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 100_000_000,
                    };
                    // SAFETY: nanosleep with a timespec on our stack.
                    unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
                    continue;
                }
            }
            break;
        }
    }
}

/// Sets the watchdog up after the fork: its own session, signals ignored,
/// stdio on /dev/null, every descriptor but the kept ones closed, its
/// filter, then "ready".
///
/// # Safety
/// Only in the freshly forked child (see [`watchdog_main`]).
unsafe fn set_up(a: &ChildArgs<'_>) {
    // SAFETY: raw async-signal-safe syscalls on prepared values.
    unsafe {
        libc::setsid();
        // The runner's handlers would act on the runner's thaw table; the
        // watchdog must survive group signals and a stray TERM: ignore them
        // (the real-time ones too; 32 and 33 just answer EINVAL).
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != libc::SIGCHLD {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::dup2(a.devnull, 0);
        libc::dup2(a.devnull, 1);
        libc::dup2(a.devnull, 2);
        // Close every descriptor but the ones kept (the gaps between them).
        let mut low: libc::c_uint = 3;
        for &fd in a.keep {
            let fd = fd as libc::c_uint;
            if fd > low {
                libc::syscall(libc::SYS_close_range, low, fd - 1, 0);
            }
            if fd + 1 > low {
                low = fd + 1;
            }
        }
        libc::syscall(libc::SYS_close_range, low, libc::c_uint::MAX, 0);
        libc::prctl(libc::PR_SET_NAME, c"quiesce-watchdog".as_ptr());
        if let Some(f) = a.filter {
            if f() != 0 {
                // Without its filter the watchdog still thaws: a missing
                // sandbox must not cost the thaw guarantee.
            }
        }
        if a.ctl < 0 {
            libc::_exit(1);
        }
        libc::write(a.ctl, [READY].as_ptr().cast(), 1);
    }
}

/// Waits to be armed: takes copies of the runner's mount descriptors
/// (`pidfd_getfd`) and answers. Exits when dismissed or when the runner is
/// gone before any window (nothing of its can be frozen then).
///
/// # Safety
/// Only in the watchdog (see [`watchdog_main`]).
unsafe fn await_arming(a: &ChildArgs<'_>, page: &Page) -> Held {
    let mut held = Held {
        fds: [-1; MAX_MOUNTS],
        n: 0,
    };
    // SAFETY: raw async-signal-safe syscalls on the page and descriptors.
    unsafe {
        loop {
            let mut fds = [
                crate::supervise::pollfd(Some(a.runner_pidfd)),
                crate::supervise::pollfd(Some(a.ctl)),
            ];
            if libc::poll(fds.as_mut_ptr(), 2, -1) <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                libc::_exit(0);
            }
            let mut b = [0u8; 1];
            if libc::read(a.ctl, b.as_mut_ptr().cast(), 1) != 1 || b[0] != ARM {
                libc::_exit(0); // dismissed, or the runner is exiting
            }
            let n = page
                .armed_mounts
                .load(Ordering::SeqCst)
                .clamp(0, MAX_MOUNTS as i32) as usize;
            for i in 0..n {
                let theirs = page.runner_fds[i].load(Ordering::SeqCst);
                let fd = libc::syscall(libc::SYS_pidfd_getfd, a.runner_pidfd, theirs, 0);
                if fd < 0 {
                    // No answer: the runner freezes nothing.
                    libc::_exit(1);
                }
                held.fds[i] = fd as RawFd;
            }
            held.n = n;
            libc::write(a.ctl, [ARM].as_ptr().cast(), 1);
            return held;
        }
    }
}

/// The watchdog's whole life.
///
/// Armed, it waits for the runner's death, its dismissal, or the window's
/// deadline (plus a margin). At the deadline it thaws what is frozen and
/// what is attempting, and from then on polices the page every
/// [`POLICING_INTERVAL_MS`]: a call that completes late — the runner stopped
/// with a `FIFREEZE` in the kernel, a stage issued after the deadline — is
/// thawed as soon as it lands. When the runner dies it thaws what is
/// attempting or frozen (a call still in the kernel keeps the runner's
/// thread group alive, so the pidfd reports the death only once every call
/// has returned) and kills the snapshot command's process group.
///
/// # Safety
/// Call only in a freshly forked child. Only async-signal-safe syscalls.
unsafe fn watchdog_main(a: ChildArgs<'_>) -> ! {
    // SAFETY: all calls below are raw async-signal-safe syscalls on
    // descriptors and memory prepared before the fork.
    unsafe {
        set_up(&a);
        let page = &*a.page;
        let held = await_arming(&a, page);
        let wake = page.deadline_ns.load(Ordering::SeqCst);
        let mut ctl = a.ctl;
        let acted;
        loop {
            let past_deadline = monotonic_ns() >= wake;
            let timeout = if past_deadline {
                thaw_pass(&held, page, &[FROZEN, ATTEMPTING], ACTED_DEADLINE);
                POLICING_INTERVAL_MS
            } else {
                ((wake - monotonic_ns()) / 1_000_000 + 1).min(i32::MAX as i64) as i32
            };
            let mut fds = [
                crate::supervise::pollfd(Some(a.runner_pidfd)),
                crate::supervise::pollfd(Some(ctl)),
            ];
            let n = libc::poll(fds.as_mut_ptr(), 2, timeout);
            if n <= 0 {
                continue; // timeout (re-checked above) or EINTR
            }
            if fds[0].revents != 0 {
                acted = ACTED_RUNNER_DIED;
                break;
            }
            if fds[1].revents != 0 {
                let mut b = [0u8; 1];
                let r = libc::read(ctl, b.as_mut_ptr().cast(), 1);
                if r == 1 && b[0] == DISMISS {
                    libc::_exit(0);
                }
                // EOF: the runner is exiting, but a thread of it may still be
                // inside a FIFREEZE that completes later; only the pidfd says
                // the whole thread group is gone. Wait for that.
                ctl = -1;
            }
        }
        thaw_pass(&held, page, &[ATTEMPTING, FROZEN], acted);
        // Every call has returned (the thread group is gone): what is still
        // attempting froze and was thawed just now, or never froze.
        // Thaw first, then kill: the snapshot command may have been blocked
        // on a frozen filesystem and can only die now.
        let pgid = page.snapshot_pgid.load(Ordering::SeqCst);
        if pgid > 1 {
            libc::kill(-pgid, libc::SIGKILL);
        }
        libc::_exit(0)
    }
}
