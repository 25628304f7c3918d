//! Reading `/proc` to find a script's process tree, and the membership rule
//! that decides which processes belong to it. `ProcStat`, `read_stat` and
//! `cmdline` are public for other modules that identify a process by
//! (pid, start time), e.g. the freeze state's "is the recorded runner alive".
//!
//! Scans are snapshots and pids recycle (pid_max may be 32768), so a scan
//! only *nominates* processes; nothing is signalled by pid. The kill code
//! opens a pidfd for each nominee and re-reads its start time before using
//! it (see `tree.rs`).

use std::collections::{HashMap, HashSet};
use std::io::Read;

/// The fields of `/proc/PID/stat` the supervisor needs (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// Field 3: `Z` for a zombie (dead, not yet reaped).
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub sid: i32,
    /// Field 22: start time in clock ticks since boot. With the pid it
    /// identifies a process across pid reuse.
    pub start: u64,
}

impl ProcStat {
    /// Dead but not yet reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }

    /// (pid, start time): the identity that survives pid reuse.
    pub fn id(&self) -> (i32, u64) {
        (self.pid, self.start)
    }
}

/// Parses one `/proc/PID/stat` line. `comm` (field 2) may contain spaces and
/// parentheses, so fields are counted from the *last* `)`.
pub fn parse_stat(pid: i32, text: &[u8]) -> Option<ProcStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state); field n is at index n - 3.
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let sid = fields.next()?.parse().ok()?;
    let start = fields.nth(22 - 7)?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
        sid,
        start,
    })
}

/// Reads `/proc/PID/stat`; `None` when the process is gone (or fully reaped).
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    parse_stat(pid, &buf[..len])
}

/// Every process (thread-group leader) currently listed in `/proc`.
pub(crate) type ProcTable = HashMap<i32, ProcStat>;

pub(crate) fn scan() -> ProcTable {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            table.insert(pid, stat);
        }
    }
    table
}

/// `/proc/PID/cmdline` with NULs turned into spaces, capped at 4 KiB (it
/// goes into the audit trail). Empty for zombies and kernel threads.
pub fn cmdline(pid: i32) -> String {
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let mut raw = Vec::new();
    if f.take(4096).read_to_end(&mut raw).is_err() {
        return String::new();
    }
    while raw.last() == Some(&0) {
        raw.pop();
    }
    for b in raw.iter_mut() {
        if *b == 0 {
            *b = b' ';
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// The rule that decides whether a process belongs to one supervised tree.
///
/// A process is a member when it is excluded by nothing and any of these
/// holds for it or for an ancestor on its PPid chain (stopping at the runner):
/// - it is a root (the script's main child, or a verified leftover);
/// - its session or process group id is in `session_ids` (only ids the
///   caller knows to be reserved: the main child is kept unreaped while the
///   handle lives, so no other process can own that id);
/// - it is in the tree's cgroup;
/// - an earlier scan already found it to be a member (`lineage`), which
///   keeps a setsid'd escapee whose parent died later;
/// - it is an orphan re-parented to the runner (a subreaper) and `adopt`
///   allows it: it was not a child of the runner before the spawn and
///   started no earlier than the main child.
pub(crate) struct Membership<'a> {
    pub runner: i32,
    pub roots: &'a HashSet<(i32, u64)>,
    pub session_ids: &'a [i32],
    pub cgroup_pids: &'a HashSet<i32>,
    pub lineage: &'a HashSet<(i32, u64)>,
    pub excluded: &'a HashSet<i32>,
    pub adopt: Option<Adopt<'a>>,
}

/// When orphans re-parented to the runner may be claimed (see `Membership`).
pub(crate) struct Adopt<'a> {
    pub preexisting: &'a HashSet<(i32, u64)>,
    pub since_ticks: u64,
}

impl Membership<'_> {
    fn direct(&self, p: &ProcStat) -> bool {
        self.roots.contains(&p.id())
            || self.cgroup_pids.contains(&p.pid)
            || self.lineage.contains(&p.id())
            || self
                .session_ids
                .iter()
                .any(|&s| s > 0 && (p.sid == s || p.pgrp == s))
    }

    fn adopted(&self, p: &ProcStat) -> bool {
        match &self.adopt {
            Some(a) => !a.preexisting.contains(&p.id()) && p.start >= a.since_ticks,
            None => false,
        }
    }

    /// Members found in `table`, zombies included (the caller decides what a
    /// zombie means: nothing to signal, maybe something to reap).
    pub(crate) fn members(&self, table: &ProcTable) -> Vec<ProcStat> {
        let mut memo: HashMap<i32, bool> = HashMap::with_capacity(table.len());
        let mut out = Vec::new();
        let mut path = Vec::new();
        for p in table.values() {
            path.clear();
            let mut cur = *p;
            let verdict = loop {
                if let Some(&v) = memo.get(&cur.pid) {
                    break v;
                }
                path.push(cur.pid);
                if cur.pid == self.runner || self.excluded.contains(&cur.pid) {
                    break false;
                }
                if self.direct(&cur) {
                    break true;
                }
                if cur.ppid == self.runner {
                    break self.adopted(&cur);
                }
                // A PPid chain cannot loop, but a scan is not atomic: bound
                // the walk by the table size all the same.
                match table.get(&cur.ppid) {
                    Some(parent) if path.len() <= table.len() => cur = *parent,
                    _ => break false,
                }
            };
            for pid in &path {
                memo.insert(*pid, verdict);
            }
            if verdict {
                out.push(*p);
            }
        }
        out.sort_by_key(|p| p.pid);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, sid: i32, start: u64) -> ProcStat {
        ProcStat {
            pid,
            state: b'S',
            ppid,
            pgrp: sid,
            sid,
            start,
        }
    }

    #[test]
    fn stat_with_hostile_comm_parses() {
        let line =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(4242, line).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.sid, s.start),
            (b'S', 1, 4242, 4242, 987654)
        );
    }

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let s = read_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.start > 0);
    }

    fn table(ps: &[ProcStat]) -> ProcTable {
        ps.iter().map(|p| (p.pid, *p)).collect()
    }

    #[test]
    fn membership_follows_chains_sessions_and_adoption_but_not_foreign_trees() {
        let runner = 100;
        let t = table(&[
            p(1, 0, 1, 1),
            p(runner, 1, 1, 5),
            p(200, runner, 200, 50), // main child, own session
            p(201, 200, 200, 51),    // its child
            p(202, 201, 202, 52),    // setsid'd grandchild, chain intact
            p(203, runner, 200, 53), // orphan still in the session
            p(204, runner, 204, 54), // setsid + double fork orphan
            p(300, runner, 300, 10), // watchdog / pre-existing holder
            p(301, 300, 300, 60),    // its new child: not ours
            p(302, runner, 302, 3),  // pre-existing orphan
            p(400, 1, 400, 70),      // unrelated
        ]);
        let roots = HashSet::from([(200, 50)]);
        let none = HashSet::new();
        let nopids: HashSet<i32> = HashSet::new();
        let pre = HashSet::from([(300, 10), (302, 3)]);
        let m = Membership {
            runner,
            roots: &roots,
            session_ids: &[200],
            cgroup_pids: &nopids,
            lineage: &none,
            excluded: &nopids,
            adopt: Some(Adopt {
                preexisting: &pre,
                since_ticks: 50,
            }),
        };
        let pids: Vec<i32> = m.members(&t).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![200, 201, 202, 203, 204]);

        // Without adoption the double-forked escapee is only found through
        // lineage recorded earlier.
        let lineage = HashSet::from([(204, 54)]);
        let m = Membership {
            adopt: None,
            lineage: &lineage,
            ..m
        };
        let pids: Vec<i32> = m.members(&t).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![200, 201, 202, 203, 204]);

        // A recycled pid (same number, other start time) is not a root.
        let excluded = HashSet::from([201]);
        let roots2 = HashSet::from([(200, 49)]);
        let m = Membership {
            roots: &roots2,
            session_ids: &[],
            lineage: &none,
            excluded: &excluded,
            ..m
        };
        assert!(m.members(&t).is_empty());
    }
}
