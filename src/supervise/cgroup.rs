//! Per-script cgroup, best effort (SPEC §7): a place that holds the whole
//! tree whatever it does with sessions and double forks, `pids.max` against
//! fork bombs, and `cgroup.kill` to end it atomically. Nothing here fails a
//! run; every step that did not work is recorded in [`CgroupStatus`] for the
//! audit trail.
//!
//! Layout: `<cgroup2 mount>/quiesce/<name>-<runner pid>-<seq>`. The
//! intermediate `quiesce` directory never holds processes, so it may enable
//! the `pids` controller for its children (cgroup v2's "no internal
//! processes" rule). It is placed under the mount root rather than under the
//! runner's own cgroup, because the runner's cgroup holds the runner and so
//! could not delegate controllers. On hybrid systems (v1 controllers, v2 at
//! `/sys/fs/cgroup/unified`) the `pids` controller usually lives in the v1
//! `pids` hierarchy; then a sibling directory there carries `pids.max`.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRequest {
    /// Short label, e.g. `pre` or `snapshot`; sanitised and made unique.
    pub name: String,
    /// Limit on tasks in the tree (`pids.max`); `None` leaves it unlimited.
    pub pids_max: Option<u64>,
}

impl CgroupRequest {
    pub fn new(name: impl Into<String>, pids_max: Option<u64>) -> Self {
        CgroupRequest {
            name: name.into(),
            pids_max,
        }
    }
}

/// What actually happened, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStatus {
    pub requested: bool,
    /// The cgroup v2 directory, when created.
    pub path: Option<String>,
    /// The cgroup v1 `pids` directory (hybrid hierarchy), when created.
    pub pids_path: Option<String>,
    /// The child moved itself into the cgroup(s) before exec.
    pub joined: bool,
    /// The `pids.max` value in force, when one could be set.
    pub pids_max: Option<u64>,
    /// `cgroup.kill` was used to end the tree.
    pub killed: bool,
    /// The directories were removed after the tree was gone.
    pub removed: bool,
    /// Everything that did not work, in words.
    pub notes: Vec<String>,
}

/// The directories of one script's cgroup (v2 and/or v1 pids).
#[derive(Debug, Default)]
pub(crate) struct ScriptCgroup {
    pub v2: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
}

/// Descriptors of `cgroup.procs` files the child writes "0" to (joins).
pub(crate) struct JoinFds {
    pub v2: Option<OwnedFd>,
    pub v1_pids: Option<OwnedFd>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Mount points of the cgroup v2 hierarchy and of the v1 `pids` hierarchy,
/// from `/proc/self/mountinfo`.
pub(crate) fn find_mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut v2 = None;
    let mut v1_pids = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        // Mount points with spaces are octal-escaped; ours never are, and a
        // wrong path only makes this best-effort step fail.
        let mp = PathBuf::from(mount_point.replace("\\040", " "));
        if fstype == "cgroup2" && v2.is_none() {
            v2 = Some(mp);
        } else if fstype == "cgroup"
            && v1_pids.is_none()
            && super_opts.split(',').any(|o| o == "pids")
        {
            v1_pids = Some(mp);
        }
    }
    (v2, v1_pids)
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("s{s}")
    } else {
        s
    }
}

fn errno_of(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| nix::errno::Errno::from_raw(n).to_string())
        .unwrap_or_else(|| e.to_string())
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("write {value:?} to {}: {}", path.display(), errno_of(&e)))
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir {}: {}", path.display(), errno_of(&e))),
    }
}

fn open_procs(dir: &Path) -> Result<OwnedFd, String> {
    let path = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path) // std opens with O_CLOEXEC
        .map(OwnedFd::from)
        .map_err(|e| format!("open {}: {}", path.display(), errno_of(&e)))
}

fn has_word(path: &Path, word: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().any(|w| w == word))
        .unwrap_or(false)
}

/// Removes the empty script cgroups a runner that died (SIGKILL, OOM) left
/// behind. Only directories whose name carries the pid of a runner that no
/// longer exists are touched, so a live run's cgroup is never raced; a
/// directory still holding processes cannot be removed (EBUSY) and stays.
/// Returns how many were removed.
pub fn sweep_stale() -> usize {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2_root, v1_root) = find_mounts(&mountinfo);
    let mut removed = 0;
    for root in [v2_root, v1_root].into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(root.join("quiesce")) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // <name>-<runner pid>-<seq>
            let mut parts = name.rsplitn(3, '-');
            let (_seq, pid) = (parts.next(), parts.next());
            let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let runner_alive = pid == std::process::id() as i32
                || std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !runner_alive && std::fs::remove_dir(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Creates the script's cgroup(s) before the fork and opens the
/// `cgroup.procs` files the child will write to. Never fails: what did not
/// work is in `status.notes`.
pub(crate) fn prepare(req: &CgroupRequest, status: &mut CgroupStatus) -> (ScriptCgroup, JoinFds) {
    status.requested = true;
    let mut cg = ScriptCgroup::default();
    let mut fds = JoinFds {
        v2: None,
        v1_pids: None,
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2_root, v1_root) = find_mounts(&mountinfo);
    let leaf = format!(
        "{}-{}-{}",
        sanitize(&req.name),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );

    let mut v2_has_pids = false;
    match &v2_root {
        None => status.notes.push("no cgroup v2 hierarchy mounted".into()),
        Some(root) => {
            let base = root.join("quiesce");
            let dir = base.join(&leaf);
            let made = mkdir(&base).and_then(|()| {
                if has_word(&root.join("cgroup.subtree_control"), "pids") {
                    // Enable pids for our children; harmless if already on.
                    v2_has_pids = has_word(&base.join("cgroup.subtree_control"), "pids")
                        || write_file(&base.join("cgroup.subtree_control"), "+pids").is_ok();
                }
                mkdir(&dir)
            });
            match made.and_then(|()| open_procs(&dir)) {
                Ok(fd) => {
                    status.path = Some(dir.display().to_string());
                    fds.v2 = Some(fd);
                    cg.v2 = Some(dir.clone());
                    if let Some(max) = req.pids_max {
                        if v2_has_pids {
                            match write_file(&dir.join("pids.max"), &max.to_string()) {
                                Ok(()) => status.pids_max = Some(max),
                                Err(e) => {
                                    v2_has_pids = false;
                                    status.notes.push(e)
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    status.notes.push(e);
                }
            }
        }
    }

    // The v1 pids hierarchy: only for pids.max the v2 side could not set,
    // or for membership when there is no usable v2 side at all.
    let want_v1 = (req.pids_max.is_some() && !v2_has_pids) || cg.v2.is_none();
    if want_v1 {
        match &v1_root {
            None if req.pids_max.is_some() => status.notes.push(
                "pids controller unavailable (neither in cgroup v2 nor as a v1 hierarchy)".into(),
            ),
            None => {}
            Some(root) => {
                let dir = root.join("quiesce").join(&leaf);
                let made = mkdir(&root.join("quiesce")).and_then(|()| mkdir(&dir));
                let limited = made.and_then(|()| match req.pids_max {
                    Some(max) => {
                        write_file(&dir.join("pids.max"), &max.to_string()).map(|()| Some(max))
                    }
                    None => Ok(None),
                });
                match limited.and_then(|max| open_procs(&dir).map(|fd| (max, fd))) {
                    Ok((max, fd)) => {
                        status.pids_path = Some(dir.display().to_string());
                        if max.is_some() {
                            status.pids_max = max;
                        }
                        fds.v1_pids = Some(fd);
                        cg.v1_pids = Some(dir);
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir(&dir);
                        status.notes.push(e);
                        if req.pids_max.is_some() {
                            status.notes.push("pids controller unavailable".into());
                        }
                    }
                }
            }
        }
    }
    (cg, fds)
}

/// Pids listed in a `cgroup.procs` file (empty when unreadable).
fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl ScriptCgroup {
    pub(crate) fn is_some(&self) -> bool {
        self.v2.is_some() || self.v1_pids.is_some()
    }

    /// Every pid in the cgroup(s). Exited processes are not listed.
    pub(crate) fn members(&self) -> HashSet<i32> {
        let mut set = HashSet::new();
        for dir in [&self.v2, &self.v1_pids].into_iter().flatten() {
            set.extend(read_procs(dir));
        }
        set
    }

    /// `cgroup.kill` (Linux ≥ 5.14): SIGKILL to every member at once, forks
    /// in flight included. Returns whether the kernel accepted it.
    pub(crate) fn kill(&self, status: &mut CgroupStatus) -> bool {
        let Some(dir) = &self.v2 else {
            return false;
        };
        match write_file(&dir.join("cgroup.kill"), "1") {
            Ok(()) => {
                status.killed = true;
                true
            }
            Err(e) => {
                if !status.notes.iter().any(|n| n.contains("cgroup.kill")) {
                    status.notes.push(e);
                }
                false
            }
        }
    }

    /// Removes the directories once the tree is gone. Returns false when a
    /// directory is still populated (leftovers live in it).
    pub(crate) fn remove(&mut self, status: &mut CgroupStatus) -> bool {
        let mut all = true;
        for slot in [&mut self.v2, &mut self.v1_pids] {
            if let Some(dir) = slot.as_ref() {
                match std::fs::remove_dir(dir) {
                    Ok(()) => *slot = None,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => *slot = None,
                    Err(_) => all = false,
                }
            }
        }
        status.removed =
            all && status.requested && (status.path.is_some() || status.pids_path.is_some());
        all
    }

    /// Paths recorded with leftovers, so a later invocation can remove them.
    pub(crate) fn paths(&self) -> Vec<String> {
        [&self.v2, &self.v1_pids]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// Removes cgroup directories recorded with leftovers, if they are empty now
/// and look like ours (a `quiesce` parent directory). Errors are ignored:
/// a populated directory simply stays.
pub(crate) fn remove_recorded(paths: &[String]) {
    for p in paths {
        let path = Path::new(p);
        let ours = path
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "quiesce");
        if ours {
            let _ = std::fs::remove_dir(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v2_and_v1_pids_in_hybrid_mountinfo() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let (v2, v1) = find_mounts(mi);
        assert_eq!(v2.unwrap(), PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(v1.unwrap(), PathBuf::from("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn finds_unified_v2() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_mounts(mi),
            (Some(PathBuf::from("/sys/fs/cgroup")), None)
        );
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(sanitize("../x/y"), "s.._x_y");
        assert_eq!(sanitize(""), "s");
        assert_eq!(sanitize("pre"), "pre");
    }
}
