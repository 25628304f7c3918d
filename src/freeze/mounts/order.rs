//! The freeze order and its stages (SPEC.md §6.1): loop-backed filesystems
//! before the filesystem holding their image, nested mounts before their
//! parents, `/` last; the filesystems none of which must precede another
//! share a stage.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::table::{depth, MountTable};

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

/// Orders the frozen mounts (indices into the table) and gives each its
/// stage. Edges "a before b": a is a loop device whose image lives on b
/// (freezing b first would hang a's freeze on writes to its image); a is
/// mounted inside b (nested before parent, like fsfreeze and qemu-ga). Ties:
/// deeper mount point first, then by path, so `/` comes last. See
/// [`stages_of`] for the stages.
pub(super) fn freeze_order(
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{order, Loops};
    use super::super::plan::discover;
    use std::path::Path;

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
}
