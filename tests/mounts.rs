//! Mount discovery and the freeze plan (SPEC.md §6.1) on mountinfo dumps of
//! realistic machines. Nothing here freezes or opens a mount point: the plan
//! is pure, and loop devices come from a table instead of sysfs.

use quiesce::error::ErrorCode;
use quiesce::freeze::mounts::{
    discover, parse_mountinfo, parse_mounts_to_skip, plan_discovered, plan_explicit, BlockInfo,
    MountPlan, PlanError,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const AZURE_VM: &str = include_str!("fixtures/mountinfo/azure-vm.mountinfo");
const OVERMOUNT: &str = include_str!("fixtures/mountinfo/overmount.mountinfo");
const VMBACKUP_CONF: &str = include_str!("fixtures/mountinfo/vmbackup.conf");

/// Loop devices of the Azure VM fixture: /loopa's image lives on
/// /datadrive, /loopb's image lives on /loopa (a loop on a loop), and the
/// snap's image on /.
struct LoopTable(HashMap<(u32, u32), PathBuf>);

impl BlockInfo for LoopTable {
    fn loop_backing_file(&self, major: u32, minor: u32) -> Option<PathBuf> {
        self.0.get(&(major, minor)).cloned()
    }
}

fn azure_loops() -> LoopTable {
    LoopTable(HashMap::from([
        ((7, 0), PathBuf::from("/datadrive/images/loopa.img")),
        ((7, 1), PathBuf::from("/loopa/images/loopb.img")),
        (
            (7, 2),
            PathBuf::from("/var/lib/snapd/snaps/core20_2015.snap"),
        ),
    ]))
}

fn no_loops() -> LoopTable {
    LoopTable(HashMap::new())
}

/// (path, freeze, reason) of every entry, in mountinfo order.
fn verdicts(plan: &MountPlan) -> Vec<(String, bool, String)> {
    plan.entries
        .iter()
        .map(|e| (e.path.display().to_string(), e.freeze, e.reason.clone()))
        .collect()
}

fn order(plan: &MountPlan) -> Vec<String> {
    plan.freeze_order()
        .iter()
        .map(|e| e.path.display().to_string())
        .collect()
}

fn stages(plan: &MountPlan) -> Vec<Vec<String>> {
    plan.stages()
        .iter()
        .map(|st| st.iter().map(|e| e.path.display().to_string()).collect())
        .collect()
}

fn v(path: &str, freeze: bool, reason: &str) -> (String, bool, String) {
    (path.to_string(), freeze, reason.to_string())
}

const SKIPPED: &str = "listed in MountsToSkip of /etc/azure/vmbackup.conf";

#[test]
fn azure_vm_discovery_lists_every_mount_with_its_reason() {
    let plan = discover(AZURE_VM, Some(VMBACKUP_CONF), &azure_loops()).unwrap();
    let expected = vec![
        v("/sys", false, "pseudo filesystem (sysfs)"),
        v("/proc", false, "pseudo filesystem (proc)"),
        v("/dev", false, "pseudo filesystem (devtmpfs)"),
        v("/dev/pts", false, "pseudo filesystem (devpts)"),
        v("/run", false, "pseudo filesystem (tmpfs)"),
        v("/", true, "local ext4, read-write"),
        v(
            "/sys/kernel/security",
            false,
            "pseudo filesystem (securityfs)",
        ),
        v("/dev/shm", false, "pseudo filesystem (tmpfs)"),
        v("/run/lock", false, "pseudo filesystem (tmpfs)"),
        v("/sys/fs/cgroup", false, "pseudo filesystem (cgroup2)"),
        v("/sys/fs/pstore", false, "pseudo filesystem (pstore)"),
        v("/sys/fs/bpf", false, "pseudo filesystem (bpf)"),
        v(
            "/proc/sys/fs/binfmt_misc",
            false,
            "pseudo filesystem (autofs)",
        ),
        v("/dev/mqueue", false, "pseudo filesystem (mqueue)"),
        v("/sys/kernel/debug", false, "pseudo filesystem (debugfs)"),
        v("/sys/kernel/tracing", false, "pseudo filesystem (tracefs)"),
        v(
            "/sys/fs/fuse/connections",
            false,
            "pseudo filesystem (fusectl)",
        ),
        v("/sys/kernel/config", false, "pseudo filesystem (configfs)"),
        v(
            "/snap/core20/2015",
            false,
            "read-only image filesystem (squashfs)",
        ),
        v("/boot", true, "local ext4, read-write"),
        v(
            "/boot/efi",
            false,
            "type vfat is frozen only when named with --mount",
        ),
        v("/mnt", false, SKIPPED),
        v("/datadrive", true, "local xfs, read-write"),
        v(
            "/srv/www",
            false,
            "same filesystem as /datadrive (bind mount or subvolume; frozen once)",
        ),
        v("/datadrive/cache", true, "local ext4, read-write"),
        v("/srv/pg", true, "local btrfs, read-write"),
        v(
            "/srv/logs",
            false,
            "same filesystem as /srv/pg (bind mount or subvolume; frozen once)",
        ),
        v("/archive", false, "read-only"),
        v("/media/backup disk", true, "local ext4, read-write"),
        v("/shared", false, "network filesystem (nfs4)"),
        v("/loopa", true, "local ext4, read-write"),
        v("/loopb", true, "local ext4, read-write"),
        v("/run/user/1000", false, "pseudo filesystem (tmpfs)"),
        v(
            "/home/azureuser/remote",
            false,
            "FUSE filesystem (fuse.sshfs)",
        ),
        v(
            "/var/lib/docker/overlay2/4f1c/merged",
            false,
            "stacked filesystem (overlay); freeze the filesystem under it instead",
        ),
    ];
    assert_eq!(verdicts(&plan), expected);
    assert_eq!(
        plan.warnings,
        ["MountsToSkip entry /nonexistent of /etc/azure/vmbackup.conf names no mount point"]
    );
}

#[test]
fn azure_vm_freeze_order_loops_before_images_nested_before_parents_root_last() {
    let plan = discover(AZURE_VM, Some(VMBACKUP_CONF), &azure_loops()).unwrap();
    // /loopb's image is on /loopa, /loopa's on /datadrive: that chain is the
    // opposite of the path order; /datadrive/cache sits in /datadrive.
    assert_eq!(
        order(&plan),
        [
            "/datadrive/cache",
            "/media/backup disk",
            "/srv/pg",
            "/boot",
            "/loopb",
            "/loopa",
            "/datadrive",
            "/"
        ]
    );
    let devices: Vec<&str> = plan
        .freeze_order()
        .iter()
        .map(|e| e.device.as_str())
        .collect();
    assert_eq!(
        devices,
        ["8:97", "8:81", "0:45", "259:0", "7:1", "7:0", "8:33", "8:1"]
    );
}

#[test]
fn without_loop_information_the_order_is_by_depth_then_path() {
    let plan = discover(AZURE_VM, Some(VMBACKUP_CONF), &no_loops()).unwrap();
    assert_eq!(
        order(&plan),
        [
            "/datadrive/cache",
            "/media/backup disk",
            "/srv/pg",
            "/boot",
            "/loopa",
            "/loopb",
            "/datadrive",
            "/"
        ]
    );
    // Without loop information nothing orders /loopa and /loopb: they join
    // the first stage; only nesting keeps /datadrive and / later.
    assert_eq!(
        stages(&plan),
        vec![
            vec![
                "/datadrive/cache",
                "/media/backup disk",
                "/srv/pg",
                "/boot",
                "/loopa",
                "/loopb"
            ],
            vec!["/datadrive"],
            vec!["/"],
        ]
    );
}

/// SPEC.md §6.1 stages: a loop filesystem is frozen in an earlier stage than
/// the filesystem holding its image (a loop on a loop: three stages), a
/// nested mount before its parent, `/` alone and last; everything else is
/// one concurrent first stage.
#[test]
fn azure_vm_stages_keep_loops_before_their_images_and_root_last() {
    let plan = discover(AZURE_VM, Some(VMBACKUP_CONF), &azure_loops()).unwrap();
    assert_eq!(
        stages(&plan),
        vec![
            vec![
                "/datadrive/cache",
                "/media/backup disk",
                "/srv/pg",
                "/boot",
                "/loopb"
            ],
            vec!["/loopa"],
            vec!["/datadrive"],
            vec!["/"],
        ]
    );
    let stage_of = |p: &str| {
        plan.entries
            .iter()
            .find(|e| e.freeze && e.path == Path::new(p))
            .and_then(|e| e.stage)
            .unwrap()
    };
    assert!(stage_of("/loopb") < stage_of("/loopa"));
    assert!(stage_of("/loopa") < stage_of("/datadrive"));
    assert!(stage_of("/datadrive/cache") < stage_of("/datadrive"));
    // Skipped entries have no stage; every frozen one has.
    assert!(plan.entries.iter().all(|e| e.freeze == e.stage.is_some()));
}

/// Independent explicit mounts (the scratch filesystems of the tests and the
/// bench) form one stage; a loop filesystem whose image is on another named
/// mount is a stage of its own, before it.
#[test]
fn explicit_independent_mounts_are_one_stage_and_a_loop_image_holder_follows() {
    let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 7:0 / /s/a rw - ext4 /dev/loop0 rw
3 1 7:1 / /s/b rw - xfs /dev/loop1 rw
4 1 7:2 / /s/c rw - btrfs /dev/loop2 rw
5 1 7:3 / /s/inner rw - ext4 /dev/loop3 rw
";
    let loops = LoopTable(HashMap::from([((7, 3), PathBuf::from("/s/c/inner.img"))]));
    let named = ["/s/a", "/s/b", "/s/c", "/s/inner"].map(PathBuf::from);
    let plan = plan_explicit(&parse_mountinfo(text).unwrap(), &named, &loops).unwrap();
    assert_eq!(
        stages(&plan),
        vec![vec!["/s/a", "/s/b", "/s/inner"], vec!["/s/c"]]
    );
    let json = serde_json::to_value(&plan.entries).unwrap();
    let staged: Vec<(String, u64)> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["freeze"] == true)
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["stage"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(staged.contains(&("/s/c".into(), 2)), "{staged:?}");
    assert!(staged.contains(&("/s/inner".into(), 1)), "{staged:?}");
}

#[test]
fn without_vmbackup_conf_nothing_is_skipped() {
    let plan = discover(AZURE_VM, None, &azure_loops()).unwrap();
    let mnt = plan
        .entries
        .iter()
        .find(|e| e.path == Path::new("/mnt"))
        .unwrap();
    assert!(mnt.freeze);
    assert_eq!(mnt.reason, "local ext4, read-write");
    assert!(plan.warnings.is_empty());
    assert_eq!(
        order(&plan),
        [
            "/datadrive/cache",
            "/media/backup disk",
            "/srv/pg",
            "/boot",
            "/loopb",
            "/mnt",
            "/loopa",
            "/datadrive",
            "/"
        ]
    );
}

#[test]
fn mounts_to_skip_skips_the_whole_filesystem_even_through_a_bind_mount() {
    let mounts = parse_mountinfo(AZURE_VM).unwrap();
    let plan = plan_discovered(&mounts, &[PathBuf::from("/srv/www")], &azure_loops());
    let reasons: HashMap<String, (bool, String)> = verdicts(&plan)
        .into_iter()
        .map(|(p, f, r)| (p, (f, r)))
        .collect();
    assert_eq!(reasons["/srv/www"], (false, SKIPPED.to_string()));
    assert_eq!(
        reasons["/datadrive"],
        (
            false,
            "same filesystem as /srv/www, which is listed in MountsToSkip of /etc/azure/vmbackup.conf"
                .to_string()
        )
    );
    // /loopa's image is on the skipped /datadrive: /loopa is still frozen,
    // it is its own filesystem.
    assert_eq!(
        order(&plan),
        [
            "/datadrive/cache",
            "/media/backup disk",
            "/srv/pg",
            "/boot",
            "/loopb",
            "/mnt",
            "/loopa",
            "/"
        ]
    );
}

#[test]
fn vmbackup_conf_fixture_parses_like_configparser() {
    assert_eq!(
        parse_mounts_to_skip(VMBACKUP_CONF),
        [
            PathBuf::from("/mnt"),
            PathBuf::from("/shared"),
            PathBuf::from("/nonexistent")
        ]
    );
}

#[test]
fn explicit_mounts_replace_discovery() {
    let mounts = parse_mountinfo(AZURE_VM).unwrap();
    let requested: Vec<PathBuf> = ["/datadrive/", "/srv/www", "/loopa", "/archive", "/boot/efi"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let plan = plan_explicit(&mounts, &requested, &azure_loops()).unwrap();
    let named: Vec<(String, bool, String)> = verdicts(&plan)
        .into_iter()
        .filter(|(_, _, r)| r != "not named with --mount")
        .collect();
    assert_eq!(
        named,
        [
            v("/boot/efi", true, "named with --mount (vfat, read-write)"),
            v("/datadrive", true, "named with --mount (xfs, read-write)"),
            v(
                "/srv/www",
                false,
                "same filesystem as /datadrive (bind mount or subvolume; frozen once)"
            ),
            v("/archive", false, "read-only"),
            v("/loopa", true, "named with --mount (ext4, read-write)"),
        ]
    );
    assert_eq!(
        plan.entries.iter().filter(|e| !e.freeze).count(),
        plan.entries.len() - 3
    );
    // /mnt is not skipped by vmbackup.conf here: it is simply not named.
    assert_eq!(order(&plan), ["/boot/efi", "/loopa", "/datadrive"]);
}

#[test]
fn explicit_mounts_that_cannot_be_frozen_are_errors_naming_the_path() {
    let mounts = parse_mountinfo(AZURE_VM).unwrap();
    let plan = |p: &str| plan_explicit(&mounts, &[PathBuf::from(p)], &no_loops());
    let cases = [
        ("/proc", "/proc cannot be frozen: pseudo filesystem (proc)"),
        (
            "/dev/shm",
            "/dev/shm cannot be frozen: pseudo filesystem (tmpfs)",
        ),
        (
            "/shared",
            "/shared cannot be frozen: network filesystem (nfs4)",
        ),
        (
            "/home/azureuser/remote/",
            "/home/azureuser/remote/ cannot be frozen: FUSE filesystem (fuse.sshfs)",
        ),
        ("/nonexistent", "/nonexistent is not a mount point"),
        (
            "/datadrive/images",
            "/datadrive/images is not a mount point",
        ),
        ("datadrive", "mount datadrive is not an absolute path"),
    ];
    for (path, message) in cases {
        let err = plan(path).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.code(), ErrorCode::UnableToOpenMount);
        assert_eq!(err.code().code(), Some(123));
    }
    // A single bad request fails the whole plan.
    let err = plan_explicit(
        &mounts,
        &[PathBuf::from("/datadrive"), PathBuf::from("/proc")],
        &no_loops(),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::CannotFreeze { fs_type, .. } if fs_type == "proc"));
}

#[test]
fn over_mounted_mount_points_use_the_mount_on_top() {
    let mounts = parse_mountinfo(OVERMOUNT).unwrap();
    let plan = plan_explicit(&mounts, &[PathBuf::from("/data")], &no_loops()).unwrap();
    let frozen = plan.freeze_order();
    assert_eq!(frozen.len(), 1);
    assert_eq!(frozen[0].fs_type, "xfs");
    assert_eq!(frozen[0].device, "8:65");

    // /data/sub was mounted in the ext4 that the xfs now covers.
    assert_eq!(
        plan_explicit(&mounts, &[PathBuf::from("/data/sub")], &no_loops()).unwrap_err(),
        PlanError::Hidden {
            path: PathBuf::from("/data/sub"),
            under: PathBuf::from("/data"),
        }
    );

    let discovered = plan_discovered(&mounts, &[], &no_loops());
    let hidden = "hidden under a later mount on /data; it cannot be opened";
    assert_eq!(
        verdicts(&discovered),
        [
            v("/", true, "local ext4, read-write"),
            v("/proc", false, "pseudo filesystem (proc)"),
            v("/data", false, hidden),
            v("/data/sub", false, hidden),
            v("/data", true, "local xfs, read-write"),
            v("/data/new", true, "local ext4, read-write"),
        ]
    );
    assert_eq!(order(&discovered), ["/data/new", "/data", "/"]);
}

#[test]
fn status_json_mounts_entries_have_the_documented_fields() {
    let plan = discover(AZURE_VM, Some(VMBACKUP_CONF), &azure_loops()).unwrap();
    let entry = plan
        .entries
        .iter()
        .find(|e| e.path == Path::new("/media/backup disk"))
        .unwrap();
    assert_eq!(
        serde_json::to_value(entry).unwrap(),
        serde_json::json!({
            "path": "/media/backup disk",
            "fsType": "ext4",
            "device": "8:81",
            "source": "/dev/sdf1",
            "freeze": true,
            "reason": "local ext4, read-write",
            "stage": 1,
        })
    );
}
