//! The run sentinel: ends a child's tree if the runner dies while it runs.
//!
//! The main child gets `PR_SET_PDEATHSIG(SIGKILL)` (see supervise/spawn/child.rs), but that
//! reaches only the child itself: its descendants are re-parented to init
//! (or a subreaper above the runner) and would keep running — a pre-script's
//! `sleep`, a half-finished database command — with nobody to time them out.
//! A signal cannot be set up to reach them, and the next run's sweep may be
//! hours away, so a second process watches the runner instead.
//!
//! One sentinel serves the whole run, and it is started before the run's
//! first child (the job starts it with the runner): it is one of the guards a
//! script must not reach (SPEC §8), and a script's filter can only name the
//! guards that exist when it is forked — a sentinel forked per child, after
//! an earlier pre-script left a holder running, would be reachable by that
//! holder. The runner tells it, over a socket pair, which trees to watch:
//! each child's process group and, when it has one, its cgroup's
//! `cgroup.kill` (passed as a descriptor). When the runner is gone (its
//! pidfd is readable, or the socket says end-of-file) the sentinel kills
//! every tree it still watches — `cgroup.kill` reaches every descendant
//! whatever it did with sessions and forks; the process group is the tree
//! when no cgroup could be joined — and exits. A child whose attempt ended
//! normally is unwatched, so pre-script holders meant to outlive `quiesce
//! pre` are left alone.

use super::sys;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

/// Trees one sentinel watches at a time: a run has one script or snapshot
/// command running at once (plus the probe of an audit), so this is ample.
const SLOTS: usize = 64;

/// One message from the runner: what, which slot, the tree's leader.
const MSG: usize = 12;
const WATCH: u8 = b'W';
const UNWATCH: u8 = b'U';

/// The runner's side of its sentinel.
struct RunSentinel {
    pid: i32,
    /// Keeps the pid reserved until reaped (the sentinel is our child).
    _pidfd: OwnedFd,
    control: OwnedFd,
    used: [bool; SLOTS],
}

static SENTINEL: Mutex<Option<RunSentinel>> = Mutex::new(None);

/// A tree the sentinel watches until [`Watched::stop`].
#[derive(Debug)]
pub(crate) struct Watched {
    slot: u8,
    pub pid: i32,
}

/// Opens `<cgroup>/cgroup.kill` for writing (cgroup v2, Linux 5.14+), for
/// the sentinel to hold.
pub(crate) fn open_cgroup_kill(dir: &Path) -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .ok()
        .map(OwnedFd::from)
}

/// Starts this process's sentinel, unless it runs already; returns its pid.
/// Call it before the first child, so every script's guard filter names it.
pub fn start() -> Result<i32, Errno> {
    let mut s = SENTINEL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.as_ref() {
        return Ok(r.pid);
    }
    let r = fork()?;
    let pid = r.pid;
    *s = Some(r);
    Ok(pid)
}

/// The sentinel's pid, when one runs.
pub fn pid() -> Option<i32> {
    SENTINEL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|r| r.pid)
}

/// Has the sentinel watch the tree led by `leader` (its session and process
/// group id), holding `cgroup_kill` when the tree has a cgroup.
pub(crate) fn watch(leader: i32, cgroup_kill: Option<OwnedFd>) -> Result<Watched, Errno> {
    start()?;
    let mut guard = SENTINEL.lock().unwrap_or_else(|e| e.into_inner());
    let s = guard.as_mut().ok_or(Errno::ESRCH)?;
    let slot = s.used.iter().position(|u| !u).ok_or(Errno::EMFILE)?;
    send(&s.control, WATCH, slot as u8, leader, cgroup_kill.as_ref())?;
    s.used[slot] = true;
    Ok(Watched {
        slot: slot as u8,
        pid: s.pid,
    })
}

impl Watched {
    /// The child's attempt is over: stop watching its tree.
    pub(crate) fn stop(self) {
        let mut guard = SENTINEL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = guard.as_mut() {
            let _ = send(&s.control, UNWATCH, self.slot, 0, None);
            s.used[self.slot as usize] = false;
        }
    }
}

fn send(
    control: &OwnedFd,
    op: u8,
    slot: u8,
    leader: i32,
    fd: Option<&OwnedFd>,
) -> Result<(), Errno> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut msg = [0u8; MSG];
    msg[0] = op;
    msg[1] = slot;
    msg[4..8].copy_from_slice(&leader.to_ne_bytes());
    let iov = [std::io::IoSlice::new(&msg)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    sendmsg::<()>(
        control.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Forks the sentinel.
fn fork() -> Result<RunSentinel, Errno> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    // Above 0–2, so the dup2 onto them in the sentinel is always a copy.
    let runner = sys::at_least(sys::pidfd_open(std::process::id() as i32)?, 3)?;
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let theirs = sys::at_least(theirs, 3)?;
    let plan = Plan {
        runner: runner.as_raw_fd(),
        control: theirs.as_raw_fd(),
    };
    // Every signal stays blocked in the sentinel (the runner's handlers
    // must never run there); SIGKILL, which stops it, cannot be blocked.
    // SAFETY: the child only runs `watch_loop`, which keeps to
    // async-signal-safe calls on the prebuilt plan and never returns.
    let pid = unsafe { sys::fork_signals_blocked(|| watch_loop(&plan)) }?;
    drop((runner, theirs));
    match sys::pidfd_open(pid) {
        Ok(pidfd) => Ok(RunSentinel {
            pid,
            _pidfd: pidfd,
            control: mine,
            used: [false; SLOTS],
        }),
        Err(e) => {
            // SAFETY: kill(2) of our own unreaped child (no pid reuse).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            sys::waitpid_blocking(pid);
            Err(e)
        }
    }
}

/// What the sentinel needs, as raw values.
struct Plan {
    runner: RawFd,
    control: RawFd,
}

/// Descriptor numbers in the sentinel.
const RUNNER_FD: RawFd = 0;
const CONTROL_FD: RawFd = 1;

/// The sentinel's whole life.
///
/// INVARIANT: async-signal-safe calls only, no allocation (forked from a
/// possibly multi-threaded runner).
///
/// # Safety
/// Only in the child of `fork()`.
unsafe fn watch_loop(plan: &Plan) -> ! {
    let mut leaders = [0i32; SLOTS];
    let mut kills = [-1i32; SLOTS];
    // SAFETY: setsid/dup2/close_range/poll/recvmsg/write/kill/close/_exit
    // are async-signal-safe syscalls on integers and stack buffers.
    unsafe {
        // Outside the runner's process group (a group signal spares it).
        libc::setsid();
        // Keep only the runner's pidfd (0) and the socket (1): a copy of the
        // runner's stdout, or of a child's output pipe, would keep their
        // readers from ever seeing EOF.
        libc::dup2(plan.runner, RUNNER_FD);
        libc::dup2(plan.control, CONTROL_FD);
        libc::syscall(
            libc::SYS_close_range,
            2 as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
        loop {
            let mut fds = [sys::pollfd(Some(RUNNER_FD)), sys::pollfd(Some(CONTROL_FD))];
            if libc::poll(fds.as_mut_ptr(), 2, -1) <= 0 {
                continue;
            }
            // A pidfd is readable once its process has exited.
            if fds[0].revents != 0 || !receive(&mut leaders, &mut kills) {
                break;
            }
        }
        for slot in 0..SLOTS {
            if leaders[slot] > 0 {
                if kills[slot] >= 0 {
                    libc::write(kills[slot], b"1".as_ptr().cast(), 1);
                }
                libc::kill(-leaders[slot], libc::SIGKILL);
            }
        }
        libc::_exit(0)
    }
}

/// Reads one message into the tables; `false` at end-of-file (the runner is
/// gone, or going: its trees are ended).
///
/// # Safety
/// Only in the sentinel (see [`watch_loop`]).
unsafe fn receive(leaders: &mut [i32; SLOTS], kills: &mut [i32; SLOTS]) -> bool {
    let mut msg = [0u8; MSG];
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: MSG,
    };
    // SAFETY: msghdr is plain old data; the fields that matter are set.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg(2) into buffers on this stack, described by `hdr`.
    let n = unsafe { libc::recvmsg(CONTROL_FD, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n == 0 {
        return false;
    }
    if n < 0 {
        return Errno::last() == Errno::EINTR || Errno::last() == Errno::EAGAIN;
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA are pointer arithmetic on `hdr` and
    // the control buffer the kernel just filled.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
        } else {
            -1
        }
    };
    let slot = msg[1] as usize % SLOTS;
    if kills[slot] >= 0 {
        // SAFETY: a descriptor received earlier for this slot.
        unsafe { libc::close(kills[slot]) };
        kills[slot] = -1;
    }
    leaders[slot] = 0;
    if msg[0] == WATCH {
        leaders[slot] = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
        kills[slot] = fd;
    } else if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave us, not kept.
        unsafe { libc::close(fd) };
    }
    true
}
