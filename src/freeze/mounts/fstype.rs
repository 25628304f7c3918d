//! Filesystem types: the ones discovery freezes, and the ones never frozen,
//! with the reason (network, FUSE, pseudo, stacked, read-only image).

/// Filesystem types discovery freezes; any other type only with `--mount`.
pub const DISCOVERED_FS_TYPES: [&str; 5] = ["ext2", "ext3", "ext4", "xfs", "btrfs"];

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FsClass {
    Discovered,
    Other,
    Network,
    Fuse,
    Pseudo,
    Stacked,
    Image,
}

pub(super) fn classify(fs_type: &str) -> FsClass {
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
pub(super) fn never_frozen(fs_type: &str) -> Option<String> {
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
