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
//!
//! One file, one job: `mountinfo.rs` parses mountinfo, `vmbackup.rs` reads
//! `MountsToSkip`, `fstype.rs` says which filesystem types are frozen,
//! `table.rs` is what path lookup sees of the mounts, `plan.rs` gives every
//! mount its verdict, `order.rs` orders the frozen ones into stages, and
//! `system.rs` reads the running system.

mod fstype;
mod mountinfo;
mod order;
mod plan;
mod system;
mod table;
mod vmbackup;

#[cfg(test)]
mod fixtures;

pub use fstype::DISCOVERED_FS_TYPES;
pub use mountinfo::{parse_mountinfo, parse_mountinfo_bytes, MountInfo, MountinfoError};
pub use order::BlockInfo;
pub use plan::{discover, plan_discovered, plan_explicit, MountPlan, PlanEntry, PlanError};
pub use system::{
    discover_system, load_mounts, read_vmbackup_conf, DiscoverError, SysBlockInfo, MOUNTINFO_PATH,
};
pub use vmbackup::{parse_mounts_to_skip, VMBACKUP_CONF_PATH};
