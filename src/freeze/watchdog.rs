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
        let mut keep = [-1 as RawFd; MAX_MOUNTS + 2];
        keep[..n_mounts].copy_from_slice(mounts);
        keep[n_mounts] = runner_pidfd.as_raw_fd();
        keep[n_mounts + 1] = ctl_read.as_raw_fd();
        let keep_len = n_mounts + 2;
        keep[..keep_len].sort_unstable();
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

        // SAFETY: fork is called with everything prepared; the child runs
        // only `watchdog_main`, which is async-signal-safe and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
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
                    devnull: devnull.as_raw_fd(),
                    wake,
                    filter,
                })
            }
        }
        drop(ctl_read);
        let pidfd = pidfd_open(pid)?;
        Ok(Watchdog {
            pid,
            pidfd,
            control: Some(ctl_write),
            reaped: false,
        })
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
    devnull: RawFd,
    wake: libc::timespec,
    filter: Option<ChildFilter<'a>>,
}

/// The watchdog's whole life.
///
/// # Safety
/// Call only in a freshly forked child. Only async-signal-safe syscalls.
unsafe fn watchdog_main(a: ChildArgs<'_>) -> ! {
    // SAFETY: all calls below are raw async-signal-safe syscalls on
    // descriptors and memory prepared before the fork.
    unsafe {
        libc::setsid();
        // The runner's handlers would act on the runner's thaw table; the
        // watchdog must survive group signals and a stray TERM: ignore them.
        for sig in 1..32 {
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
        let page = &*a.page;
        let mut ctl = a.ctl_read;
        let acted;
        loop {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            let left_ms: i64 =
                (a.wake.tv_sec - now.tv_sec) * 1000 + (a.wake.tv_nsec - now.tv_nsec) / 1_000_000;
            if left_ms <= 0 {
                acted = ACTED_DEADLINE;
                break;
            }
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
            let n = libc::poll(fds.as_mut_ptr(), 2, left_ms.min(i32::MAX as i64) as i32);
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
        let mut thawed = 0;
        for i in (0..a.n_mounts).rev() {
            let s = page.states[i].load(Ordering::SeqCst);
            if s == ATTEMPTING || s == FROZEN {
                libc::ioctl(a.mount_fds[i], FITHAW as _, 0);
                page.states[i].store(THAWED, Ordering::SeqCst);
                thawed += 1;
            }
        }
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
