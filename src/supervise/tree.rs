//! Ending a process tree (SPEC §7 "Timeout"): SIGTERM to the whole tree, a
//! grace period that ends early when everything is gone, SIGKILL to what is
//! left, then verification. Also the leftovers ("holders") a script leaves
//! behind, and their termination from a later invocation.
//!
//! Processes are only ever signalled through a pidfd, and only after the
//! pidfd was opened *and* `/proc/PID/stat` re-read shows the start time the
//! scan nominated: a pid recycled between the scan and the signal has a
//! different start time and is left alone. Zombies are reaped only when they
//! are our own children and members of the tree, through their pidfd
//! (`waitid(P_PIDFD)`), never with `waitpid(-1)`: the runner has other
//! children (the freeze watchdog, other trees' holders).

use super::live;
use super::procfs::{self, Membership, ProcStat};
use super::sys;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// What a kill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    /// Members of the tree that were alive when the kill began, or appeared
    /// during it, and are gone now.
    pub killed: Vec<i32>,
    /// Members still alive after SIGKILL and the verification period
    /// (typically blocked in the kernel, e.g. on a frozen filesystem).
    pub survivors: Vec<i32>,
}

/// A process a script left running after it exited (SPEC §7). Recorded
/// between invocations (under `/run/quiesce/`), so it is identified by
/// (pid, start time), never by pid alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub pid: i32,
    /// `/proc/PID/stat` field 22: clock ticks since boot.
    pub start_time_ticks: u64,
    /// `/proc/PID/cmdline`, NULs turned into spaces.
    pub cmdline: String,
    /// The script's cgroup directories, removed once the leftovers are gone.
    #[serde(default)]
    pub cgroups: Vec<String>,
}

/// How often a kill re-scans `/proc` for members forked in the meantime.
const SWEEP_INTERVAL: Duration = Duration::from_millis(10);
/// How long SIGKILL'd processes get to disappear before they are reported
/// as survivors. A process blocked on a frozen filesystem cannot die until
/// the thaw, which is why callers thaw before they kill.
const KILL_VERIFY: Duration = Duration::from_secs(2);
/// Pidfds kept open to be woken as soon as a member exits; members beyond
/// this are still signalled (and their pidfd closed), just noticed by the
/// next sweep instead.
const MAX_TRACKED: usize = 256;

/// A tree as the kill loop sees it.
pub(crate) trait Tree {
    /// Members now (a fresh `/proc` scan), zombies included.
    fn members(&mut self) -> Vec<ProcStat>;
    /// Signals that reach the tree at once: the process group, `cgroup.kill`.
    fn signal_all(&mut self, sig: i32);
    /// Between sweeps: drain output, notice the main child's exit.
    fn idle(&mut self);
    /// A descriptor to poll besides the members' pidfds.
    fn wake_fd(&self) -> Option<RawFd>;
    /// A member zombie the kill must not reap (the main child, kept by its
    /// handle).
    fn keep_unreaped(&self) -> Option<i32>;
}

/// Opens a pidfd for `p` and checks it still names the process the scan saw.
fn open_verified(p: &ProcStat) -> Option<OwnedFd> {
    let fd = sys::pidfd_open(p.pid).ok()?;
    match procfs::read_stat(p.pid) {
        Some(now) if now.start == p.start => Some(fd),
        _ => None,
    }
}

struct Killer {
    runner: i32,
    keep_unreaped: Option<i32>,
    term_sent: HashSet<(i32, u64)>,
    seen: BTreeSet<i32>,
    tracked: HashMap<(i32, u64), OwnedFd>,
}

impl Killer {
    /// One pass over `members`: signal the live ones (`SIGTERM` once each,
    /// followed by `SIGCONT` so stopped ones see it; `SIGKILL` every pass),
    /// reap our zombie children among them, forget the dead. Returns the
    /// live members.
    fn sweep(&mut self, members: &[ProcStat], sig: i32) -> Vec<ProcStat> {
        let mut alive = Vec::new();
        for p in members {
            if p.is_zombie() {
                if p.ppid == self.runner
                    && Some(p.pid) != self.keep_unreaped
                    && !live::is_live(p.pid)
                {
                    reap_zombie(p, self.tracked.get(&p.id()));
                }
                continue;
            }
            alive.push(*p);
            self.seen.insert(p.pid);
            if sig == libc::SIGTERM && self.term_sent.contains(&p.id()) {
                continue;
            }
            // Reuse the tracked pidfd, or open and verify a new one.
            let owned = if self.tracked.contains_key(&p.id()) {
                None
            } else {
                match open_verified(p) {
                    Some(fd) => Some(fd),
                    None => continue, // gone, or the pid was recycled
                }
            };
            if let Some(fd) = owned.as_ref().or_else(|| self.tracked.get(&p.id())) {
                if sys::pidfd_send_signal(fd.as_fd(), sig, 0).is_ok() && sig == libc::SIGTERM {
                    let _ = sys::pidfd_send_signal(fd.as_fd(), libc::SIGCONT, 0);
                    self.term_sent.insert(p.id());
                }
            }
            if let Some(fd) = owned {
                if self.tracked.len() < MAX_TRACKED {
                    self.tracked.insert(p.id(), fd);
                }
            }
        }
        let live: HashSet<(i32, u64)> = alive.iter().map(|p| p.id()).collect();
        self.tracked.retain(|id, _| live.contains(id));
        alive
    }

    /// Sleeps until a tracked member exits, `extra` is readable, or `timeout`.
    fn wait_any(&self, extra: Option<RawFd>, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .tracked
            .values()
            .map(|f| sys::pollfd(Some(f.as_raw_fd())))
            .collect();
        fds.push(sys::pollfd(extra));
        if sys::ppoll(&mut fds, timeout).is_err() {
            std::thread::sleep(timeout);
        }
    }
}

/// Reaps `p`, a zombie child of ours, through a verified pidfd.
fn reap_zombie(p: &ProcStat, tracked: Option<&OwnedFd>) -> bool {
    let opened;
    let fd = match tracked {
        Some(fd) => fd,
        None => match sys::pidfd_open(p.pid) {
            Ok(fd) if procfs::read_stat(p.pid).is_some_and(|s| s.start == p.start) => {
                opened = fd;
                &opened
            }
            _ => return false,
        },
    };
    // ECHILD: not our child after all (its parent changed); leave it.
    matches!(sys::waitid_pidfd(fd.as_fd(), false), Ok(Some(_)))
}

/// TERM → grace → KILL → verify, on any tree.
pub(crate) fn terminate(
    tree: &mut dyn Tree,
    runner: i32,
    grace: Duration,
) -> (KillReport, Vec<ProcStat>) {
    let mut k = Killer {
        runner,
        keep_unreaped: tree.keep_unreaped(),
        term_sent: HashSet::new(),
        seen: BTreeSet::new(),
        tracked: HashMap::new(),
    };
    // Scan first so the report knows who was there, then the group-wide
    // signal (atomic against forks inside the group), then each member.
    let first = tree.members();
    tree.signal_all(libc::SIGTERM);
    let mut alive = k.sweep(&first, libc::SIGTERM);
    let until = Instant::now() + grace;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        k.wait_any(tree.wake_fd(), SWEEP_INTERVAL.min(until - now));
        tree.idle();
        let members = tree.members();
        alive = k.sweep(&members, libc::SIGTERM);
        if alive.is_empty() {
            break;
        }
    }
    if !alive.is_empty() {
        tree.signal_all(libc::SIGKILL);
        alive = k.sweep(&tree.members(), libc::SIGKILL);
        let until = Instant::now() + KILL_VERIFY;
        while !alive.is_empty() && Instant::now() < until {
            k.wait_any(tree.wake_fd(), SWEEP_INTERVAL);
            tree.idle();
            let members = tree.members();
            alive = k.sweep(&members, libc::SIGKILL);
        }
    }
    tree.idle();
    let survivors: BTreeSet<i32> = alive.iter().map(|p| p.pid).collect();
    let report = KillReport {
        killed: k
            .seen
            .iter()
            .copied()
            .filter(|p| !survivors.contains(p))
            .collect(),
        survivors: survivors.into_iter().collect(),
    };
    (report, alive)
}

/// Leftovers identified by (pid, start time), and what descends from them.
struct LeftoverTree {
    runner: i32,
    roots: HashSet<(i32, u64)>,
    lineage: HashSet<(i32, u64)>,
}

impl Tree for LeftoverTree {
    fn members(&mut self) -> Vec<ProcStat> {
        let table = procfs::scan();
        // A root that is alive and leads a session or group keeps that id
        // reserved, so its session/group members are its tree.
        let session_ids: Vec<i32> = self
            .roots
            .iter()
            .filter_map(|id| {
                table
                    .get(&id.0)
                    .filter(|p| p.start == id.1 && !p.is_zombie())
            })
            .filter(|p| p.sid == p.pid || p.pgrp == p.pid)
            .map(|p| p.pid)
            .collect();
        let none = HashSet::new();
        let members = Membership {
            runner: self.runner,
            roots: &self.roots,
            session_ids: &session_ids,
            cgroup_pids: &none,
            lineage: &self.lineage,
            excluded: &none,
            adopt: None,
        }
        .members(&table);
        self.lineage
            .extend(members.iter().filter(|p| !p.is_zombie()).map(|p| p.id()));
        members
    }

    fn signal_all(&mut self, _sig: i32) {}

    fn idle(&mut self) {}

    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    fn keep_unreaped(&self) -> Option<i32> {
        None
    }
}

/// Terminates leftovers recorded earlier — possibly by another invocation
/// of the runner (`quiesce pre`, then `quiesce post`). Each is re-identified
/// by (pid, start time) before anything is signalled, so a recycled pid is
/// never touched; their descendants are included. Those that are our
/// children are reaped; others are not ours to reap. Their recorded cgroup
/// directories are removed once empty.
pub fn terminate_leftovers(leftovers: &[Leftover], grace: Duration) -> KillReport {
    let mut tree = LeftoverTree {
        runner: std::process::id() as i32,
        roots: leftovers
            .iter()
            .map(|l| (l.pid, l.start_time_ticks))
            .collect(),
        lineage: HashSet::new(),
    };
    let runner = tree.runner;
    let (report, _) = terminate(&mut tree, runner, grace);
    let paths = cgroup_paths(leftovers);
    super::cgroup::remove_recorded(&paths);
    report
}

/// The script cgroups recorded with `leftovers`, each once.
fn cgroup_paths(leftovers: &[Leftover]) -> Vec<String> {
    let mut paths: Vec<String> = leftovers
        .iter()
        .flat_map(|l| l.cgroups.iter().cloned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// SIGKILLs the process `pid` if it is still the one that started at
/// `start` (through a pidfd opened before the check, so a recycled pid is
/// never hit). Not reaped: it need not be our child.
pub fn kill_if_same(pid: i32, start: u64) {
    let Ok(fd) = sys::pidfd_open(pid) else {
        return;
    };
    if procfs::read_stat(pid).is_some_and(|s| s.start == start && !s.is_zombie()) {
        let _ = sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL, 0);
    }
}

/// After the recorded leftovers were terminated: ends whatever is still in
/// their recorded cgroups (what escaped them), reaps what is ours, removes
/// the cgroups once empty. Returns the pids ended.
pub fn end_cgroup_members(leftovers: &[Leftover]) -> Vec<i32> {
    let paths = cgroup_paths(leftovers);
    let ended = super::cgroup::end_members(&paths);
    if !ended.is_empty() {
        // Only what was in those cgroups: the watchdog's or the guard's
        // exit status stays for their owners.
        let me = std::process::id() as i32;
        for p in procfs::scan().values() {
            if ended.contains(&p.pid) && p.ppid == me && p.is_zombie() && !live::is_live(p.pid) {
                reap_zombie(p, None);
            }
        }
        super::cgroup::remove_recorded(&paths);
    }
    ended
}

/// Reaps zombie children of the runner that no live [`Supervised`](super::Supervised) handle
/// holds and that are not in `never_reap` (e.g. the freeze watchdog, whose
/// exit status its owner wants). Returns the reaped pids. Orphans of a
/// script tree re-parent to the runner (a subreaper) and would otherwise
/// stay zombies until the runner exits.
pub fn reap_orphans(never_reap: &[i32]) -> Vec<i32> {
    let me = std::process::id() as i32;
    procfs::scan()
        .values()
        .filter(|p| {
            p.ppid == me && p.is_zombie() && !never_reap.contains(&p.pid) && !live::is_live(p.pid)
        })
        .filter(|p| reap_zombie(p, None))
        .map(|p| p.pid)
        .collect()
}
