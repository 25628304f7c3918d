//! The mounts as path lookup sees them: which mount is on top of a mount
//! point, which ones are hidden under a later mount, which mount holds a
//! file.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::mountinfo::MountInfo;

// `/a/b/` and `/a/./b` name the same mount point as `/a/b`.
pub(super) fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

pub(super) fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// The mounts with what path lookup would see of them.
pub(super) struct MountTable<'a> {
    pub(super) mounts: &'a [MountInfo],
    by_id: HashMap<u32, usize>,
    // The last mount on each mount point is the one on top.
    pub(super) top_at: HashMap<&'a Path, usize>,
    pub(super) hidden_under: Vec<Option<&'a Path>>,
}

impl<'a> MountTable<'a> {
    pub(super) fn new(mounts: &'a [MountInfo]) -> Self {
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
    pub(super) fn parent(&self, i: usize) -> Option<usize> {
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
    pub(super) fn holder_of(&self, file: &Path) -> Option<usize> {
        (0..self.mounts.len())
            .filter(|&i| self.visible(i) && file.starts_with(&self.mounts[i].mount_point))
            .max_by_key(|&i| depth(&self.mounts[i].mount_point))
    }
}
