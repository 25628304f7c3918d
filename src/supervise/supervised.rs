//! The handle on a running child: one `poll` over its pidfd, its output
//! pipes and the runner's signal pipe (SPEC §7 "Waiting").

use super::capture::{CaptureBuffer, Captured};
use super::cgroup::{CgroupStatus, ScriptCgroup};
use super::live;
use super::procfs::{self, Adopt, Membership, ProcStat};
use super::sentinel::Watched;
use super::sys;
use super::tree::{terminate, KillReport, Leftover, Tree};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How the main child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled { signal: i32, core_dumped: bool },
    /// Someone else reaped the child (a `waitpid(-1)` elsewhere in the
    /// runner, which the supervisor's design forbids); the status is lost.
    Unknown,
}

impl ExitStatus {
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            _ => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            _ => None,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// Why [`Supervised::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The main child exited (noticed through its pidfd at once).
    Exited(ExitStatus),
    /// The deadline passed; the child still runs. The caller decides when
    /// to kill (the freeze code thaws first: SPEC §6.4).
    DeadlinePassed,
    /// The interrupt descriptor became readable (a runner signal arrived).
    /// It was not read.
    Interrupted,
}

/// Handed to the `on_tick` callback once per poll interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub pid: i32,
    pub elapsed: Duration,
    pub remaining: Duration,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// What remains once a handle is finished.
#[derive(Debug, Clone)]
pub struct Finished {
    pub pid: i32,
    pub status: Option<ExitStatus>,
    /// From just before the fork to the moment the exit was noticed (or to
    /// now, when the child never exited).
    pub duration: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
    pub cgroup: CgroupStatus,
}

/// What `spawn_prepared` hands to `Supervised::new`.
pub(crate) struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub start_ticks: u64,
    pub started: Instant,
    pub program: String,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub output_cap: usize,
    pub runner: i32,
    pub preexisting: Option<HashSet<(i32, u64)>>,
    /// The child is in its cgroup (v2 or v1 pids).
    pub cgroup_joined: bool,
    /// Why joining failed, when it did.
    pub join_notes: Vec<String>,
    /// Ends the tree if the runner dies before the attempt is over.
    pub sentinel: Option<Watched>,
}

struct Stream {
    fd: Option<OwnedFd>,
    buf: CaptureBuffer,
}

impl Stream {
    /// Reads what is there now, at most `max_reads` chunks (so a writer as
    /// fast as we are cannot starve the deadline). EOF or an error closes it.
    fn drain(&mut self, scratch: &mut [u8], max_reads: usize) {
        let mut done = false;
        if let Some(fd) = &self.fd {
            for _ in 0..max_reads {
                match sys::read(fd.as_fd(), scratch) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => self.buf.push(&scratch[..n]),
                    Err(Errno::EAGAIN) => break,
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
        }
        if done {
            self.fd = None;
        }
    }

    fn raw(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }
}

/// A supervised child and the tree it grows.
///
/// The main child is kept unreaped (a zombie, its status already read with
/// `WNOWAIT`) until [`Supervised::finish`] or drop: that keeps its pid — the
/// id of its session and process group — reserved, so "same session" stays a
/// sound membership test and `killpg` can never hit a stranger.
///
/// Dropping a handle whose child still runs leaves the child running (and
/// unreaped until [`super::reap_orphans`]); call [`Supervised::kill_tree`]
/// first. Nothing is killed behind the caller's back: the freeze code must
/// thaw before any kill (SPEC §6.4).
pub struct Supervised {
    pub(crate) pid: i32,
    pub(crate) start_ticks: u64,
    pub(crate) pidfd: OwnedFd,
    program: String,
    started: Instant,
    pub(crate) status: Option<ExitStatus>,
    exited_at: Option<Instant>,
    reaped: bool,
    stdout: Stream,
    stderr: Stream,
    scratch: Vec<u8>,
    pub(crate) cgroup: ScriptCgroup,
    pub(crate) cgroup_status: CgroupStatus,
    pub(crate) runner: i32,
    preexisting: Option<HashSet<(i32, u64)>>,
    pub(crate) lineage: HashSet<(i32, u64)>,
    excluded: HashSet<i32>,
    /// Ends the tree if the runner dies before the attempt is over; stopped
    /// by `finish` or drop (leftovers that are meant to outlive the runner,
    /// pre-script holders, are then left alone).
    sentinel: Option<Watched>,
}

const READ_CHUNK: usize = 64 * 1024;

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("pid", &self.pid)
            .field("program", &self.program)
            .field("status", &self.status)
            .field("cgroup", &self.cgroup_status)
            .finish_non_exhaustive()
    }
}

impl Supervised {
    pub(crate) fn new(s: Started, cgroup: ScriptCgroup, cgroup_status: CgroupStatus) -> Self {
        Supervised {
            pid: s.pid,
            start_ticks: s.start_ticks,
            pidfd: s.pidfd,
            program: s.program,
            started: s.started,
            status: None,
            exited_at: None,
            reaped: false,
            stdout: Stream {
                fd: Some(s.stdout),
                buf: CaptureBuffer::new(s.output_cap),
            },
            stderr: Stream {
                fd: Some(s.stderr),
                buf: CaptureBuffer::new(s.output_cap),
            },
            scratch: vec![0; READ_CHUNK],
            cgroup,
            cgroup_status,
            runner: s.runner,
            preexisting: s.preexisting,
            lineage: HashSet::new(),
            // The run sentinel is the runner's child: never an orphan of
            // this tree.
            excluded: s.sentinel.iter().map(|t| t.pid).collect(),
            sentinel: s.sentinel,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Start time of the main child in clock ticks since boot (with the pid,
    /// its identity).
    pub fn start_time_ticks(&self) -> u64 {
        self.start_ticks
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The exit status, once the exit was noticed.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    pub fn cgroup_status(&self) -> &CgroupStatus {
        &self.cgroup_status
    }

    /// What was captured so far.
    pub fn stdout(&self) -> Captured {
        self.stdout.buf.snapshot()
    }

    pub fn stderr(&self) -> Captured {
        self.stderr.buf.snapshot()
    }

    /// Processes the caller knows are not part of this tree although they
    /// may look like it (e.g. a watchdog forked while this child runs).
    /// They and their descendants are never claimed, signalled or reaped.
    pub fn exclude(&mut self, pids: &[i32]) {
        self.excluded.extend(pids.iter().copied());
    }

    /// Reads whatever output is available now, without blocking. Useful to
    /// keep a leftover holder's pipe from filling while the handle lives.
    pub fn drain_output(&mut self) {
        self.stdout.drain(&mut self.scratch, 64);
        self.stderr.drain(&mut self.scratch, 64);
    }

    /// Notices the main child's exit without reaping it (WNOWAIT).
    pub(crate) fn observe_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let status = match sys::waitid_pidfd(self.pidfd.as_fd(), true) {
            Ok(Some(st)) => st,
            Ok(None) => return None,
            Err(_) => {
                // ECHILD: reaped behind our back. The pidfd says whether it
                // is gone; without a status all we can say is "unknown".
                let mut p = [sys::pollfd(Some(self.pidfd.as_raw_fd()))];
                if sys::ppoll(&mut p, Duration::ZERO).unwrap_or(0) == 0 {
                    return None;
                }
                self.reaped = true;
                ExitStatus::Unknown
            }
        };
        self.status = Some(status);
        self.exited_at = Some(Instant::now());
        Some(status)
    }

    /// Waits for the main child to exit, for `deadline`, or for
    /// `interrupt_fd` to become readable, whichever comes first, draining
    /// output all along. One `ppoll` over the pidfd, both pipes and the
    /// interrupt descriptor, with the timeout `min(poll_interval, time left)`;
    /// `on_tick` is called once per `poll_interval` (progress logging).
    pub fn wait(
        &mut self,
        deadline: Instant,
        poll_interval: Duration,
        interrupt_fd: Option<BorrowedFd<'_>>,
        on_tick: &mut dyn FnMut(&Progress),
    ) -> WaitOutcome {
        if let Some(st) = self.status {
            self.drain_output();
            return WaitOutcome::Exited(st);
        }
        let interval = poll_interval.max(Duration::from_millis(1));
        let mut next_tick = Instant::now() + interval;
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.drain_output();
                // An exit that raced with the deadline still counts as an
                // exit: the script finished in time as far as anyone can tell.
                return match self.observe_exit() {
                    Some(st) => WaitOutcome::Exited(st),
                    None => WaitOutcome::DeadlinePassed,
                };
            }
            let timeout = deadline.min(next_tick).saturating_duration_since(now);
            let mut fds = [
                sys::pollfd(Some(self.pidfd.as_raw_fd())),
                sys::pollfd(self.stdout.raw()),
                sys::pollfd(self.stderr.raw()),
                sys::pollfd(interrupt_fd.map(|f| f.as_raw_fd())),
            ];
            if let Err(e) = sys::ppoll(&mut fds, timeout) {
                // EINVAL/ENOMEM: nothing sensible to poll; fall back to a
                // short sleep so the loop still honours the deadline.
                log::warn!("ppoll failed while supervising pid {}: {e}", self.pid);
                std::thread::sleep(timeout.min(Duration::from_millis(10)));
            }
            if fds[1].revents != 0 {
                self.stdout.drain(&mut self.scratch, 16);
            }
            if fds[2].revents != 0 {
                self.stderr.drain(&mut self.scratch, 16);
            }
            if fds[0].revents != 0 {
                if let Some(st) = self.observe_exit() {
                    self.drain_output();
                    return WaitOutcome::Exited(st);
                }
            }
            if fds[3].revents != 0 {
                return WaitOutcome::Interrupted;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.record_lineage();
                on_tick(&Progress {
                    pid: self.pid,
                    elapsed: now - self.started,
                    remaining: deadline.saturating_duration_since(now),
                    stdout_bytes: self.stdout.buf.total(),
                    stderr_bytes: self.stderr.buf.total(),
                });
                while next_tick <= now {
                    next_tick += interval;
                }
            }
        }
    }

    /// The membership rule for this tree (see `procfs::Membership`).
    pub(crate) fn members_in(&self, table: &procfs::ProcTable) -> Vec<ProcStat> {
        let roots = HashSet::from([(self.pid, self.start_ticks)]);
        let cgroup_pids = if self.cgroup_status.joined {
            self.cgroup.members()
        } else {
            HashSet::new()
        };
        // The session id is reserved only while the main child is unreaped.
        let session_ids: &[i32] = if self.reaped {
            &[]
        } else {
            std::slice::from_ref(&self.pid)
        };
        // Orphan adoption is only sound when no cgroup tells us the answer
        // and no other live handle in this process could own the orphan.
        let adopt = match &self.preexisting {
            Some(pre) if !self.cgroup_status.joined && live::count() <= 1 => Some(Adopt {
                preexisting: pre,
                since_ticks: self.start_ticks,
            }),
            _ => None,
        };
        Membership {
            runner: self.runner,
            roots: &roots,
            session_ids,
            cgroup_pids: &cgroup_pids,
            lineage: &self.lineage,
            excluded: &self.excluded,
            adopt,
        }
        .members(table)
    }

    /// Scans `/proc`, remembers every live member (so an escapee stays known
    /// after its parent dies) and returns the members, zombies included.
    pub(crate) fn scan_members(&mut self) -> Vec<ProcStat> {
        let table = procfs::scan();
        let members = self.members_in(&table);
        self.lineage
            .extend(members.iter().filter(|p| !p.is_zombie()).map(|p| p.id()));
        members
    }

    fn record_lineage(&mut self) {
        let _ = self.scan_members();
    }

    /// Descendants of this tree still alive (the main child excluded): the
    /// "holders" of SPEC §7. Read `/proc/PID/cmdline` for each.
    pub fn leftovers(&self) -> Vec<Leftover> {
        if self.cgroup_status.joined {
            // Fast path: the cgroup holds the whole tree, exited processes
            // are not listed. Empty (but for the main child) = no leftovers.
            let mut in_cgroup = self.cgroup.members();
            in_cgroup.remove(&self.pid);
            if in_cgroup.is_empty() {
                return Vec::new();
            }
        }
        let table = procfs::scan();
        let cgroups = self.cgroup.paths();
        self.members_in(&table)
            .into_iter()
            .filter(|p| !p.is_zombie() && p.id() != (self.pid, self.start_ticks))
            .map(|p| Leftover {
                pid: p.pid,
                start_time_ticks: p.start,
                cmdline: procfs::cmdline(p.pid),
                cgroups: cgroups.clone(),
            })
            .collect()
    }

    /// Reaps the main child if it has exited.
    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        self.observe_exit();
        if self.status.is_some()
            && matches!(
                sys::waitid_pidfd(self.pidfd.as_fd(), false),
                Ok(Some(_)) | Err(_)
            )
        {
            self.reaped = true;
        }
    }

    /// Drains what output is available, reaps the main child (if it exited),
    /// removes the cgroup when nothing lives in it any more, and returns the
    /// captures. Leftovers keep running, and keep their cgroup.
    pub fn finish(mut self) -> Finished {
        if let Some(t) = self.sentinel.take() {
            t.stop();
        }
        self.drain_output();
        self.reap();
        if self.reaped && self.cgroup.is_some() && self.cgroup.members().is_empty() {
            self.cgroup.remove(&mut self.cgroup_status);
        }
        let end = self.exited_at.unwrap_or_else(Instant::now);
        Finished {
            pid: self.pid,
            status: self.status,
            duration: end.saturating_duration_since(self.started),
            stdout: self.stdout.buf.snapshot(),
            stderr: self.stderr.buf.snapshot(),
            cgroup: self.cgroup_status.clone(),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(t) = self.sentinel.take() {
            t.stop();
        }
        self.reap();
        live::unregister(self.pid);
        if self.reaped && self.cgroup.is_some() && self.cgroup.members().is_empty() {
            self.cgroup.remove(&mut self.cgroup_status);
        }
    }
}
impl Tree for Supervised {
    fn members(&mut self) -> Vec<ProcStat> {
        self.scan_members()
    }

    fn signal_all(&mut self, sig: i32) {
        if sig == libc::SIGKILL && self.cgroup_status.joined {
            let mut status = std::mem::take(&mut self.cgroup_status);
            self.cgroup.kill(&mut status);
            self.cgroup_status = status;
        }
        // The process group of the main child. Its pid is reserved while we
        // hold it unreaped, so the group id cannot name anyone else.
        if self.status_reaped() {
            return;
        }
        let sigs: &[i32] = if sig == libc::SIGTERM {
            &[libc::SIGTERM, libc::SIGCONT]
        } else {
            &[sig]
        };
        for &s in sigs {
            let sent =
                sys::pidfd_send_signal(self.pidfd.as_fd(), s, libc::PIDFD_SIGNAL_PROCESS_GROUP);
            // EINVAL: kernel before 6.9 lacks PIDFD_SIGNAL_PROCESS_GROUP.
            if sent == Err(nix::errno::Errno::EINVAL) {
                // SAFETY: killpg(2) with integers only. The group id is our
                // unreaped child's pid, reserved (see above).
                unsafe { libc::killpg(self.pid, s) };
            }
        }
    }

    fn idle(&mut self) {
        self.drain_output();
        self.observe_exit();
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.status.is_none().then(|| self.pidfd.as_raw_fd())
    }

    fn keep_unreaped(&self) -> Option<i32> {
        Some(self.pid)
    }
}

impl Supervised {
    fn status_reaped(&self) -> bool {
        // An `Unknown` status means someone else reaped the child.
        self.status == Some(super::ExitStatus::Unknown)
    }

    /// Ends the whole tree: the main child, its session and process group,
    /// every descendant that escaped with `setsid` or a double fork (found
    /// through the cgroup, the PPid chains, the lineage recorded while
    /// waiting, and orphans re-parented to the subreaper runner). SIGTERM
    /// first, `grace` to go (returns as soon as all are gone), then
    /// `cgroup.kill` and SIGKILL, then verification. The caller decides when:
    /// the freeze code thaws first (SPEC §6.4).
    pub fn kill_tree(&mut self, grace: Duration) -> KillReport {
        let runner = self.runner;
        let (report, _) = terminate(self, runner, grace);
        report
    }
}
