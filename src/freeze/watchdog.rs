//! The watchdog (SPEC.md §6.4 point 4): the layer of the thaw guarantee that
//! survives a SIGKILL or an OOM kill of the runner.
//!
//! Forked before the first freeze, in its own session (outside the runner's
//! process group, so a group-wide signal does not take both), holding its own
//! copies of the mount descriptors and a pidfd of the runner. It shares one
//! anonymous page with the runner in which the runner marks each mount
//! attempting / frozen / thawed; when the runner dies, or the window's deadline
//! (plus a margin) passes, the watchdog thaws every mount marked attempting or
//! frozen, newest first, then kills the snapshot command's process group.
//!
//! INVARIANT: the watchdog child makes only async-signal-safe raw syscalls and
//! never allocates: it is forked from a process that may have other threads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
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

    /// The first `n` per-mount states of a page file left by [`in_file`].
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

/// How long the runner waits for the watchdog's ready byte.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for the child's ready byte: EOF or silence means it is not there.
fn wait_ready(ready: &OwnedFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = READY_TIMEOUT.as_millis() as i32;
    // SAFETY: one pollfd on our stack.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    let mut b = [0u8; 1];
    if n == 1 && nix::unistd::read(ready.as_raw_fd(), &mut b) == Ok(1) && b[0] == b'R' {
        return Ok(());
    }
    Err(io::Error::other(
        "the watchdog did not report ready (it died or hung while starting)",
    ))
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

impl Watchdog {
    /// Forks the watchdog. `mounts` are the descriptors in freeze order (index
    /// i matches state i of `shared`); `deadline` is the window's deadline.
    pub fn spawn(
        shared: &SharedState,
        mounts: &[RawFd],
        deadline: Instant,
        filter: Option<ChildFilter<'_>>,
    ) -> io::Result<Watchdog> {
        assert!(mounts.len() <= MAX_MOUNTS);
        // Everything the child needs is prepared here, before the fork.
        let runner_pidfd = pidfd_open(std::process::id() as libc::pid_t)?;
        // A socket pair, not a pipe: the runner's "done" is sent with
        // MSG_NOSIGNAL, so a watchdog that was killed costs an EPIPE, never
        // a SIGPIPE (a terminating signal for the runner).
        let (ctl_read, ctl_write) = nix::sys::socket::socketpair(
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
        let mut mount_fds = [-1 as RawFd; MAX_MOUNTS];
        mount_fds[..mounts.len()].copy_from_slice(mounts);
        let n_mounts = mounts.len();
        // Descriptors to keep, sorted, for closing the gaps between them.
        let mut keep = [-1 as RawFd; MAX_MOUNTS + 3];
        keep[..n_mounts].copy_from_slice(mounts);
        keep[n_mounts] = runner_pidfd.as_raw_fd();
        keep[n_mounts + 1] = ctl_read.as_raw_fd();
        let keep_len = n_mounts + 2;
        let remaining = deadline.saturating_duration_since(Instant::now()) + DEADLINE_MARGIN;
        let mut wake = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut wake) };
        let total_ns = wake.tv_nsec as i128 + remaining.as_nanos() as i128;
        wake.tv_sec += (total_ns / 1_000_000_000) as libc::time_t;
        wake.tv_nsec = (total_ns % 1_000_000_000) as libc::c_long;
        let page = shared.page;
        // The child tells it is set up (signals ignored, descriptors closed,
        // filter installed) with one byte: no freeze before that.
        let (ready_read, ready_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        keep[keep_len] = ready_write.as_raw_fd();
        let keep_len = keep_len + 1;
        keep[..keep_len].sort_unstable();
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
                    mount_fds: &mount_fds,
                    n_mounts,
                    keep: &keep[..keep_len],
                    runner_pidfd: runner_pidfd.as_raw_fd(),
                    ctl_read: ctl_read.as_raw_fd(),
                    ready_write: if never_ready {
                        -1
                    } else {
                        ready_write.as_raw_fd()
                    },
                    devnull: devnull.as_raw_fd(),
                    wake,
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
        drop(ctl_read);
        drop(ready_write);
        let mut w = Watchdog {
            pid,
            pidfd: pidfd_open(pid)?,
            control: Some(ctl_write),
            reaped: false,
        };
        if let Err(e) = wait_ready(&ready_read) {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            w.control = None;
            w.reap();
            return Err(e);
        }
        Ok(w)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the watchdog is still running (it may have been killed).
    pub fn alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0
    }

    /// The window is closed and every mount thawed: tell the watchdog to exit
    /// and reap it.
    pub fn dismiss(mut self) {
        if let Some(ctl) = self.control.take() {
            let _ = nix::sys::socket::send(
                ctl.as_raw_fd(),
                b"D",
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            );
        }
        self.reap();
    }

    /// Leaves the watchdog running past the runner's exit: used when a freeze
    /// ioctl is still pending in the kernel and only the watchdog can thaw
    /// the mount once it completes (it acts when the runner is gone).
    pub fn leave_armed(self) {
        // Drop keeps the control pipe open until the runner exits.
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
        // Closing the control pipe without "D" means the runner is going
        // away: the watchdog then waits for the runner's death and thaws
        // whatever is still marked frozen. So never wait for it here.
        if let Some(ctl) = self.control.take() {
            std::mem::forget(ctl);
        }
    }
}

struct ChildArgs<'a> {
    page: *mut Page,
    mount_fds: &'a [RawFd; MAX_MOUNTS],
    n_mounts: usize,
    keep: &'a [RawFd],
    runner_pidfd: RawFd,
    ctl_read: RawFd,
    /// -1: never report ready (fault injection).
    ready_write: RawFd,
    devnull: RawFd,
    wake: libc::timespec,
    filter: Option<ChildFilter<'a>>,
}

/// Thaws every mount in one of the states `which` (newest first), marking it
/// THAWED only when `FITHAW` said so (or EINVAL: not frozen any more); a
/// failing thaw is retried a few times and otherwise left marked as it was.
/// Returns how many it thawed.
///
/// # Safety
/// Async-signal-safe; call with the page and descriptors of [`ChildArgs`].
unsafe fn thaw_marked(a: &ChildArgs<'_>, page: &Page, which: &[u8]) -> i32 {
    let mut thawed = 0;
    for i in (0..a.n_mounts).rev() {
        let s = page.states[i].load(Ordering::SeqCst);
        if !which.contains(&s) {
            continue;
        }
        for attempt in 0..3 {
            // SAFETY: one ioctl on a descriptor we hold; errno is read from
            // this thread's errno location.
            let ok = unsafe {
                libc::ioctl(a.mount_fds[i], FITHAW as _, 0) == 0
                    || *libc::__errno_location() == libc::EINVAL
            };
            if ok {
                page.states[i].store(THAWED, Ordering::SeqCst);
                thawed += 1;
                break;
            }
            if attempt < 2 {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                // SAFETY: nanosleep with a timespec on our stack.
                unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
            }
        }
    }
    thawed
}

/// Whether any mount is marked attempting: a `FIFREEZE` of the runner may
/// still be in the kernel.
fn any_attempting(a: &ChildArgs<'_>, page: &Page) -> bool {
    (0..a.n_mounts).any(|i| page.states[i].load(Ordering::SeqCst) == ATTEMPTING)
}

/// The watchdog's whole life.
///
/// At the window's deadline (plus a margin) it thaws what is marked frozen.
/// A mount still marked attempting then is a `FIFREEZE` blocked in the kernel
/// past its deadline: the runner's thread group cannot end before that call
/// returns, so the watchdog keeps waiting, without a deadline, for the
/// runner's pidfd, thawing anything marked frozen meanwhile (every 100 ms),
/// and thaws the attempting mount once the runner is gone.
///
/// # Safety
/// Call only in a freshly forked child. Only async-signal-safe syscalls.
unsafe fn watchdog_main(a: ChildArgs<'_>) -> ! {
    // SAFETY: all calls below are raw async-signal-safe syscalls on
    // descriptors and memory prepared before the fork.
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
        let name = b"quiesce-watchdog\0";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        if let Some(f) = a.filter {
            if f() != 0 {
                // Without its filter the watchdog still thaws: a missing
                // sandbox must not cost the thaw guarantee.
            }
        }
        if a.ready_write < 0 {
            libc::_exit(1);
        }
        let b = [b'R'];
        libc::write(a.ready_write, b.as_ptr().cast(), 1);
        libc::close(a.ready_write);
        let page = &*a.page;
        let mut ctl = a.ctl_read;
        let mut past_deadline = false;
        let mut thawed = 0;
        let acted;
        loop {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            let left_ms: i64 =
                (a.wake.tv_sec - now.tv_sec) * 1000 + (a.wake.tv_nsec - now.tv_nsec) / 1_000_000;
            if left_ms <= 0 && !past_deadline {
                past_deadline = true;
                thawed += thaw_marked(&a, page, &[FROZEN]);
                if !any_attempting(&a, page) {
                    acted = ACTED_DEADLINE;
                    break;
                }
            }
            let timeout = if past_deadline {
                thawed += thaw_marked(&a, page, &[FROZEN]);
                100
            } else {
                left_ms.min(i32::MAX as i64) as i32
            };
            let mut fds = [
                libc::pollfd {
                    fd: a.runner_pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: ctl,
                    events: libc::POLLIN,
                    revents: 0,
                },
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
                let r = libc::read(a.ctl_read, b.as_mut_ptr().cast(), 1);
                if r == 1 && b[0] == b'D' {
                    libc::_exit(0);
                }
                // EOF: the runner is exiting, but a thread of it may still be
                // inside a FIFREEZE that completes later; only the pidfd says
                // the whole thread group is gone. Wait for that.
                ctl = -1;
            }
        }
        thawed += thaw_marked(&a, page, &[ATTEMPTING, FROZEN]);
        page.thawed.store(thawed, Ordering::SeqCst);
        page.acted.store(
            if thawed > 0 { acted } else { ACTED_NONE },
            Ordering::SeqCst,
        );
        // Thaw first, then kill: the snapshot command may have been blocked
        // on a frozen filesystem and can only die now.
        let pgid = page.snapshot_pgid.load(Ordering::SeqCst);
        if pgid > 1 && acted == ACTED_RUNNER_DIED {
            libc::kill(-pgid, libc::SIGKILL);
        }
        libc::_exit(0)
    }
}
