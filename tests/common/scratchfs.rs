//! Scratch filesystems on loop devices for freeze tests. Never the real `/`
//! or the work tree's filesystem: each test makes its own image under a
//! root-owned scratch directory, mounts it, and the guard thaws and unmounts
//! it on every path, panics included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ScratchFs {
    pub image: PathBuf,
    pub mnt: PathBuf,
    pub fs_type: &'static str,
}

fn sh(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether the tools for `fs_type` are installed (scripts/test.sh installs them).
pub fn have_mkfs(fs_type: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v mkfs.{fs_type}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl ScratchFs {
    /// Makes and mounts a filesystem of `fs_type` whose image lives in `dir`.
    pub fn new(dir: &Path, name: &str, fs_type: &'static str) -> ScratchFs {
        // Sparse images: xfs needs 300 MiB of address space, little of it used.
        let size = match fs_type {
            "xfs" => "320M",
            "btrfs" => "128M",
            _ => "32M",
        };
        ScratchFs::with_size(dir, name, fs_type, size)
    }

    /// [`ScratchFs::new`] with an image of `size` (`truncate -s` syntax).
    pub fn with_size(dir: &Path, name: &str, fs_type: &'static str, size: &str) -> ScratchFs {
        ScratchFs::with_mkfs(dir, name, fs_type, size, &[])
    }

    /// [`ScratchFs::with_size`] with more `mkfs` options (`-N 64`: an ext4
    /// with 64 inodes, which a test fills).
    pub fn with_mkfs(
        dir: &Path,
        name: &str,
        fs_type: &'static str,
        size: &str,
        extra: &[&str],
    ) -> ScratchFs {
        let image = dir.join(format!("{name}.img"));
        sh(Command::new("truncate").args(["-s", size]).arg(&image));
        let mut mkfs = Command::new(format!("mkfs.{fs_type}"));
        match fs_type {
            "ext4" | "ext3" | "ext2" => mkfs.args(["-q", "-F"]),
            "xfs" => mkfs.args(["-q", "-f"]),
            "btrfs" => mkfs.args(["-q", "-f"]),
            _ => &mut mkfs,
        };
        sh(mkfs.args(extra).arg(&image));
        let mut fs = ScratchFs::mount_image(dir, &image, name);
        fs.fs_type = fs_type;
        fs
    }

    /// Mounts an existing image (read-write, on a loop device) at `dir/name`.
    pub fn mount_image(dir: &Path, image: &Path, name: &str) -> ScratchFs {
        let mnt = dir.join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(&mnt));
        ScratchFs {
            image: image.to_path_buf(),
            mnt,
            fs_type: "ext4",
        }
    }

    /// A descriptor of the mount point (for ioctl probes).
    pub fn open(&self) -> std::fs::File {
        std::fs::File::open(&self.mnt).unwrap()
    }

    /// Thaws it (ignoring "not frozen").
    pub fn thaw(&self) {
        fsfreeze_unfreeze(&self.mnt);
    }

    /// Proves the mount is not frozen by a write that completes. The bound
    /// is a hang guard, not a speed assertion: on expiry the mount is
    /// thawed and the test fails.
    pub fn assert_writable(&self) {
        if !self.writable_within(Duration::from_secs(30)) {
            self.thaw();
            panic!("{} was left frozen", self.mnt.display());
        }
    }

    pub fn path(&self) -> &str {
        self.mnt.to_str().unwrap()
    }

    /// Writes a file from a child process and reports whether the write
    /// completed in `within`: a frozen filesystem blocks it. The child is
    /// left to finish once the filesystem is thawed (the guard does that).
    pub fn writable_within(&self, within: Duration) -> bool {
        writable_within(&self.mnt, within)
    }
}

/// See [`ScratchFs::writable_within`].
pub fn writable_within(dir: &Path, within: Duration) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let mut child: Child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo probe > '{}' && sync -f '{}'",
            probe.display(),
            probe.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Reap it later in a thread: it finishes once thawed.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    false
}

/// Thaws (ignoring "not frozen") without going through quiesce.
pub fn fsfreeze_unfreeze(path: &Path) {
    let _ = Command::new("fsfreeze")
        .arg("-u")
        .arg(path)
        .stderr(Stdio::null())
        .status();
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // Thaw first: an unmount of a frozen filesystem would hang.
        fsfreeze_unfreeze(&self.mnt);
        let _ = Command::new("umount").arg(&self.mnt).status();
        if Path::new(&self.mnt).exists() && is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap_or("")))
        })
        .unwrap_or(false)
}
