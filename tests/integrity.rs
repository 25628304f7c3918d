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

/// A program reached through symbolic links (an interpreter, issue 26):
/// every hop's directories count, as written and resolved; the file it
/// ends at must be root's, executable, not writable by group or others.
#[test]
fn a_program_is_checked_through_every_link_on_the_way() {
    require_root!();
    let s = Scratch::new("program");
    let real = s.write("usr/bin/tool", "#!/bin/sh\n", 0o755);
    let link1 = s.path("opt/bin/tool");
    fs::create_dir_all(link1.parent().unwrap()).unwrap();
    let hop = s.mkdir("var/alt", 0o755);
    std::os::unix::fs::symlink(hop.join("tool"), &link1).unwrap();
    std::os::unix::fs::symlink(&real, hop.join("tool")).unwrap();
    let checked = CheckedFile::open_program(&link1).unwrap();
    assert_eq!(checked.path, fs::canonicalize(&real).unwrap());

    // The middle hop's directory belongs to a user: they could repoint it.
    common::chown(&hop, common::NOBODY);
    let e = CheckedFile::open_program(&link1).unwrap_err().to_string();
    assert!(
        e.contains(&hop.display().to_string()) && e.contains("uid 65534"),
        "{e}"
    );
    common::chown(&hop, 0);

    for (mode, says) in [
        (0o775, "group- or world-writable"),
        (0o644, "no execute bit"),
    ] {
        fs::set_permissions(&real, fs::Permissions::from_mode(mode)).unwrap();
        let e = CheckedFile::open_program(&link1).unwrap_err();
        assert!(e.to_string().contains(says), "{mode:o}: {e}");
    }
    fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();

    // A loop of links ends, as the kernel's ELOOP.
    let a = s.path("loop/a");
    fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(s.path("loop/b"), &a).unwrap();
    std::os::unix::fs::symlink(&a, s.path("loop/b")).unwrap();
    let e = CheckedFile::open_program(&a).unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("ELOOP"), "{e}");
}

/// A directory a program is searched in (a PATH entry before the one env
/// finds it in): only root may be able to put a program there, whether
/// the directory exists, is missing, or is a link.
#[test]
fn a_search_directory_is_checked_existing_missing_or_linked() {
    require_root!();
    use quiesce::integrity::check_search_dir;
    let s = Scratch::new("search-dir");
    let name = std::ffi::OsStr::new("python3");
    let root = s.mkdir("root", 0o755);
    let user = s.mkdir("user", 0o755);
    common::chown(&user, common::NOBODY);

    assert!(check_search_dir(&root, name).is_ok());
    // Missing, under a root-owned directory: nobody else can create it.
    assert!(check_search_dir(&root.join("missing/deeper"), name).is_ok());
    // Missing, under a user's directory: the user could create it.
    let e = check_search_dir(&user.join("bin"), name).unwrap_err();
    assert!(e.to_string().contains("uid 65534"), "{e}");
    // Group-writable.
    let staff = s.mkdir("staff", 0o775);
    let e = check_search_dir(&staff, name).unwrap_err();
    assert!(e.to_string().contains("0775"), "{e}");
    // A link, dangling into a user's directory.
    let link = root.join("sbin");
    std::os::unix::fs::symlink(user.join("sbin"), &link).unwrap();
    let e = check_search_dir(&link, name).unwrap_err();
    assert!(e.to_string().contains("uid 65534"), "{e}");
    // A file where a directory is named holds no program.
    let file = s.write("root/file", "", 0o644);
    assert!(check_search_dir(&file, name).is_ok());
}
