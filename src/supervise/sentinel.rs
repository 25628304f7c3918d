//! The guard that ends a child's tree if the runner dies while it runs.
//!
//! The main child gets `PR_SET_PDEATHSIG(SIGKILL)` (see spawn.rs), but that
//! reaches only the child itself: its descendants are re-parented to init
//! (or a subreaper above the runner) and would keep running — a pre-script's
//! `sleep`, a half-finished database command — with nobody to time them out.
//! A signal cannot be set up to reach them, and the next run's sweep may be
//! hours away, so a second process watches the runner instead: the
//! sentinel, forked from the runner for each child, blocks on a pidfd of the
//! runner and, when the runner is gone, kills the child's cgroup
//! (`cgroup.kill`, which reaches every descendant whatever it did with
//! sessions and forks) and the child's process group (the tree when no
//! cgroup could be joined; a descendant that `setsid`s away without a
//! cgroup is then out of reach). When the child's attempt ends normally the
//! runner SIGKILLs and reaps the sentinel, so pre-script holders meant to
//! outlive `quiesce pre` are left alone.

use super::sys;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// A running sentinel: a child of the runner, outside the watched tree.
#[derive(Debug)]
pub(crate) struct Sentinel {
    pub pid: i32,
    pidfd: OwnedFd,
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

impl Sentinel {
    /// Forks the sentinel of the tree led by `leader` (its session and
    /// process group id), holding `cgroup_kill` when the tree has a cgroup.
    pub(crate) fn start(leader: i32, cgroup_kill: Option<OwnedFd>) -> Result<Sentinel, Errno> {
        // Above 0–2, so the dup2 onto them in the sentinel is always a copy.
        let runner = sys::at_least(sys::pidfd_open(std::process::id() as i32)?, 3)?;
        let kill_fd = cgroup_kill.map(|f| sys::at_least(f, 3)).transpose()?;
        let plan = Plan {
            runner: runner.as_raw_fd(),
            cgroup_kill: kill_fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
            leader,
        };
        // Every signal stays blocked in the sentinel (the runner's handlers
        // must never run there); SIGKILL, which stops it, cannot be blocked.
        // SAFETY: the child only runs `watch`, which keeps to
        // async-signal-safe calls on the prebuilt plan and never returns.
        let pid = unsafe { sys::fork_signals_blocked(|| watch(&plan)) }?;
        drop((runner, kill_fd));
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Sentinel { pid, pidfd }),
            Err(e) => {
                // SAFETY: kill(2) of our own unreaped child (no pid reuse).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                sys::waitpid_blocking(pid);
                Err(e)
            }
        }
    }

    /// The child's attempt is over: stop watching (SIGKILL) and reap.
    pub(crate) fn stop(self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL, 0);
        // Our own child, unreaped until now: its pid cannot be recycled.
        sys::waitpid_blocking(self.pid);
    }
}

/// What the sentinel needs, as raw values.
struct Plan {
    runner: i32,
    cgroup_kill: i32,
    leader: i32,
}

/// The sentinel's whole life.
///
/// INVARIANT: async-signal-safe calls only, no allocation (forked from a
/// possibly multi-threaded runner).
///
/// # Safety
/// Only in the child of `fork()`.
unsafe fn watch(plan: &Plan) -> ! {
    // SAFETY: dup2/close_range/poll/write/kill/_exit are async-signal-safe
    // syscalls on integers and stack buffers.
    unsafe {
        // Keep only the runner's pidfd (0) and cgroup.kill (1): holding a
        // copy of the runner's stdout, or of the child's output pipes, would
        // keep their readers from ever seeing EOF.
        libc::dup2(plan.runner, 0);
        if plan.cgroup_kill >= 0 {
            libc::dup2(plan.cgroup_kill, 1);
        }
        let first: libc::c_uint = if plan.cgroup_kill >= 0 { 2 } else { 1 };
        libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0);
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // A pidfd is readable once its process has exited.
        while libc::poll(&mut pfd, 1, -1) <= 0 {}
        if plan.cgroup_kill >= 0 {
            libc::write(1, b"1".as_ptr().cast(), 1);
        }
        libc::kill(-plan.leader, libc::SIGKILL);
        libc::_exit(0)
    }
}
