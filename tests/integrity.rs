//! The checked descriptor is what later runs: a swap of the path after the
//! check (rename over it, or a symlink put in its place) is detected by the
//! pre-exec re-check, and reads through the descriptor still see the checked
//! bytes.

mod common;

use common::Scratch;
use quiesce::integrity::{CheckedFile, FileRole};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn rename_swap_after_check_is_detected() {
    require_root!();
    let s = Scratch::new("swap");
    let script = s.write("pre.sh", "#!/bin/sh\necho checked\n", 0o700);
    let checked = CheckedFile::open(&script, FileRole::Script).unwrap();
    let before = checked.sha256().unwrap();
    assert!(checked.still_names_checked_file());

    let evil = s.write("evil.sh", "#!/bin/sh\necho evil\n", 0o700);
    fs::rename(&evil, &script).unwrap();

    assert!(
        !checked.still_names_checked_file(),
        "rename over the path must be noticed"
    );
    // The descriptor still names the checked inode and its bytes.
    assert_eq!(checked.sha256().unwrap(), before);
    let bytes = checked.read_limited(1024).unwrap();
    assert_eq!(bytes, b"#!/bin/sh\necho checked\n");
}

#[test]
fn symlink_swap_after_check_is_detected() {
    require_root!();
    let s = Scratch::new("swap-link");
    let script = s.write("pre.sh", "#!/bin/sh\n", 0o700);
    let checked = CheckedFile::open(&script, FileRole::Script).unwrap();
    // Keep the original inode alive under another name, link to it: same
    // (dev, ino) through the link, but a link is still refused.
    let kept = s.path("kept.sh");
    fs::rename(&script, &kept).unwrap();
    std::os::unix::fs::symlink(&kept, &script).unwrap();
    assert!(!checked.still_names_checked_file());
}

#[test]
fn mode_change_after_open_does_not_change_verdict_of_descriptor() {
    require_root!();
    let s = Scratch::new("mode");
    let script = s.write("pre.sh", "#!/bin/sh\n", 0o755);
    assert!(CheckedFile::open(&script, FileRole::Script).is_err());
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let ok = CheckedFile::open(&script, FileRole::Script).unwrap();
    assert!(ok.owner_executable());
    assert_eq!(ok.mode, 0o700);
}
