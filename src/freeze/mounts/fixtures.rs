//! Test doubles of the planner's tests: loop devices from a table instead
//! of sysfs, and the plan's freeze order as paths.

use std::path::{Path, PathBuf};

use super::order::BlockInfo;
use super::plan::MountPlan;

pub(super) struct Loops(
    pub(super) Vec<((u32, u32), &'static str)>,
    pub(super) Vec<(&'static str, &'static str)>,
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

pub(super) fn order(plan: &MountPlan) -> Vec<&Path> {
    plan.freeze_order()
        .iter()
        .map(|e| e.path.as_path())
        .collect()
}
