//! A fanotify permission listener that holds a mount's writers inside
//! `open()` (tests/helpers/fanotify_hold.py), so that a `FIFREEZE` of that
//! filesystem blocks in the kernel for as long as the test wants, for real.

use super::scratchfs::ScratchFs;
use super::{signal, Setup};
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

const PROMPT: Duration = Duration::from_secs(5);

/// A fanotify permission listener on a mount that holds writers inside
/// open() (tests/helpers/fanotify_hold.py); released (every event allowed)
/// on drop, on every path.
pub struct Holder {
    child: std::process::Child,
    ready: std::path::PathBuf,
}

impl Holder {
    pub fn start(s: &Setup, mnt: &str) -> Holder {
        let ready = s.s.path("fanotify-ready");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/helpers/fanotify_hold.py"
            ))
            .arg(mnt)
            .arg(&ready)
            .spawn()
            .unwrap();
        let h = Holder { child, ready };
        assert!(h.wait_for("marked"), "fanotify listener did not start");
        h
    }

    /// A writer of `fs` held inside `open(O_TRUNC)` of an existing file (the
    /// superblock's write reference is taken before the permission event),
    /// so that a FIFREEZE of `fs` blocks until the listener is released.
    /// Returns the listener and the writer (it ends once the mount is
    /// writable again).
    pub fn hold_a_writer(s: &Setup, fs: &ScratchFs) -> (Holder, std::process::Child) {
        let victim = fs.mnt.join("held");
        std::fs::write(&victim, "x").unwrap();
        let _ = Command::new("sync").arg("-f").arg(&victim).status();
        let holder = Holder::start(s, fs.path());
        let writer = Command::new("sh")
            .arg("-c")
            .arg(format!("echo y > '{}'", victim.display()))
            .spawn()
            .unwrap();
        assert!(holder.wait_for("held"), "the writer was never held");
        (holder, writer)
    }

    pub fn wait_for(&self, what: &str) -> bool {
        let end = Instant::now() + PROMPT;
        while Instant::now() < end {
            if std::fs::read_to_string(&self.ready).is_ok_and(|s| s.contains(what)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn release(&mut self) {
        signal(self.child.id() as i32, Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.release();
    }
}
