//! The plan: every mount with the reason it is frozen or not, and the
//! frozen ones in their order and stages. Discovery (no `--mount`) or
//! exactly the mounts named with `--mount`. Pure: it reads nothing.

use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};
use thiserror::Error;

use super::fstype::{classify, never_frozen, FsClass};
use super::mountinfo::{parse_mountinfo, MountInfo, MountinfoError};
use super::order::{freeze_order, BlockInfo};
use super::table::{depth, normalize, MountTable};
use super::vmbackup::{parse_mounts_to_skip, VMBACKUP_CONF_PATH};
use crate::error::ErrorCode;

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

/// A `--mount` the plan cannot honour, as the job reports it.
impl From<PlanError> for crate::error::Problem {
    fn from(e: PlanError) -> Self {
        let fix = e.fix();
        crate::error::Problem::new(e.code(), e.to_string()).with_fix(fix)
    }
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

fn serialize_path_lossy<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{order, Loops};
    use super::*;

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
