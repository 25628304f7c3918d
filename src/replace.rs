//! Replacing a file atomically in a directory quiesce already checked: the
//! records of the run and state directories, the metrics textfile. A reader
//! — quiesce itself, `quiesce thaw`, node-exporter — sees the old file or
//! the new one, never part of one, and a crash never leaves a torn file.
//!
//! What is synced is the caller's choice, named in every call ([`Fsync`]):
//! each fsync costs, and the run's fixed cost matters.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

/// What [`replace_file`] syncs to disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Nothing: a reader sees the old content or the new, but a crash of
    /// the machine may leave the old one (or an empty file). For what no one
    /// needs across a reboot: the run directory's marks (a tmpfs), a last
    /// result, the metrics textfile, a rewrite whose older version, already
    /// synced, means the same after a reboot.
    Nothing,
    /// The new file, before the rename: after a crash the name holds the
    /// old content or the new, never an empty or torn file. The rename
    /// itself may be lost with a crash (the old content is then what
    /// remains).
    File,
    /// The new file before the rename, and the directory after it: the new
    /// content is the name's once the call returns, crash or not.
    FileAndDirectory,
}

/// Makes temporary names unique within this process; the pid and the clock
/// make them unique across processes, and `O_EXCL` makes a clash an error.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `name` in the directory `dir` with `bytes`: a temporary of a
/// unique name (`.NAME.PID.NANOS.SEQ`) created in `dir` with `O_CREAT |
/// O_EXCL | O_NOFOLLOW` and `mode` (less the umask) — never an existing
/// file or a planted link — written, synced, renamed over `name` (a link
/// named `name` is replaced, not followed), then the directory synced when
/// `fsync` says so. On failure the temporary is removed and `name` is left
/// as it was, unless only the directory's sync failed: then the new content
/// is in place but not known to be on disk.
pub fn replace_file(
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    mode: u32,
    fsync: Fsync,
) -> io::Result<()> {
    let (tmp, mut file) = create_temporary(dir, name, mode)?;
    let dirfd = Some(dir.as_raw_fd());
    let replaced = file
        .write_all(bytes)
        .and_then(|()| match fsync {
            Fsync::Nothing => Ok(()),
            Fsync::File | Fsync::FileAndDirectory => file.sync_all(),
        })
        .and_then(|()| renameat(dirfd, tmp.as_str(), dirfd, name).map_err(io::Error::from));
    if let Err(e) = replaced {
        let _ = unlinkat(dirfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    match fsync {
        Fsync::Nothing | Fsync::File => Ok(()),
        // The rename is durable only once the directory is synced.
        Fsync::FileAndDirectory => nix::unistd::fsync(dir.as_raw_fd()).map_err(io::Error::from),
    }
}

/// Creates `.NAME.PID.NANOS.SEQ` in `dir` with `O_CREAT | O_EXCL |
/// O_NOFOLLOW`: never an existing file or a planted link.
fn create_temporary(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<(String, File)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = format!(
        ".{name}.{}.{nanos}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let fd = openat(
        Some(dir.as_raw_fd()),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok((tmp, unsafe { File::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// A scratch directory, removed on drop. Nothing here is trusted, so
    /// the system's temporary directory will do.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("quiesce-replace-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            Scratch(dir)
        }

        fn fd(&self) -> OwnedFd {
            File::open(&self.0).unwrap().into()
        }

        /// Every name in the directory but `keep`: temporaries left behind.
        fn others(&self, keep: &str) -> Vec<String> {
            std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != keep)
                .collect()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_reader_sees_the_old_content_or_the_new_never_part_of_one() {
        let s = Scratch::new("readers");
        let dir = s.fd();
        let path = s.0.join("record.json");
        let old = vec![b'o'; 64 * 1024];
        let new = vec![b'n'; 96 * 1024];
        replace_file(dir.as_fd(), "record.json", &old, 0o600, Fsync::File).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|t| {
            let reader = t.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let got = std::fs::read(&path).unwrap();
                    assert!(got == old || got == new, "a read of {} bytes", got.len());
                    reads += 1;
                }
            });
            for i in 0..200 {
                let body = if i % 2 == 0 { &new } else { &old };
                replace_file(dir.as_fd(), "record.json", body, 0o600, Fsync::File).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            reader.join().unwrap();
        });
        assert_eq!(std::fs::read(&path).unwrap(), old);
        assert_eq!(mode_of(&path), 0o600);
        assert!(s.others("record.json").is_empty(), "{:?}", s.others(""));
    }

    #[test]
    fn a_failed_replacement_leaves_the_old_content_and_no_temporary() {
        let s = Scratch::new("failed");
        let dir = s.fd();
        // A non-empty directory where the file goes: the rename fails after
        // the temporary was written.
        std::fs::create_dir(s.0.join("quiesce.prom")).unwrap();
        std::fs::write(s.0.join("quiesce.prom/old"), b"old").unwrap();
        let e = replace_file(
            dir.as_fd(),
            "quiesce.prom",
            b"new",
            0o644,
            Fsync::FileAndDirectory,
        )
        .unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
        assert_eq!(std::fs::read(s.0.join("quiesce.prom/old")).unwrap(), b"old");
        assert!(s.others("quiesce.prom").is_empty(), "{:?}", s.others(""));
    }

    #[test]
    fn a_link_planted_at_the_name_is_replaced_not_followed() {
        let s = Scratch::new("link");
        let dir = s.fd();
        let victim = s.0.join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, s.0.join("state.json")).unwrap();
        replace_file(
            dir.as_fd(),
            "state.json",
            b"{}",
            0o600,
            Fsync::FileAndDirectory,
        )
        .unwrap();
        let placed = s.0.join("state.json");
        assert!(std::fs::symlink_metadata(&placed).unwrap().is_file());
        assert_eq!(std::fs::read(&placed).unwrap(), b"{}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    }
}
