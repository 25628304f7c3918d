//! Mount discovery and the freeze plan (SPEC.md §6.1).
//!
//! Planning is pure: it takes mountinfo text, the `vmbackup.conf` text and a
//! [`BlockInfo`] oracle for loop devices, so every rule is tested on fixture
//! text without freezing anything. Only [`load_mounts`],
//! [`read_vmbackup_conf`], [`SysBlockInfo`] and [`discover_system`] read the
//! running system, and nothing here opens a mount point: opening an autofs
//! mount point mounts it, and the freeze code opens its descriptors itself,
//! just before the window.
//!
//! The plan lists every mount with the reason it is in or out (what
//! `quiesce check` shows), and the order in which the frozen ones must be
//! frozen. Thaw is the exact reverse of what actually froze; the caller
//! records that, not this module.

use serde::{Serialize, Serializer};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

use crate::error::ErrorCode;

/// Where the kernel describes the mounts this process sees.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
/// The Azure extension's own settings; its `MountsToSkip` is honoured (§6.1).
pub const VMBACKUP_CONF_PATH: &str = "/etc/azure/vmbackup.conf";
/// Filesystem types discovery freezes; any other type only with `--mount`.
pub const DISCOVERED_FS_TYPES: [&str; 5] = ["ext2", "ext3", "ext4", "xfs", "btrfs"];

// vmbackup.conf only ever holds a few lines; a huge file is not worth reading.
const VMBACKUP_CONF_MAX_BYTES: u64 = 1 << 20;

// Shared over the network: freezing the client does nothing for the server's
// consistency and FIFREEZE is not supported on them.
const NETWORK_FS_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "ncpfs",
    "lustre",
    "beegfs",
    "virtiofs",
];
// Kernel and memory filesystems: no disk behind them, nothing to make
// consistent, and the kernel refuses FIFREEZE on them.
const PSEUDO_FS_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "ramfs",
    "rootfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "efivarfs",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nfsd",
    "nsfs",
    "selinuxfs",
];
// Stacked on another filesystem: the one underneath is what must be frozen.
const STACKED_FS_TYPES: &[&str] = &["overlay", "aufs", "ecryptfs"];
// Read-only by construction (snap packages, installation media).
const IMAGE_FS_TYPES: &[&str] = &["squashfs", "iso9660", "erofs", "cramfs", "romfs"];

/// One line of `/proc/self/mountinfo` (proc(5)), with octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem this mount shows (`/` unless it is a
    /// bind mount of a subdirectory or a btrfs subvolume).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// The per-mount options contain `ro`.
    pub read_only: bool,
    /// Propagation tags such as `shared:1`, `master:2`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
    /// The superblock options contain `ro`.
    pub super_read_only: bool,
}

impl MountInfo {
    /// The superblock's device as `major:minor`, the way the status JSON and
    /// `/sys/dev/block` spell it.
    pub fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    fn superblock(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// Mountinfo text the parser does not understand.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MountinfoError {
    #[error("mountinfo line {line} is malformed: {what}")]
    Malformed { line: usize, what: String },
}

/// Failures of the helpers that read the running system.
#[derive(Debug, Error)]
pub enum DiscoverError {
    #[error("cannot read {0}: {1}")]
    ReadMountinfo(PathBuf, io::Error),
    #[error("cannot read {0}: {1}")]
    ReadVmbackupConf(PathBuf, io::Error),
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
}

/// A `--mount` the plan cannot honour. Each one names the path as given.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    #[error("mount {0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} is not a mount point")]
    NotAMountPoint(PathBuf),
    #[error(
        "{path} is a mount point hidden under a later mount on {under}, so it cannot be opened"
    )]
    Hidden { path: PathBuf, under: PathBuf },
    #[error("{path} cannot be frozen: {why}")]
    CannotFreeze {
        path: PathBuf,
        fs_type: String,
        why: String,
    },
}

impl PlanError {
    /// Every plan error means a mount to freeze cannot be opened and frozen
    /// (SPEC.md §4, 123).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::UnableToOpenMount
    }

    /// What the operator does about it.
    pub fn fix(&self) -> crate::error::Fix {
        use crate::error::Fix;
        match self {
            PlanError::NotAbsolute(p) | PlanError::NotAMountPoint(p) => Fix::Mount(p.clone()),
            PlanError::Hidden { path, .. } => Fix::Mount(path.clone()),
            PlanError::CannotFreeze { path, .. } => Fix::Unfreezable(path.clone()),
        }
    }
}

/// One mount of the input and the verdict on it (SPEC.md §9 `mounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    #[serde(serialize_with = "serialize_path_lossy")]
    pub path: PathBuf,
    pub fs_type: String,
    /// `major:minor` of the superblock.
    pub device: String,
    pub source: String,
    pub freeze: bool,
    pub reason: String,
    /// The freeze code compares these with `fstat` of the descriptor it
    /// opens, so a mount changed since planning is never frozen by mistake.
    #[serde(skip)]
    pub major: u32,
    #[serde(skip)]
    pub minor: u32,
    #[serde(skip)]
    pub mount_id: u32,
    /// The stage it is frozen in (1 first; set on frozen entries only): the
    /// filesystems of one stage are frozen concurrently (SPEC.md §6.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// Every mount with its verdict, plus the order to freeze the chosen ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountPlan {
    /// One per mountinfo line, in mountinfo order.
    pub entries: Vec<PlanEntry>,
    /// Things the operator should know that do not stop the run (unmatched
    /// `MountsToSkip` entries, a dependency cycle in the order).
    pub warnings: Vec<String>,
    // Indices into `entries`, freeze order.
    order: Vec<usize>,
}

impl MountPlan {
    /// The entries with `freeze == true`, in the order they must be frozen:
    /// loop-backed filesystems before the filesystem holding their image,
    /// nested mounts before their parents, `/` last.
    /// Stage by stage (stages in order, and within a stage in the order of
    /// the rules' tie-break: deeper first, then by path).
    pub fn freeze_order(&self) -> Vec<&PlanEntry> {
        self.order.iter().map(|&i| &self.entries[i]).collect()
    }

    /// The frozen entries as numbered stages: stage `k` (index `k - 1`) holds
    /// the filesystems none of which must precede another, frozen
    /// concurrently once every freeze of stage `k - 1` has completed.
    pub fn stages(&self) -> Vec<Vec<&PlanEntry>> {
        let mut stages: Vec<Vec<&PlanEntry>> = Vec::new();
        for e in self.freeze_order() {
            let k = e.stage.unwrap_or(1).max(1) as usize;
            if stages.len() < k {
                stages.resize_with(k, Vec::new);
            }
            stages[k - 1].push(e);
        }
        stages
    }
}

/// What the plan needs to know about block devices: which file backs a loop
/// device. A trait so the order rules are tested without loop devices.
pub trait BlockInfo {
    /// The backing file of loop device `major:minor`; `None` when it is not a
    /// loop device.
    fn loop_backing_file(&self, major: u32, minor: u32) -> Option<PathBuf>;

    /// The same, found by the mount's source (`/dev/loop3`). Needed for btrfs,
    /// whose mountinfo device is an anonymous `0:N`, not the block device.
    fn loop_backing_file_of_source(&self, source: &str) -> Option<PathBuf> {
        let _ = source;
        None
    }
}

/// [`BlockInfo`] of the running kernel, read from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysBlockInfo {
    sys_root: PathBuf,
}

impl Default for SysBlockInfo {
    fn default() -> Self {
        SysBlockInfo {
            sys_root: PathBuf::from("/sys"),
        }
    }
}

impl SysBlockInfo {
    /// Reads sysfs under `sys_root` instead of `/sys` (tests).
    pub fn with_sys_root(sys_root: impl Into<PathBuf>) -> Self {
        SysBlockInfo {
            sys_root: sys_root.into(),
        }
    }
}

impl BlockInfo for SysBlockInfo {
    fn loop_backing_file(&self, major: u32, minor: u32) -> Option<PathBuf> {
        let file = self
            .sys_root
            .join(format!("dev/block/{major}:{minor}/loop/backing_file"));
        parse_backing_file(&std::fs::read(file).ok()?)
    }

    fn loop_backing_file_of_source(&self, source: &str) -> Option<PathBuf> {
        let name = source.strip_prefix("/dev/")?;
        let number = name.strip_prefix("loop")?;
        // Only plain /dev/loopN: the name becomes a sysfs path component.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let file = self
            .sys_root
            .join(format!("block/{name}/loop/backing_file"));
        parse_backing_file(&std::fs::read(file).ok()?)
    }
}

// sysfs prints the path with a newline, and with " (deleted)" when the image
// was unlinked while attached; the filesystem that held it still holds it.
fn parse_backing_file(bytes: &[u8]) -> Option<PathBuf> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    if bytes.is_empty() {
        return None;
    }
    Some(PathBuf::from(OsString::from_vec(bytes.to_vec())))
}

/// Parses `/proc/self/mountinfo` text. Blank lines are ignored; any other
/// line that does not have the proc(5) shape is an error naming its number.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, MountinfoError> {
    parse_mountinfo_bytes(text.as_bytes())
}

/// [`parse_mountinfo`] on raw bytes: the kernel escapes only space, tab,
/// newline and backslash, so a mount point may be any other byte string.
pub fn parse_mountinfo_bytes(bytes: &[u8]) -> Result<Vec<MountInfo>, MountinfoError> {
    let mut mounts = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        mounts.push(parse_line(line, index + 1)?);
    }
    Ok(mounts)
}

fn parse_line(line: &[u8], number: usize) -> Result<MountInfo, MountinfoError> {
    let malformed = |what: String| MountinfoError::Malformed { line: number, what };
    // Single spaces separate fields; an empty source shows as an empty field.
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 6 {
        return Err(malformed(format!(
            "{} fields before the separator, expected at least 6",
            fields.len()
        )));
    }
    // The first six fields are never "-" (paths are absolute), so the
    // separator is searched after them.
    let separator = fields[6..]
        .iter()
        .position(|f| *f == b"-")
        .map(|p| p + 6)
        .ok_or_else(|| malformed("no \" - \" separator before the filesystem type".into()))?;
    if fields.len() < separator + 4 {
        return Err(malformed(
            "expected filesystem type, source and superblock options after \" - \"".into(),
        ));
    }
    let number_field = |name: &str, field: &[u8]| -> Result<u32, MountinfoError> {
        std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                malformed(format!(
                    "{name} {:?} is not a number",
                    String::from_utf8_lossy(field)
                ))
            })
    };
    let mount_id = number_field("mount id", fields[0])?;
    let parent_id = number_field("parent id", fields[1])?;
    let device = fields[2];
    let colon = device
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("device is not major:minor".into()))?;
    let major = number_field("major", &device[..colon])?;
    let minor = number_field("minor", &device[colon + 1..])?;
    let root = unescape_path(fields[3]);
    let mount_point = unescape_path(fields[4]);
    if !root.is_absolute() || !mount_point.is_absolute() {
        return Err(malformed(
            "root and mount point must be absolute paths".into(),
        ));
    }
    let mount_options = unescape_string(fields[5]);
    let optional_fields = fields[6..separator]
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| unescape_string(f))
        .collect();
    let fs_type = unescape_string(fields[separator + 1]);
    if fs_type.is_empty() {
        return Err(malformed("empty filesystem type".into()));
    }
    let source = unescape_string(fields[separator + 2]);
    let super_options = unescape_string(fields[separator + 3]);
    Ok(MountInfo {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        read_only: has_option(&mount_options, "ro"),
        mount_options,
        optional_fields,
        fs_type,
        source,
        super_read_only: has_option(&super_options, "ro"),
        super_options,
    })
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

// The kernel writes space, tab, newline and backslash as \ooo (seq_file's
// mangle); anything else after a backslash is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits[0] <= b'3' && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits.iter().fold(0u8, |acc, d| acc * 8 + (d - b'0'));
                    // INVARIANT: first digit <= 3, so the value fits a byte.
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn unescape_path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn unescape_string(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// `MountsToSkip` of section `[SnapshotThread]` in `vmbackup.conf`, read the
/// way the extension's python ConfigParser reads it: `=` or `:` separates
/// key and value, keys are case-insensitive, section names are not, lines
/// starting with `#` or `;` are comments, indented lines continue a value.
/// The value is a comma-separated list of mount points. Missing section or
/// key: nothing is skipped.
pub fn parse_mounts_to_skip(ini_text: &str) -> Vec<PathBuf> {
    let mut in_section = false;
    let mut value: Option<String> = None;
    // The last key line read was MountsToSkip: indented lines extend it.
    let mut continuing = false;
    for raw in ini_text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if continuing && line.len() != trimmed.len() {
            if let Some(v) = value.as_mut() {
                v.push('\n');
                v.push_str(trimmed);
            }
            continue;
        }
        continuing = false;
        if let Some(header) = trimmed.strip_prefix('[') {
            if let Some(end) = header.rfind(']') {
                in_section = &header[..end] == "SnapshotThread";
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            continue;
        };
        if trimmed[..split].trim().eq_ignore_ascii_case("MountsToSkip") {
            value = Some(trimmed[split + 1..].trim().to_string());
            continuing = true;
        }
    }
    value
        .map(|v| {
            v.split([',', '\n'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| normalize(Path::new(p)))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsClass {
    Discovered,
    Other,
    Network,
    Fuse,
    Pseudo,
    Stacked,
    Image,
}

fn classify(fs_type: &str) -> FsClass {
    if DISCOVERED_FS_TYPES.contains(&fs_type) {
        FsClass::Discovered
    } else if NETWORK_FS_TYPES.contains(&fs_type) {
        FsClass::Network
    } else if fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.") {
        FsClass::Fuse
    } else if PSEUDO_FS_TYPES.contains(&fs_type) {
        FsClass::Pseudo
    } else if STACKED_FS_TYPES.contains(&fs_type) {
        FsClass::Stacked
    } else if IMAGE_FS_TYPES.contains(&fs_type) {
        FsClass::Image
    } else {
        FsClass::Other
    }
}

/// Why a filesystem of this type is never frozen, even when named.
fn never_frozen(fs_type: &str) -> Option<String> {
    match classify(fs_type) {
        FsClass::Network => Some(format!("network filesystem ({fs_type})")),
        FsClass::Fuse => Some(format!("FUSE filesystem ({fs_type})")),
        FsClass::Pseudo => Some(format!("pseudo filesystem ({fs_type})")),
        FsClass::Stacked => Some(format!(
            "stacked filesystem ({fs_type}); freeze the filesystem under it instead"
        )),
        FsClass::Image => Some(format!("read-only image filesystem ({fs_type})")),
        FsClass::Discovered | FsClass::Other => None,
    }
}

const READ_ONLY: &str = "read-only";
const NOT_NAMED: &str = "not named with --mount";

fn duplicate_reason(of: &Path) -> String {
    format!(
        "same filesystem as {} (bind mount or subvolume; frozen once)",
        of.display()
    )
}

fn hidden_reason(under: &Path) -> String {
    format!(
        "hidden under a later mount on {}; it cannot be opened",
        under.display()
    )
}

fn skip_reason() -> String {
    format!("listed in MountsToSkip of {VMBACKUP_CONF_PATH}")
}

// `/a/b/` and `/a/./b` name the same mount point as `/a/b`.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// The mounts with what path lookup would see of them.
struct MountTable<'a> {
    mounts: &'a [MountInfo],
    by_id: HashMap<u32, usize>,
    // The last mount on each mount point is the one on top.
    top_at: HashMap<&'a Path, usize>,
    hidden_under: Vec<Option<&'a Path>>,
}

impl<'a> MountTable<'a> {
    fn new(mounts: &'a [MountInfo]) -> Self {
        let mut by_id = HashMap::new();
        let mut top_at = HashMap::new();
        for (i, m) in mounts.iter().enumerate() {
            by_id.insert(m.mount_id, i);
            top_at.insert(m.mount_point.as_path(), i);
        }
        let mut table = MountTable {
            mounts,
            by_id,
            top_at,
            hidden_under: Vec::new(),
        };
        table.hidden_under = (0..mounts.len()).map(|i| table.covered_at(i)).collect();
        table
    }

    /// The parent mount, or `None` for the root of what this process sees.
    fn parent(&self, i: usize) -> Option<usize> {
        let p = *self.by_id.get(&self.mounts[i].parent_id)?;
        (p != i).then_some(p)
    }

    /// Where mount `i` is covered, if path lookup cannot reach it: a later
    /// mount on its own mount point or on one of its ancestors' (a mount
    /// on the parent's root dentry, "over-mounting", is how mounts stack).
    fn covered_at(&self, i: usize) -> Option<&'a Path> {
        let mounts = self.mounts;
        let mut j = i;
        // Parent ids can only loop in corrupt input; bound the walk.
        let mut steps = 0;
        loop {
            let at = mounts[j].mount_point.as_path();
            if self.top_at.get(at) != Some(&j) {
                return Some(at);
            }
            let mut p = self.parent(j)?;
            // Mounts stacked under j on the same mount point are covered by
            // j itself; the mount they all sit in is below them.
            while mounts[p].mount_point == mounts[j].mount_point {
                p = self.parent(p)?;
                steps += 1;
                if steps > mounts.len() {
                    return None;
                }
            }
            j = p;
            steps += 1;
            if steps > mounts.len() {
                return None;
            }
        }
    }

    fn visible(&self, i: usize) -> bool {
        self.hidden_under[i].is_none()
    }

    /// The visible mount that holds `file`: the one whose mount point is its
    /// longest prefix, component by component.
    fn holder_of(&self, file: &Path) -> Option<usize> {
        (0..self.mounts.len())
            .filter(|&i| self.visible(i) && file.starts_with(&self.mounts[i].mount_point))
            .max_by_key(|&i| depth(&self.mounts[i].mount_point))
    }
}

fn entry(m: &MountInfo, freeze: bool, reason: String) -> PlanEntry {
    PlanEntry {
        path: m.mount_point.clone(),
        fs_type: m.fs_type.clone(),
        device: m.device(),
        source: m.source.clone(),
        freeze,
        reason,
        major: m.major,
        minor: m.minor,
        mount_id: m.mount_id,
        stage: None,
    }
}

/// Discovery (no `--mount`): local ext2/3/4, xfs and btrfs filesystems that
/// are read-write, once per superblock, minus `mounts_to_skip`.
///
/// A superblock with any mount point listed in `MountsToSkip` is skipped
/// as a whole: freezing it through a bind mount would freeze what the
/// operator asked to leave alone.
pub fn plan_discovered(
    mounts: &[MountInfo],
    mounts_to_skip: &[PathBuf],
    block: &dyn BlockInfo,
) -> MountPlan {
    let table = MountTable::new(mounts);
    let skip: Vec<PathBuf> = mounts_to_skip.iter().map(|p| normalize(p)).collect();
    let listed = |i: usize| skip.iter().any(|s| *s == mounts[i].mount_point);

    let mut verdicts: Vec<Option<(bool, String)>> = vec![None; mounts.len()];
    // Candidate mounts per superblock, superblocks in order of first mount.
    let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        match classify(&m.fs_type) {
            FsClass::Discovered => {}
            FsClass::Other => {
                verdicts[i] = Some((
                    false,
                    format!("type {} is frozen only when named with --mount", m.fs_type),
                ));
                continue;
            }
            _ => {
                verdicts[i] = never_frozen(&m.fs_type).map(|why| (false, why));
                continue;
            }
        }
        if let Some(under) = table.hidden_under[i] {
            verdicts[i] = Some((false, hidden_reason(under)));
            continue;
        }
        match groups.iter_mut().find(|(sb, _)| *sb == m.superblock()) {
            Some((_, members)) => members.push(i),
            None => groups.push((m.superblock(), vec![i])),
        }
    }

    let mut frozen = Vec::new();
    for (_, members) in &groups {
        if let Some(&first_listed) = members.iter().find(|&&i| listed(i)) {
            for &i in members {
                let reason = if listed(i) {
                    skip_reason()
                } else {
                    format!(
                        "same filesystem as {}, which is listed in MountsToSkip of {VMBACKUP_CONF_PATH}",
                        mounts[first_listed].mount_point.display()
                    )
                };
                verdicts[i] = Some((false, reason));
            }
            continue;
        }
        let super_read_only = members.iter().any(|&i| mounts[i].super_read_only);
        // The representative: the whole filesystem (root "/") if mounted,
        // else the shortest mount point, else the first.
        let representative = members
            .iter()
            .copied()
            .filter(|&i| !super_read_only && !mounts[i].read_only)
            .min_by_key(|&i| {
                (
                    mounts[i].root != Path::new("/"),
                    depth(&mounts[i].mount_point),
                    i,
                )
            });
        for &i in members {
            verdicts[i] = Some(match representative {
                None => (false, READ_ONLY.to_string()),
                Some(r) if r == i => (true, format!("local {}, read-write", mounts[i].fs_type)),
                Some(r) => (false, duplicate_reason(&mounts[r].mount_point)),
            });
        }
        frozen.extend(representative);
    }

    let mut warnings: Vec<String> = skip
        .iter()
        .filter(|s| !mounts.iter().any(|m| m.mount_point == **s))
        .map(|s| {
            format!(
                "MountsToSkip entry {} of {VMBACKUP_CONF_PATH} names no mount point",
                s.display()
            )
        })
        .collect();
    build_plan(&table, verdicts, &frozen, block, &mut warnings)
}

/// `--mount` given: exactly the requested mount points, in any filesystem
/// type that can be frozen. Each request must name a mount point as written
/// in mountinfo (a trailing slash is fine; symbolic links are the caller's
/// to resolve, this function reads nothing). On a stacked mount point the
/// mount on top is the one meant. A second request for a filesystem already
/// requested (bind mount, subvolume) is reported and frozen once; a
/// read-only mount is reported and not frozen. `MountsToSkip` does not
/// apply: the operator named the mounts.
pub fn plan_explicit(
    mounts: &[MountInfo],
    requested: &[PathBuf],
    block: &dyn BlockInfo,
) -> Result<MountPlan, PlanError> {
    let table = MountTable::new(mounts);
    let mut chosen: Vec<usize> = Vec::new();
    for path in requested {
        if !path.is_absolute() {
            return Err(PlanError::NotAbsolute(path.clone()));
        }
        let wanted = normalize(path);
        let &i = table
            .top_at
            .get(wanted.as_path())
            .ok_or_else(|| PlanError::NotAMountPoint(path.clone()))?;
        if let Some(under) = table.hidden_under[i] {
            return Err(PlanError::Hidden {
                path: path.clone(),
                under: under.to_path_buf(),
            });
        }
        if let Some(why) = never_frozen(&mounts[i].fs_type) {
            return Err(PlanError::CannotFreeze {
                path: path.clone(),
                fs_type: mounts[i].fs_type.clone(),
                why,
            });
        }
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }

    let mut verdicts: Vec<Option<(bool, String)>> = vec![None; mounts.len()];
    let mut frozen: Vec<usize> = Vec::new();
    for &i in &chosen {
        let m = &mounts[i];
        verdicts[i] = Some(if m.read_only || m.super_read_only {
            (false, READ_ONLY.to_string())
        } else if let Some(&r) = frozen
            .iter()
            .find(|&&r| mounts[r].superblock() == m.superblock())
        {
            (false, duplicate_reason(&mounts[r].mount_point))
        } else {
            frozen.push(i);
            (
                true,
                format!("named with --mount ({}, read-write)", m.fs_type),
            )
        });
    }
    for (i, verdict) in verdicts.iter_mut().enumerate() {
        if verdict.is_none() {
            *verdict = Some(match table.hidden_under[i] {
                Some(under) => (false, hidden_reason(under)),
                None => (false, NOT_NAMED.to_string()),
            });
        }
    }
    let mut warnings = Vec::new();
    Ok(build_plan(&table, verdicts, &frozen, block, &mut warnings))
}

fn build_plan(
    table: &MountTable<'_>,
    verdicts: Vec<Option<(bool, String)>>,
    frozen: &[usize],
    block: &dyn BlockInfo,
    warnings: &mut Vec<String>,
) -> MountPlan {
    let mut entries: Vec<PlanEntry> = table
        .mounts
        .iter()
        .zip(verdicts)
        .map(|(m, v)| {
            // Every branch above sets a verdict; a gap would be a bug, and
            // "not frozen" is its safe reading.
            let (freeze, reason) = v.unwrap_or((false, "no rule applies".to_string()));
            entry(m, freeze, reason)
        })
        .collect();
    // Entries are one per mount, in mount order: mount indices are entry
    // indices.
    let order = freeze_order(table, frozen, block, warnings);
    for &(i, stage) in &order {
        entries[i].stage = Some(stage);
    }
    MountPlan {
        entries,
        warnings: std::mem::take(warnings),
        order: order.into_iter().map(|(i, _)| i).collect(),
    }
}

/// Orders the frozen mounts (indices into the table) and gives each its
/// stage. Edges "a before b": a is a loop device whose image lives on b
/// (freezing b first would hang a's freeze on writes to its image); a is
/// mounted inside b (nested before parent, like fsfreeze and qemu-ga). Ties:
/// deeper mount point first, then by path, so `/` comes last. See
/// [`stages_of`] for the stages.
fn freeze_order(
    table: &MountTable<'_>,
    frozen: &[usize],
    block: &dyn BlockInfo,
    warnings: &mut Vec<String>,
) -> Vec<(usize, u32)> {
    let mounts = table.mounts;
    let node_of: HashMap<(u32, u32), usize> = frozen
        .iter()
        .enumerate()
        .map(|(node, &i)| (mounts[i].superblock(), node))
        .collect();
    let frozen_node = |i: usize| node_of.get(&mounts[i].superblock()).copied();

    let mut loop_edges: HashSet<(usize, usize)> = HashSet::new();
    let mut nesting_edges: HashSet<(usize, usize)> = HashSet::new();
    for (a, &i) in frozen.iter().enumerate() {
        let m = &mounts[i];
        let backing = block
            .loop_backing_file(m.major, m.minor)
            .or_else(|| block.loop_backing_file_of_source(&m.source));
        if let Some(b) = backing
            .filter(|f| f.is_absolute())
            .and_then(|f| table.holder_of(&f))
            .and_then(frozen_node)
        {
            if b != a {
                loop_edges.insert((a, b));
            }
        }
        // Mounted inside a filesystem that is frozen, through any of its
        // mounts (a bind mount of it, a subvolume).
        let mut j = i;
        for _ in 0..mounts.len() {
            let Some(p) = table.parent(j) else { break };
            if let Some(b) = frozen_node(p).filter(|&b| b != a) {
                nesting_edges.insert((a, b));
            }
            j = p;
        }
        for (b, &k) in frozen.iter().enumerate() {
            let parent_path = &mounts[k].mount_point;
            if b != a && m.mount_point != *parent_path && m.mount_point.starts_with(parent_path) {
                nesting_edges.insert((a, b));
            }
        }
    }

    let key = |node: usize| {
        let path = &mounts[frozen[node]].mount_point;
        (Reverse(depth(path)), path.clone())
    };
    let all: Vec<(usize, usize)> = loop_edges.union(&nesting_edges).copied().collect();
    let loops_only: Vec<(usize, usize)> = loop_edges.iter().copied().collect();
    // The edges the order honours: every one, or (in a cycle) the loop ones.
    let mut honoured: Option<&[(usize, usize)]> = Some(&all);
    let nodes = match topological_order(frozen.len(), &all, key) {
        Ok(order) => order,
        Err(stuck) => {
            let names: Vec<String> = stuck
                .iter()
                .map(|&n| mounts[frozen[n]].mount_point.display().to_string())
                .collect();
            match topological_order(frozen.len(), &loops_only, key) {
                Ok(order) => {
                    honoured = Some(&loops_only);
                    warnings.push(format!(
                        "freeze order: loop devices and nesting of {} depend on each other; kept loop-before-image, nesting order not guaranteed",
                        names.join(", ")
                    ));
                    order
                }
                Err(_) => {
                    warnings.push(format!(
                        "freeze order: the loop devices of {} form a cycle; ordered by mount depth only",
                        names.join(", ")
                    ));
                    honoured = None;
                    let mut order: Vec<usize> = (0..frozen.len()).collect();
                    order.sort_by_key(|&n| key(n));
                    order
                }
            }
        }
    };
    let is_root = |n: usize| mounts[frozen[n]].mount_point == Path::new("/");
    let stage = stages_of(&nodes, honoured, is_root);
    let mut staged: Vec<(usize, u32)> = nodes.iter().map(|&n| (n, stage[n])).collect();
    // Stage by stage; within a stage the topological order (stable sort).
    staged.sort_by_key(|&(_, s)| s);
    staged.into_iter().map(|(n, s)| (frozen[n], s)).collect()
}

/// The stage of each node: one past the latest stage of the nodes it must
/// follow (so a stage holds only filesystems none of which must precede
/// another), `/` alone in the last stage. Without honoured edges (a cycle of
/// loop devices: no dependency is known to be safe) every node is a stage of
/// its own, in `order`.
fn stages_of(
    order: &[usize],
    honoured: Option<&[(usize, usize)]>,
    is_root: impl Fn(usize) -> bool,
) -> Vec<u32> {
    let mut stage = vec![0u32; order.len()];
    let Some(edges) = honoured else {
        for (k, &n) in order.iter().enumerate() {
            stage[n] = k as u32 + 1;
        }
        return stage;
    };
    for &n in order {
        let after = edges
            .iter()
            .filter(|&&(_, b)| b == n)
            .map(|&(a, _)| stage[a])
            .max()
            .unwrap_or(0);
        stage[n] = after + 1;
    }
    // `/` last, alone: everything is mounted inside it anyway, and this keeps
    // the rule when the plan holds `/` and a mount it does not contain.
    // Unless `/` must itself precede something (a cycle where only the loop
    // edges are kept: `/` on a loop device whose image is on a mount inside it).
    let root_leads = |n: usize| edges.iter().any(|&(a, _)| a == n);
    let others = order
        .iter()
        .filter(|&&n| !is_root(n))
        .map(|&n| stage[n])
        .max()
        .unwrap_or(0);
    for &n in order {
        if is_root(n) && !root_leads(n) {
            stage[n] = others + 1;
        }
    }
    stage
}

/// Kahn's algorithm taking the smallest `key` among the ready nodes, so the
/// result is deterministic. `Err` carries the nodes left in a cycle.
fn topological_order<K: Ord>(
    n: usize,
    edges: &[(usize, usize)],
    key: impl Fn(usize) -> K,
) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting_on = vec![0usize; n];
    let mut successors = vec![Vec::new(); n];
    for &(a, b) in edges {
        successors[a].push(b);
        waiting_on[b] += 1;
    }
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(next) = (0..n)
        .filter(|&v| !done[v] && waiting_on[v] == 0)
        .min_by_key(|&v| key(v))
    {
        done[next] = true;
        order.push(next);
        for &s in &successors[next] {
            waiting_on[s] -= 1;
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err((0..n).filter(|&v| !done[v]).collect())
    }
}

/// Discovery from text: parses mountinfo and `vmbackup.conf` (absent:
/// `None`, nothing skipped) and plans.
pub fn discover(
    mountinfo_text: &str,
    vmbackup_conf_text: Option<&str>,
    block: &dyn BlockInfo,
) -> Result<MountPlan, MountinfoError> {
    let mounts = parse_mountinfo(mountinfo_text)?;
    let skip = vmbackup_conf_text
        .map(parse_mounts_to_skip)
        .unwrap_or_default();
    Ok(plan_discovered(&mounts, &skip, block))
}

/// The mounts of this process, from [`MOUNTINFO_PATH`].
pub fn load_mounts() -> Result<Vec<MountInfo>, DiscoverError> {
    let bytes = std::fs::read(MOUNTINFO_PATH)
        .map_err(|e| DiscoverError::ReadMountinfo(PathBuf::from(MOUNTINFO_PATH), e))?;
    Ok(parse_mountinfo_bytes(&bytes)?)
}

/// The text of `vmbackup.conf` at `path`; `None` when the file does not
/// exist (then nothing is skipped).
pub fn read_vmbackup_conf(path: &Path) -> Result<Option<String>, DiscoverError> {
    Ok(read_vmbackup_conf_checked(path)?.map(|(text, _)| text))
}

// Also returns a warning when the file is not root's alone: whoever can
// write it can stop filesystems from being frozen.
fn read_vmbackup_conf_checked(
    path: &Path,
) -> Result<Option<(String, Option<String>)>, DiscoverError> {
    let fail = |e| DiscoverError::ReadVmbackupConf(path.to_path_buf(), e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let meta = file.metadata().map_err(fail)?;
    let warning = (meta.uid() != 0 || meta.mode() & 0o022 != 0).then(|| {
        format!(
            "{} is not owned by root or is writable by others; its MountsToSkip is still honoured",
            path.display()
        )
    });
    let mut bytes = Vec::new();
    file.take(VMBACKUP_CONF_MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(Some((
        String::from_utf8_lossy(&bytes).into_owned(),
        warning,
    )))
}

/// Discovery on the running system: [`MOUNTINFO_PATH`],
/// [`VMBACKUP_CONF_PATH`] and sysfs.
pub fn discover_system(vmbackup_conf: &Path) -> Result<MountPlan, DiscoverError> {
    let mounts = load_mounts()?;
    let conf = read_vmbackup_conf_checked(vmbackup_conf)?;
    let (skip, conf_warning) = match conf {
        Some((text, warning)) => (parse_mounts_to_skip(&text), warning),
        None => (Vec::new(), None),
    };
    let mut plan = plan_discovered(&mounts, &skip, &SysBlockInfo::default());
    plan.warnings.extend(conf_warning);
    Ok(plan)
}

fn serialize_path_lossy<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    struct Loops(
        Vec<((u32, u32), &'static str)>,
        Vec<(&'static str, &'static str)>,
    );

    impl BlockInfo for Loops {
        fn loop_backing_file(&self, major: u32, minor: u32) -> Option<PathBuf> {
            self.0
                .iter()
                .find(|(d, _)| *d == (major, minor))
                .map(|(_, f)| PathBuf::from(f))
        }
        fn loop_backing_file_of_source(&self, source: &str) -> Option<PathBuf> {
            self.1
                .iter()
                .find(|(s, _)| *s == source)
                .map(|(_, f)| PathBuf::from(f))
        }
    }

    fn order(plan: &MountPlan) -> Vec<&Path> {
        plan.freeze_order()
            .iter()
            .map(|e| e.path.as_path())
            .collect()
    }

    #[test]
    fn decodes_octal_escapes_in_paths_and_source() {
        let text = "36 35 98:0 /sub\\134dir /mnt/a\\040b\\011c\\012d rw,noatime master:1 shared:2 - ext3 /dev/my\\040disk rw,errors=continue\n";
        let m = &parse_mountinfo(text).unwrap()[0];
        assert_eq!((m.mount_id, m.parent_id, m.major, m.minor), (36, 35, 98, 0));
        assert_eq!(m.root, Path::new("/sub\\dir"));
        assert_eq!(m.mount_point, Path::new("/mnt/a b\tc\nd"));
        assert_eq!(m.source, "/dev/my disk");
        assert_eq!(m.optional_fields, ["master:1", "shared:2"]);
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert!(!m.read_only && !m.super_read_only);
        assert_eq!(m.device(), "98:0");
    }

    #[test]
    fn keeps_what_is_not_an_octal_escape() {
        assert_eq!(unescape(b"a\\999b"), b"a\\999b");
        assert_eq!(unescape(b"a\\400"), b"a\\400");
        assert_eq!(unescape(b"end\\04"), b"end\\04");
        assert_eq!(unescape(b"\\377\\000"), [0xff, 0]);
    }

    #[test]
    fn non_utf8_mount_points_survive() {
        let line = b"1 0 8:1 / /caf\xe9 rw - ext4 /dev/sda1 rw\n";
        let m = &parse_mountinfo_bytes(line).unwrap()[0];
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/caf\xe9");
    }

    #[test]
    fn read_only_comes_from_mount_and_superblock_options() {
        let text = "1 0 8:1 / / ro,relatime - ext4 /dev/sda1 rw\n2 1 8:2 / /b rw,relatime - ext4 /dev/sda2 ro,data=ordered\n";
        let m = parse_mountinfo(text).unwrap();
        assert!(m[0].read_only && !m[0].super_read_only);
        assert!(!m[1].read_only && m[1].super_read_only);
    }

    #[test]
    fn empty_source_and_no_optional_fields() {
        let m = &parse_mountinfo("5 1 0:40 / /x rw - tmpfs  rw\n").unwrap()[0];
        assert_eq!(m.source, "");
        assert!(m.optional_fields.is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let good = "1 0 8:1 / / rw - ext4 /dev/sda1 rw";
        let cases = [
            ("1 0 8:1 / / rw ext4 /dev/sda1 rw", "no \" - \" separator"),
            ("1 0 8:1 / / rw - ext4 /dev/sda1", "after \" - \""),
            (
                "x 0 8:1 / / rw - ext4 /dev/sda1 rw",
                "mount id \"x\" is not a number",
            ),
            ("1 0 8-1 / / rw - ext4 /dev/sda1 rw", "major:minor"),
            (
                "1 0 8:y / / rw - ext4 /dev/sda1 rw",
                "minor \"y\" is not a number",
            ),
            ("1 0 8:1 / rel rw - ext4 /dev/sda1 rw", "absolute"),
            ("1 0 8:1", "fields before the separator"),
        ];
        for (bad, what) in cases {
            // A blank line still counts: the number is the file's line.
            let text = format!("{good}\n\n{bad}\n");
            let err = parse_mountinfo(&text).unwrap_err();
            let MountinfoError::Malformed { line, what: got } = &err;
            assert_eq!(*line, 3, "{bad}");
            assert!(got.contains(what), "{bad}: {got}");
            assert!(err
                .to_string()
                .starts_with("mountinfo line 3 is malformed: "));
        }
    }

    #[test]
    fn mounts_to_skip_follows_configparser() {
        let conf = "\
; comment
[Other]
MountsToSkip = /other
[SnapshotThread]
# comment
mountstoskip: /a/ ,/b,, /c d
   /e,
";
        assert_eq!(
            parse_mounts_to_skip(conf),
            ["/a", "/b", "/c d", "/e"].map(PathBuf::from)
        );
        // The last occurrence wins, like ConfigParser with strict=False.
        assert_eq!(
            parse_mounts_to_skip("[SnapshotThread]\nMountsToSkip=/x\nMountsToSkip=/y\n"),
            [PathBuf::from("/y")]
        );
        assert!(parse_mounts_to_skip("[SnapshotThread]\nfsfreeze: True\n").is_empty());
        assert!(parse_mounts_to_skip("[Other]\nMountsToSkip = /x\n").is_empty());
        // Section names are case-sensitive in ConfigParser.
        assert!(parse_mounts_to_skip("[snapshotthread]\nMountsToSkip = /x\n").is_empty());
        assert!(parse_mounts_to_skip("[SnapshotThread]\nMountsToSkip =\n").is_empty());
        assert!(parse_mounts_to_skip("").is_empty());
    }

    #[test]
    fn sysfs_backing_files_drop_newline_and_deleted_suffix() {
        let root = std::env::temp_dir().join(format!("quiesce-sysfs-{}", std::process::id()));
        let dev = root.join("dev/block/7:3/loop");
        let blk = root.join("block/loop5/loop");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&blk).unwrap();
        std::fs::write(
            dev.join("backing_file"),
            "/data/img with space.img (deleted)\n",
        )
        .unwrap();
        std::fs::write(blk.join("backing_file"), "/data/btrfs.img\n").unwrap();
        let sys = SysBlockInfo::with_sys_root(&root);
        assert_eq!(
            sys.loop_backing_file(7, 3),
            Some(PathBuf::from("/data/img with space.img"))
        );
        assert_eq!(sys.loop_backing_file(8, 1), None);
        assert_eq!(
            sys.loop_backing_file_of_source("/dev/loop5"),
            Some(PathBuf::from("/data/btrfs.img"))
        );
        assert_eq!(sys.loop_backing_file_of_source("/dev/sda1"), None);
        assert_eq!(sys.loop_backing_file_of_source("/dev/loop5/../x"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn btrfs_on_a_loop_device_is_found_by_its_source() {
        // btrfs shows an anonymous 0:N device, so the loop is found by name.
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:2 / /data rw - ext4 /dev/sda2 rw
3 1 0:50 / /a rw - btrfs /dev/loop5 rw,subvol=/
";
        let loops = Loops(vec![], vec![("/dev/loop5", "/data/btrfs.img")]);
        let plan = discover(text, None, &loops).unwrap();
        assert_eq!(order(&plan), ["/a", "/data", "/"].map(Path::new));
    }

    #[test]
    fn a_cycle_keeps_loop_before_image_and_warns() {
        // / is a loop device whose image is on /host, which is mounted in /.
        let text = "\
1 0 7:0 / / rw - ext4 /dev/loop0 rw
2 1 8:1 / /host rw - ext4 /dev/sda1 rw
";
        let loops = Loops(vec![((7, 0), "/host/root.img")], vec![]);
        let plan = discover(text, None, &loops).unwrap();
        assert_eq!(order(&plan), ["/", "/host"].map(Path::new));
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("nesting order not guaranteed"));
    }

    #[test]
    fn a_loop_cycle_falls_back_to_depth_order() {
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 7:0 / /a rw - ext4 /dev/loop0 rw
3 1 7:1 / /b/c rw - ext4 /dev/loop1 rw
";
        let loops = Loops(vec![((7, 0), "/b/c/a.img"), ((7, 1), "/a/b.img")], vec![]);
        let plan = discover(text, None, &loops).unwrap();
        assert_eq!(order(&plan), ["/b/c", "/a", "/"].map(Path::new));
        assert!(
            plan.warnings[0].contains("form a cycle"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn rootfs_under_the_real_root_is_not_hidden_forever() {
        // Some initramfs setups show rootfs below the real /.
        let text = "\
1 1 0:1 / / rw - rootfs rootfs rw
20 1 8:1 / / rw - ext4 /dev/sda1 rw
21 20 8:2 / /srv rw - xfs /dev/sda2 rw
";
        let plan = discover(text, None, &Loops(vec![], vec![])).unwrap();
        assert_eq!(order(&plan), ["/srv", "/"].map(Path::new));
        assert_eq!(plan.entries[0].reason, "pseudo filesystem (rootfs)");
    }

    #[test]
    fn read_only_mounts_and_superblocks() {
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:2 / /ro rw - ext4 /dev/sda2 ro
3 1 8:3 / /robind ro - ext4 /dev/sda3 rw
4 1 8:3 /sub /rwbind rw - ext4 /dev/sda3 rw
";
        let plan = discover(text, None, &Loops(vec![], vec![])).unwrap();
        let reasons: Vec<(&str, bool)> = plan
            .entries
            .iter()
            .map(|e| (e.reason.as_str(), e.freeze))
            .collect();
        assert_eq!(
            reasons,
            [
                ("local ext4, read-write", true),
                ("read-only", false),
                // The read-only bind's filesystem is frozen via the writable one.
                (
                    "same filesystem as /rwbind (bind mount or subvolume; frozen once)",
                    false
                ),
                ("local ext4, read-write", true),
            ]
        );
    }

    #[test]
    fn explicit_request_twice_is_frozen_once() {
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /d rw - xfs /dev/sda2 rw\n";
        let mounts = parse_mountinfo(text).unwrap();
        let requested = ["/d", "/d/", "//d/."].map(PathBuf::from);
        let plan = plan_explicit(&mounts, &requested, &Loops(vec![], vec![])).unwrap();
        assert_eq!(order(&plan), [Path::new("/d")]);
        assert_eq!(plan.entries[0].reason, "not named with --mount");
    }
}
