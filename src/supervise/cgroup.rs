//! Per-script cgroup, best effort (SPEC §7): a place that holds the whole
//! tree whatever it does with sessions and double forks, `pids.max` against
//! fork bombs, and `cgroup.kill` to end it atomically. Nothing here fails a
//! run; every step that did not work is recorded in [`CgroupStatus`] for the
//! audit trail.
//!
//! Layout: `<cgroup2 mount><runner's own cgroup>/quiesce-<name>-<runner
//! pid>-<seq>`. Scripts stay inside the caller's subtree, so its systemd
//! unit's `MemoryMax`, `TasksMax` and `systemctl stop` keep applying to them.
//! cgroup v2's "no internal processes" rule allows a controller (here
//! `pids`) in a non-root cgroup's `cgroup.subtree_control` only once that
//! cgroup holds no process itself: when `pids` is offered, the runner first
//! moves itself into its own leaf `quiesce-runner-<pid>-0`, and if the
//! cgroup still holds other processes the scripts' cgroups go without
//! `pids` (membership and `cgroup.kill` still work). On hybrid systems (v1
//! controllers, v2 at `/sys/fs/cgroup/unified`) the `pids` controller
//! usually lives in the v1 `pids` hierarchy; then a sibling directory under
//! the runner's own v1 `pids` cgroup carries `pids.max`.
//! Earlier versions put script cgroups under `<mount>/quiesce/`; the sweep of
//! dead runners' cgroups still covers that directory.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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

/// How the child joins its cgroups: cloned into the v2 directory
/// (`v2_dir`), else by writing "0" to that directory's `cgroup.procs`
/// (`v2`); and by writing "0" to the v1 pids directory's `tasks`.
pub(crate) struct JoinFds {
    pub v2: Option<OwnedFd>,
    pub v2_dir: Option<OwnedFd>,
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

/// Moves `pid` into the root cgroup of the v2 hierarchy and of a v1
/// `freezer` hierarchy, out of the cgroup (the unit) of the runner: a freeze
/// of that cgroup (`systemctl freeze`, `cgroup.freeze`, the v1 freezer) must
/// not stop the process that guards against a stopped runner (SPEC §6.4
/// point 4). The root cgroup cannot be frozen. Why not, when it could not.
pub fn move_to_root(pid: i32) -> Result<(), String> {
    let mut failed = Vec::new();
    for procs in root_procs_to_join(pid)? {
        if let Err(e) = write_file(&procs, &pid.to_string()) {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The `cgroup.procs` of the root cgroups process `pid` must join to leave
/// its unit's reach: the cgroup v2 root (where systemd tracks and kills a
/// unit's processes) and the v1 freezer's root (where a unit is frozen),
/// each only when `pid` is not at that root already — a migration of
/// another process takes the cgroup tree's threadgroup lock and its RCU
/// grace periods, which a cold FIFREEZE right after pays again (~9 ms
/// measured on a 2-core VM).
pub fn root_procs_to_join(pid: i32) -> Result<Vec<PathBuf>, String> {
    let (v2, freezer) = roots_to_join(pid)?;
    Ok(v2
        .into_iter()
        .chain(freezer)
        .map(|root| root.join("cgroup.procs"))
        .collect())
}

/// How a process forked now leaves this process's unit for the root
/// cgroups ([`root_procs_to_join`]) without the tree-wide lock: cloned
/// into the v2 root (`v2_dir`, for `clone3`), else by writing "0" to its
/// `cgroup.procs` (`v2_procs`); and by writing "0" to the v1 freezer
/// root's `tasks` (`v1_tasks`), which moves only the writing thread — the
/// forked process's only one.
#[derive(Debug, Default)]
pub struct RootJoin {
    pub v2_dir: Option<OwnedFd>,
    pub v2_procs: Option<PathBuf>,
    pub v1_tasks: Option<PathBuf>,
}

/// [`RootJoin`] for a child of this process.
pub fn root_join_for_child() -> Result<RootJoin, String> {
    let (v2, freezer) = roots_to_join(std::process::id() as i32)?;
    Ok(RootJoin {
        v2_dir: v2.as_deref().and_then(open_dir),
        v2_procs: v2.map(|root| root.join("cgroup.procs")),
        v1_tasks: freezer.map(|root| root.join("tasks")),
    })
}

/// The mount points of the v2 hierarchy and of the v1 freezer hierarchy
/// whose root cgroup `pid` is not in.
fn roots_to_join(pid: i32) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {}", errno_of(&e)))?;
    let (v2, _) = find_mounts(&mountinfo);
    let freezer = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, opts) = (r.next()?, r.nth(1)?);
        let point = left.split(' ').nth(4)?;
        (fstype == "cgroup" && opts.split(',').any(|o| o == "freezer"))
            .then(|| PathBuf::from(point.replace("\\040", " ")))
    });
    let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let at_root = |hierarchy: &dyn Fn(&str) -> bool| {
        now.lines().any(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            hierarchy(controllers) && path == "/"
        })
    };
    let v2_root = at_root(&|c: &str| c.is_empty());
    let freezer_root = at_root(&|c: &str| c.split(',').any(|x| x == "freezer"));
    Ok((v2.filter(|_| !v2_root), freezer.filter(|_| !freezer_root)))
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

/// `file` of the cgroup directory `dir` (`cgroup.procs` or v1's `tasks`),
/// opened for the child's join.
fn open_join(dir: &Path, file: &str) -> Result<OwnedFd, String> {
    let path = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path) // std opens with O_CLOEXEC
        .map(OwnedFd::from)
        .map_err(|e| format!("open {}: {}", path.display(), errno_of(&e)))
}

/// The cgroup v2 directory `dir` itself, for `clone3(CLONE_INTO_CGROUP)`;
/// `None` leaves the join to the `cgroup.procs` write.
fn open_dir(dir: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .ok()
        .map(OwnedFd::from)
}

fn has_word(path: &Path, word: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().any(|w| w == word))
        .unwrap_or(false)
}

/// Prefix of every cgroup directory quiesce creates in the runner's own cgroup.
const PREFIX: &str = "quiesce-";

/// The directories script cgroups are created in: the runner's own cgroup
/// in the v2 hierarchy and in the v1 `pids` hierarchy, as they were when
/// this process first looked (before it moved itself into a leaf).
#[derive(Debug, Clone, Default)]
struct Bases {
    v2: Option<PathBuf>,
    v1_pids: Option<PathBuf>,
    /// Why there is no v2 base.
    v2_missing: Option<String>,
}

/// The runner's own cgroup paths from `/proc/self/cgroup`: the v2 entry
/// (`0::PATH`) and the v1 `pids` entry (`N:pids:PATH`).
pub(crate) fn own_cgroups(proc_cgroup: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1_pids = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "pids") {
            v1_pids = Some(path.to_string());
        }
    }
    (v2, v1_pids)
}

/// `mount` joined with a cgroup path as `/proc/self/cgroup` writes it. A
/// path outside this namespace's view (` (deleted)`, `/..`) gives `None`.
fn under_mount(mount: &Path, cgroup: &str) -> Option<PathBuf> {
    let rel = cgroup.strip_prefix('/')?;
    if rel.split('/').any(|c| c == ".." || c == ".") || cgroup.ends_with(" (deleted)") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    })
}

fn bases() -> &'static Bases {
    static BASES: OnceLock<Bases> = OnceLock::new();
    BASES.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let (v2_root, v1_root) = find_mounts(&mountinfo);
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let (own_v2, own_v1) = own_cgroups(&own);
        let mut b = Bases::default();
        match (&v2_root, &own_v2) {
            (None, _) => b.v2_missing = Some("no cgroup v2 hierarchy mounted".into()),
            (Some(_), None) => {
                b.v2_missing =
                    Some("the runner's cgroup v2 path is not in /proc/self/cgroup".into())
            }
            (Some(root), Some(own)) => match under_mount(root, own) {
                Some(dir) if dir.is_dir() => b.v2 = Some(dir),
                _ => {
                    b.v2_missing = Some(format!(
                        "the runner's own cgroup {own} is not visible under {}",
                        root.display()
                    ))
                }
            },
        }
        b.v1_pids = v1_root
            .zip(own_v1)
            .and_then(|(root, own)| under_mount(&root, &own))
            .filter(|d| d.is_dir());
        b
    })
}

/// Removes the empty script cgroups a runner that died (SIGKILL, OOM) left
/// behind: in this runner's own cgroups (where runners started from the same
/// unit put them) and in the `<mount>/quiesce/` directory of earlier
/// versions. Only directories whose name carries the pid of a runner that no
/// longer exists are touched, so a live run's cgroup is never raced; a
/// directory still holding processes cannot be removed (EBUSY) and stays.
/// Returns how many were removed.
pub fn sweep_stale() -> usize {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2_root, v1_root) = find_mounts(&mountinfo);
    let b = bases();
    let legacy = [v2_root, v1_root]
        .into_iter()
        .flatten()
        .map(|root| (root.join("quiesce"), ""));
    let own = [&b.v2, &b.v1_pids]
        .into_iter()
        .flatten()
        .map(|dir| (dir.clone(), PREFIX));
    let mut removed = 0;
    for (dir, prefix) in legacy.chain(own) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(prefix) {
                continue;
            }
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

/// Makes `pids` available to the children of `base` (the runner's own v2
/// cgroup), once per process: where the controller is offered but not yet
/// enabled, the runner moves itself into its own leaf first (cgroup v2 lets
/// a non-root cgroup enable controllers for its children only while it
/// holds no process). Returns whether `pids` is enabled, or why not.
fn enable_pids_below(base: &Path) -> Result<bool, String> {
    static ENABLED: OnceLock<Result<bool, String>> = OnceLock::new();
    ENABLED
        .get_or_init(|| {
            let subtree = base.join("cgroup.subtree_control");
            if has_word(&subtree, "pids") {
                return Ok(true);
            }
            if !has_word(&base.join("cgroup.controllers"), "pids") {
                return Ok(false);
            }
            // The root cgroup (no cgroup.type) is the machine's: its
            // controllers are the init system's to enable, never ours.
            if !base.join("cgroup.type").exists() {
                return Ok(false);
            }
            let leaf = base.join(format!("{PREFIX}runner-{}-0", std::process::id()));
            mkdir(&leaf)?;
            write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            write_file(&subtree, "+pids").map(|()| true).map_err(|e| {
                format!("{e} (other processes share the runner's cgroup; scripts get no pids.max there)")
            })
        })
        .clone()
}

/// Creates the script's cgroup(s) before the fork and opens the
/// `cgroup.procs` files the child will write to. Never fails: what did not
/// work is in `status.notes`.
pub(crate) fn prepare(req: &CgroupRequest, status: &mut CgroupStatus) -> (ScriptCgroup, JoinFds) {
    status.requested = true;
    let mut cg = ScriptCgroup::default();
    let mut fds = JoinFds {
        v2: None,
        v2_dir: None,
        v1_pids: None,
    };
    let b = bases();
    let leaf = format!(
        "{PREFIX}{}-{}-{}",
        sanitize(&req.name),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );

    let mut v2_has_pids = false;
    match &b.v2 {
        None => status.notes.push(b.v2_missing.clone().unwrap_or_default()),
        Some(base) => {
            if req.pids_max.is_some() {
                match enable_pids_below(base) {
                    Ok(on) => v2_has_pids = on,
                    Err(e) => status.notes.push(e),
                }
            }
            let dir = base.join(&leaf);
            match mkdir(&dir).and_then(|()| open_join(&dir, "cgroup.procs")) {
                Ok(fd) => {
                    status.path = Some(dir.display().to_string());
                    fds.v2 = Some(fd);
                    fds.v2_dir = open_dir(&dir);
                    cg.v2 = Some(dir.clone());
                    if let (Some(max), true) = (req.pids_max, v2_has_pids) {
                        match write_file(&dir.join("pids.max"), &max.to_string()) {
                            Ok(()) => status.pids_max = Some(max),
                            Err(e) => {
                                v2_has_pids = false;
                                status.notes.push(e)
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    status.notes.push(format!(
                        "{e} (the runner's own cgroup is not delegated to it; scripts run without a cgroup)"
                    ));
                }
            }
        }
    }

    // The v1 pids hierarchy: only for pids.max the v2 side could not set,
    // or for membership when there is no usable v2 side at all.
    let want_v1 = (req.pids_max.is_some() && !v2_has_pids) || cg.v2.is_none();
    if want_v1 {
        match &b.v1_pids {
            None if req.pids_max.is_some() => status.notes.push(
                "pids controller unavailable (neither in cgroup v2 nor as a v1 hierarchy)".into(),
            ),
            None => {}
            Some(base) => {
                let dir = base.join(&leaf);
                let limited = mkdir(&dir).and_then(|()| match req.pids_max {
                    Some(max) => {
                        write_file(&dir.join("pids.max"), &max.to_string()).map(|()| Some(max))
                    }
                    None => Ok(None),
                });
                match limited.and_then(|max| open_join(&dir, "tasks").map(|fd| (max, fd))) {
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

/// A recorded cgroup directory quiesce made for a script (never another).
fn is_ours(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX))
        || path
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "quiesce")
}

/// Removes cgroup directories recorded with leftovers, if they are empty now
/// and look like ours (named `quiesce-…`, or in the `quiesce` parent
/// directory of earlier versions). Errors are ignored: a populated
/// directory simply stays.
pub(crate) fn remove_recorded(paths: &[String]) {
    for p in paths {
        let path = Path::new(p);
        if is_ours(path) {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// Whether descendants in the recorded script cgroups `paths` keep forking
/// after their script exited: forks refused at `pids.max` (`pids.events`:
/// `max N`), or more members now than the `scanned` leftovers found a
/// moment ago (or than now, 25 ms later). Says how, when so.
pub fn forking(paths: &[String], scanned: usize) -> Option<String> {
    let ours: Vec<&Path> = paths.iter().map(Path::new).filter(|p| is_ours(p)).collect();
    let refused: u64 = ours
        .iter()
        .filter_map(|p| std::fs::read_to_string(p.join("pids.events")).ok())
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
        })
        .sum();
    if refused > 0 {
        return Some(format!("its cgroup refused {refused} fork(s) at pids.max"));
    }
    let count = || -> usize {
        let mut all: HashSet<i32> = HashSet::new();
        for p in &ours {
            all.extend(read_procs(p));
        }
        all.len()
    };
    let before = count();
    if before == 0 {
        return None;
    }
    if before > scanned {
        return Some(format!(
            "{scanned} left running at the scan, {before} in its cgroup moments later"
        ));
    }
    std::thread::sleep(std::time::Duration::from_millis(25));
    let after = count();
    (after > before)
        .then(|| format!("{before} process(es) in its cgroup became {after} within 25 ms"))
}

/// Ends every process still in the recorded script cgroups `paths` — what
/// escaped the recorded holders (SPEC §7): `cgroup.kill` on v2; on a v1
/// `pids` cgroup, no more forks (`pids.max` 0), then SIGKILL to every member
/// until none is left. Bounded; returns the pids that were in them.
pub(crate) fn end_members(paths: &[String]) -> Vec<i32> {
    let mut seen = Vec::new();
    for p in paths.iter().map(Path::new).filter(|p| is_ours(p)) {
        let v2 = p.join("cgroup.kill").exists();
        if !v2 {
            let _ = write_file(&p.join("pids.max"), "0");
        }
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let members = read_procs(p);
            if members.is_empty() || std::time::Instant::now() > end {
                break;
            }
            for m in &members {
                if !seen.contains(m) {
                    seen.push(*m);
                }
            }
            if v2 {
                let _ = write_file(&p.join("cgroup.kill"), "1");
            } else {
                for m in &members {
                    // Our cgroup's members: a recycled pid cannot be in it.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*m),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    seen
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
    fn own_cgroups_of_hybrid_and_unified_hierarchies() {
        let hybrid = "9:name=systemd:/system.slice/x.service\n8:pids:/system.slice/x.service\n4:memory:/m\n0::/system.slice/x.service\n";
        assert_eq!(
            own_cgroups(hybrid),
            (
                Some("/system.slice/x.service".into()),
                Some("/system.slice/x.service".into())
            )
        );
        assert_eq!(own_cgroups("0::/\n"), (Some("/".into()), None));
    }

    #[test]
    fn own_cgroup_paths_stay_under_the_mount() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(under_mount(m, "/"), Some(m.to_path_buf()));
        assert_eq!(
            under_mount(m, "/user.slice/a.scope"),
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/a.scope"))
        );
        assert_eq!(under_mount(m, "/../../etc"), None);
        assert_eq!(under_mount(m, "/gone (deleted)"), None);
        assert_eq!(under_mount(m, "relative"), None);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(sanitize("../x/y"), "s.._x_y");
        assert_eq!(sanitize(""), "s");
        assert_eq!(sanitize("pre"), "pre");
    }
}
