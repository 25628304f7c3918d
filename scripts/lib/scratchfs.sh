# shellcheck shell=bash
# Scratch filesystems on loop devices, for scripts/demo.sh, bench.sh, soak.sh
# and test.sh (sourced, never run). They never freeze / or the work tree's
# filesystem: every mount they freeze is one of these.
#
# The one rule all of them share: thaw FIRST (a process blocked writing to a
# frozen filesystem cannot die, and a frozen filesystem must never be left
# behind), then unmount (retrying while dying processes still hold it), then
# detach the loop device.
#
#   scratch_mount IMG MNT [FSTYPE [SIZE [MKFS_ARGS...]]]
#       makes IMG (default 64M, ext4), mounts it on MNT with -o loop, and
#       remembers MNT in SCRATCH_MOUNTS.
#   scratch_release MNT...
#       thaws, unmounts and detaches each (deepest path first).
#   scratch_release_all
#       scratch_release of every mount scratch_mount made in this shell.
#   scratch_release_under PREFIX
#       scratch_release of every mount whose path starts with PREFIX (what a
#       crashed earlier run may have left), and detaches loop devices whose
#       backing file starts with PREFIX.

SCRATCH_MOUNTS=()

scratch_mount() {
    local img=$1 mnt=$2 fstype=${3:-ext4} size=${4:-64M}
    shift $(( $# < 4 ? $# : 4 ))
    truncate -s "$size" "$img"
    case "$fstype" in
        ext4) mkfs.ext4 -q -F "$@" "$img" ;;
        xfs) mkfs.xfs -q -f "$@" "$img" ;;
        btrfs) mkfs.btrfs -q -f "$@" "$img" >/dev/null ;;
        *) echo "scratch_mount: unknown filesystem type $fstype" >&2; return 2 ;;
    esac
    [ -d "$mnt" ] || mkdir -m 700 "$mnt"
    mount -o loop "$img" "$mnt"
    SCRATCH_MOUNTS+=("$mnt")
}

scratch_release() {
    local m dev _
    # Deepest first: a nested mount goes before the one that holds it.
    for m in $(printf '%s\n' "$@" | sort -r); do
        mountpoint -q "$m" 2>/dev/null || continue
        dev=$(findmnt -rn -o SOURCE --target "$m" 2>/dev/null | head -n 1) || :
        fsfreeze -u "$m" 2>/dev/null || :
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            umount "$m" 2>/dev/null && break
            fsfreeze -u "$m" 2>/dev/null || :
            sleep 0.2
        done
        if mountpoint -q "$m" 2>/dev/null; then
            echo "scratch: cannot unmount $m, detaching it lazily" >&2
            umount -l "$m" 2>/dev/null || :
        fi
        case "$dev" in /dev/loop*) losetup -d "$dev" 2>/dev/null || : ;; esac
    done
    return 0
}

scratch_release_all() {
    [ ${#SCRATCH_MOUNTS[@]} -gt 0 ] || return 0
    scratch_release "${SCRATCH_MOUNTS[@]}"
    SCRATCH_MOUNTS=()
}

scratch_release_under() {
    local prefix=$1 l
    # shellcheck disable=SC2046  # one path a line, none with blanks (ours)
    scratch_release $(findmnt -rn -o TARGET 2>/dev/null | grep "^$prefix" || :)
    for l in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v p="$prefix" 'index($2, p) == 1 {print $1}'); do
        losetup -d "$l" 2>/dev/null || :
    done
    return 0
}
