//! The coverage check (SPEC.md §3.2): every file of the database — data
//! directory, WAL/redo/binlog directories, tablespaces — on a filesystem
//! frozen in the window. A database whose files are not all frozen
//! together cannot be consistent, whatever its method did.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::freeze::mounts::MountPlan;

/// One file location of the database and the frozen mount holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub what: String,
    pub path: PathBuf,
    /// The mount of the plan that freezes it; `None`: not frozen.
    pub frozen_by: Option<PathBuf>,
    /// Why it is not covered, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Each location, with the frozen filesystem holding it (by the device of
/// the superblock, as the plan names it).
pub fn check(paths: &[(String, PathBuf)], plan: &MountPlan) -> Vec<Location> {
    paths
        .iter()
        .map(|(what, path)| {
            let (frozen_by, reason) = match std::fs::metadata(path) {
                Err(e) => (None, Some(format!("cannot look at it: {e}"))),
                Ok(md) => {
                    let (maj, min) = (libc::major(md.dev()), libc::minor(md.dev()));
                    match plan
                        .entries
                        .iter()
                        .find(|e| e.freeze && e.major == maj && e.minor == min)
                    {
                        Some(e) => (Some(e.path.clone()), None),
                        None => (
                            None,
                            Some(format!(
                                "its filesystem (device {maj}:{min}) is not frozen in this run"
                            )),
                        ),
                    }
                }
            };
            Location {
                what: what.clone(),
                path: path.clone(),
                frozen_by,
                reason,
            }
        })
        .collect()
}

/// The locations not covered, as one sentence; `None` when all are.
pub fn uncovered(locations: &[Location]) -> Option<String> {
    let bad: Vec<String> = locations
        .iter()
        .filter(|l| l.frozen_by.is_none())
        .map(|l| {
            format!(
                "{} {} ({})",
                l.what,
                l.path.display(),
                l.reason.as_deref().unwrap_or("not frozen")
            )
        })
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}
