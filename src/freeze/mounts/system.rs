//! What the plan reads of the running system: mountinfo, `vmbackup.conf`
//! (with a warning when it is not root's alone) and the loop devices'
//! backing files in sysfs.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

use super::mountinfo::{parse_mountinfo_bytes, MountInfo, MountinfoError};
use super::order::BlockInfo;
use super::plan::{plan_discovered, MountPlan};
use super::vmbackup::parse_mounts_to_skip;

/// Where the kernel describes the mounts this process sees.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
// vmbackup.conf only ever holds a few lines; a huge file is not worth reading.
const VMBACKUP_CONF_MAX_BYTES: u64 = 1 << 20;

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

/// What cannot be read about the mounts means a mount cannot be opened
/// (`UnableToOpenMount`, 123); the action names the file.
impl From<DiscoverError> for crate::error::Problem {
    fn from(e: DiscoverError) -> Self {
        let path = match &e {
            DiscoverError::ReadMountinfo(p, _) | DiscoverError::ReadVmbackupConf(p, _) => p.clone(),
            DiscoverError::Mountinfo(_) => PathBuf::from(MOUNTINFO_PATH),
        };
        crate::error::Problem::new(crate::error::ErrorCode::UnableToOpenMount, e.to_string())
            .with_fix(crate::error::Fix::Unreadable(path))
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
/// [`VMBACKUP_CONF_PATH`](super::VMBACKUP_CONF_PATH) and sysfs.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
