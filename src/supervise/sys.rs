//! Thin wrappers over the few syscalls the supervisor needs that nix 0.29
//! does not cover (pidfds, `waitid(P_PIDFD)`, `ppoll` with a nanosecond
//! timeout). Each wrapper owns exactly one `unsafe` call.

use super::ExitStatus;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `pidfd_open(2)`: a descriptor that names one process for its whole life,
/// so signalling through it can never hit a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or
    // -1; no memory is shared with the kernel.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else
    // owns it, so handing ownership to OwnedFd is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_send_signal(2)` with no siginfo (same as `kill`), `flags` 0 or
/// `PIDFD_SIGNAL_PROCESS_GROUP`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32, flags: u32) -> Result<(), Errno> {
    // SAFETY: the descriptor is valid for the duration of the borrow; a null
    // siginfo pointer is documented to mean "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOHANG [| WNOWAIT])`.
///
/// `Ok(None)`: still running. `keep_zombie` (WNOWAIT) reads the status but
/// leaves the child unreaped, which keeps its pid — and so its session and
/// process-group ids — reserved while we still use them to find the tree.
/// `ECHILD` means the process is not our child (or was reaped already).
pub(crate) fn waitid_pidfd(
    pidfd: BorrowedFd<'_>,
    keep_zombie: bool,
) -> Result<Option<ExitStatus>, Errno> {
    let mut flags = libc::WEXITED | libc::WNOHANG;
    if keep_zombie {
        flags |= libc::WNOWAIT;
    }
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value and
        // lets us detect "nothing to report" (si_pid stays 0 under WNOHANG).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t that outlives the
        // call; the pidfd is valid for the duration of the borrow.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if r < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        // SAFETY: waitid returned success, so `info` is initialised; for
        // WEXITED reports the kernel fills the SIGCHLD fields read here.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            libc::CLD_DUMPED => ExitStatus::Signaled {
                signal: status,
                core_dumped: true,
            },
            _ => ExitStatus::Signaled {
                signal: status,
                core_dumped: false,
            },
        }));
    }
}

/// `waitpid(pid, 0)` for the rare path where no pidfd could be opened; the
/// pid is our own unreaped child, so it cannot have been recycled.
pub(crate) fn waitpid_blocking(pid: i32) {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; pid names our unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// `ppoll` with a nanosecond timeout (plain `poll` rounds to milliseconds,
/// which would make deadline handling up to 1 ms late). Returns the number of
/// ready entries; EINTR is reported as 0 ready so callers simply re-loop.
pub(crate) fn ppoll(fds: &mut [libc::pollfd], timeout: Duration) -> Result<usize, Errno> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd entries
    // and `ts` a valid timespec, both outliving the call; a null sigmask
    // leaves the signal mask unchanged.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        match Errno::last() {
            Errno::EINTR => Ok(0),
            e => Err(e),
        }
    } else {
        Ok(r as usize)
    }
}

/// A pollfd entry; a negative fd is ignored by the kernel, which lets callers
/// keep fixed slots for streams that already reached EOF.
pub(crate) fn pollfd(fd: Option<RawFd>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `read(2)` into `buf`, retrying EINTR.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `buf` is valid writable memory of `buf.len()` bytes for the
        // duration of the call; the descriptor is valid while borrowed.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Duplicates `fd` to a number ≥ `min` with close-on-exec set. Used so that
/// every descriptor handed to the child sits above the slots the child
/// overwrites (0–3), which keeps `dup2` in the child from being a no-op that
/// would leave close-on-exec set on a standard stream.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and returns a new
    // descriptor or -1; no memory is passed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just created this descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Moves an owned descriptor above `min` if it is below it.
pub(crate) fn at_least(fd: OwnedFd, min: RawFd) -> Result<OwnedFd, Errno> {
    if fd.as_raw_fd() >= min {
        Ok(fd)
    } else {
        dup_at_least(fd.as_fd(), min)
    }
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub(crate) fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Sets `O_NONBLOCK` on our read ends: output is drained "what is there
/// now", never by blocking (a leftover descendant may hold the write end open
/// forever).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Forks with every signal blocked across the fork and restored in the
/// parent, so no runner handler runs in the child before it has set itself
/// up; the child runs `child`. Returns the child's pid.
///
/// # Safety
/// `child` runs in the child of `fork()` of a possibly multi-threaded
/// process: it may make async-signal-safe calls only, and should not
/// return (if it does, the child exits 127).
pub(crate) unsafe fn fork_signals_blocked(child: impl FnOnce()) -> Result<i32, Errno> {
    // SAFETY: the caller's contract, passed on; no cgroup to start in.
    unsafe { fork_into_cgroup(None, |_| child()) }
}

/// `struct clone_args` (linux/sched.h), the fields up to `cgroup`
/// (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`fork_signals_blocked`], the child starting in the cgroup v2 directory
/// `cgroup` names (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7) when
/// given. A child created there needs no write to `cgroup.procs`: such a
/// write takes the cgroup tree's threadgroup lock, whose first taker waits
/// for an RCU grace period (5-20 ms measured on a 2-core VM), while a
/// clone into the cgroup only reads it. `child` learns whether it starts
/// there: where `clone3` is refused (an older kernel, a cgroup that cannot
/// take processes) this is a plain fork and the child joins as before.
///
/// # Safety
/// As [`fork_signals_blocked`]. The child of a raw `clone3` must not rely
/// on the C library's idea of its thread (no `raise`, `abort`, pthread
/// calls): async-signal-safe system calls only, which `child` is held to
/// anyway.
pub(crate) unsafe fn fork_into_cgroup(
    cgroup: Option<RawFd>,
    child: impl FnOnce(bool),
) -> Result<i32, Errno> {
    // SAFETY: sigset_t is plain old data; it is filled before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values on this stack frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
    }
    let mut joined = false;
    let mut pid = -1;
    if let Some(fd) = cgroup.filter(|fd| *fd >= 0) {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3(2) without CLONE_VM is a fork whose child starts
        // in `fd`'s cgroup; `args` is ours, of the size passed, and names
        // no memory. The child only runs `child` (the caller's contract).
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r >= 0 {
            pid = r as i32;
            joined = true;
        }
    }
    if !joined {
        // SAFETY: fork(2); the child only runs `child`, whose contract is
        // the caller's (see above).
        pid = unsafe { libc::fork() };
    }
    if pid == 0 {
        child(joined);
        // SAFETY: _exit(2) is async-signal-safe; `child` should not return.
        unsafe { libc::_exit(127) }
    }
    let fork_errno = Errno::last();
    // SAFETY: restores the mask saved above; valid pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        Err(fork_errno)
    } else {
        Ok(pid)
    }
}
