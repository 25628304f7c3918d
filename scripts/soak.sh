#!/usr/bin/env bash
# Fault soak of `quiesce snapshot` (issue 7): many runs on scratch ext4 x2 +
# xfs + btrfs mounts (one stage of four, frozen concurrently: issue 14), each with one fault injected at a random moment, and after
# each run three checks: every mount writable again (a probe write that
# completes), no process of the run left, the exit status the contract gives
# for the fault, and -- once a run's pre-script started -- its post-script run
# exactly once, by the runner or, after a kill, by the post guard's
# `quiesce recover` (SPEC §6.6). Fault kinds, cycled in random order:
#
#   sigterm sigint sighup   to the runner, at a random delay (0-300 ms) or when
#                           the pre-script / snapshot command / post-script
#                           appears: exit 128+N (0 if the run had already ended)
#   sigkill                 to the runner: the watchdog thaws and kills the
#                           snapshot command; nothing frozen, nothing left
#   wdkill                  SIGKILL to the watchdog (pid from state.json) while
#                           the window is open: the runner thaws normally,
#                           exit 0 (or 2 with FsFreezeTimeout 122 when the
#                           command hangs)
#   bothkill                watchdog, then runner: `quiesce thaw` must recover
#   hung                    the snapshot command never ends: --max-freeze 2
#                           thaws it, exit 2 with FsFreezeTimeout (122)
#   pretimeout              the pre-script never ends (timeoutInSeconds 1):
#                           exit 1 with Pre-ScriptTimeout (308)
#   late                    a writer of the first mount held inside open() by
#                           an unanswered fanotify permission event blocks its
#                           FIFREEZE past the 2 s deadline; released 2.5-4.5 s
#                           later, the late freeze completes: exit 1 with
#                           FsFreezeTimeout (122), and the mount must be thawed
#   ebusysig                one mount frozen first by "another tool"
#                           (fsfreeze -f), then TERM/INT/HUP/KILL to the
#                           runner at 0-300 ms: that tool's freeze must still
#                           be there afterwards (else wrong_status)
#   midstage                TERM or KILL 0-60 ms after the recovery record
#                           appears: the concurrent FIFREEZEs of the stage
#                           (all four scratch mounts are independent: one
#                           stage) are in flight or just returned; every one
#                           must be thawed (exit 143, or the watchdog's thaw)
#   prepost                 SIGKILL to the runner 0-100 ms after the pre-script
#                           ran: the post guard must run the pending post-script
#                           (once), the watchdog thaw what froze
#   stop                    SIGSTOP to the runner at a random moment, held
#                           3.6 s (past --max-freeze 2 and the watchdog's
#                           margin); every mount must take a write WHILE the
#                           runner is still stopped; then SIGCONT: exit 1 with
#                           FsFreezeTimeout (122) and crash consistency if the
#                           window was stopped, else exit 0
#   stoplate                as stop, while the runner's FIFREEZE is blocked in
#                           the kernel by a fanotify-held writer (released
#                           once the runner is stopped): exit 1, 122
#   hostile                 the pre-script leaves a holder that, during the
#                           window, sends SIGKILL to every guard (kill, tgkill,
#                           pidfd), SIGSTOP to the runner (kill, tkill),
#                           renices it, makes it SCHED_IDLE and raises its
#                           oom_score_adj: every route must be refused, exit 0
#   fullstate               the pre-script fills every inode of the state
#                           filesystem (a small ext4, -N 64): the post-script
#                           runs exactly once, also after a `quiesce recover`
#   group (scripts/soak/group.py, after the others; SOAK_GROUP_RUNS, default
#                           12): three --group members against a real etcd
#                           cluster; SIGKILL or SIGTERM to a member, a failing
#                           pre-script or snapshot command, an etcd node killed
#   postkill                SIGKILL to the runner 0-5 ms after it reaped its
#                           post-script (kill-after-reap): its completion was
#                           recorded at the reap, so the post-script runs no
#                           second time (exit -9, or 0 if the run had ended)
#   bridge                  a separate `pre --post-due 1|2`, then a race for
#                           its post-script: two `post`s at once; a `post`
#                           around the due time (racing the guard, which runs
#                           it at the due time); `recover` and `post` at once
#                           past it; a `post` SIGKILLed right after its
#                           post-script, then another. Every call exits 0
#                           (the killed one excepted), no record is left, and
#                           the post-script ran exactly once
#   none                    control: exit 0
#
# Every status is also held to the truth: `application` or `filesystem`
# consistency only when no mount was thawed by the watchdog and none was
# frozen past --max-freeze.
#
# Ends with `runs=N frozen_after=N leaked=N wrong_status=N skipped_post=N
# double_post=N`; exits 1 if any count but runs is non-zero.
#
#   SOAK_RUNS=N      number of runs (default 200)
#   SOAK_SECONDS=S   time budget of the runs (default 540)
#   SOAK_SEED=N      repeat a run order and fault timing
#   SOAK_VERBOSE=1   one line per run
#   SOAK_GROUP_RUNS=N  runs of the group faults (default 12; 0: none; needs etcd)
#
# Run as root from anywhere in the repo. It freezes ONLY the four scratch
# filesystems it creates (sparse images loop-mounted in a root-owned 0700
# directory /run/quiesce-soak.XXXXXX), never `/` nor the work tree's
# filesystem. On exit, however it exits, the trap thaws each scratch mount
# (`fsfreeze -u`), then unmounts it, then removes the directory. If something
# is ever stuck: `fsfreeze -u /run/quiesce-soak.*/mnt/*`.
set -euo pipefail
cd "$(dirname "$0")/.."

prog=scripts/soak.sh
case "${1:-}" in
    -h|--help) sed -n '2,89p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "$prog: unknown argument $1 (see $prog --help)" >&2; exit 64 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "$prog: run as root (freezing and the trust checks need it)" >&2
    exit 2
fi
for tool in cargo python3 fsfreeze mount umount losetup truncate mkfs.ext4 mkfs.xfs mkfs.btrfs; do
    command -v "$tool" >/dev/null || { echo "$prog: $tool not found (scripts/test.sh installs what is needed)" >&2; exit 2; }
done
RUNS=${SOAK_RUNS:-200}
SECONDS_BUDGET=${SOAK_SECONDS:-540}
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || { echo "$prog: SOAK_RUNS must be a positive integer" >&2; exit 64; }

echo "$prog: building (release)" >&2
cargo build --release --quiet
BIN=$PWD/target/release/quiesce

D=$(mktemp -d /run/quiesce-soak.XXXXXX)
chmod 700 "$D"
MNTS=()
DRIVER=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    if [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null; then
        kill -TERM "$DRIVER" 2>/dev/null
        wait "$DRIVER" 2>/dev/null
    fi
    # Thaw first: unmounting a frozen filesystem would hang.
    for m in "${MNTS[@]}"; do fsfreeze -u "$m" 2>/dev/null; done
    for m in "${MNTS[@]}"; do
        umount "$m" 2>/dev/null || { fsfreeze -u "$m" 2>/dev/null; umount -l "$m"; }
    done
    rm -rf "$D"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Scratch filesystems (sparse images: xfs needs >= 300 MiB, btrfs >= 114 MiB).
mkdir -m 700 "$D/img" "$D/mnt" "$D/etc" "$D/etc/scripts"
for spec in ext4:ext4:32M ext4b:ext4:32M xfs:xfs:320M btrfs:btrfs:128M; do
    name=${spec%%:*} rest=${spec#*:}
    fs=${rest%%:*} size=${rest#*:}
    img=$D/img/$name.img mnt=$D/mnt/$name
    truncate -s "$size" "$img"
    case $fs in
        ext4) mkfs.ext4 -q -F "$img" ;;
        xfs) mkfs.xfs -q -f "$img" ;;
        btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
    esac
    mkdir -m 700 "$mnt"
    mount -o loop "$img" "$mnt"
    MNTS+=("$mnt")
done

# The state directory on a small ext4 of 64 inodes, which the fullstate
# fault's pre-script fills (the trap thaws and unmounts it with the others).
truncate -s 8M "$D/img/statefs.img"
mkfs.ext4 -q -F -N 64 "$D/img/statefs.img"
mkdir -m 700 "$D/statefs"
mount -o loop "$D/img/statefs.img" "$D/statefs"
MNTS+=("$D/statefs")
mkdir -m 700 "$D/statefs/state" "$D/statefs/fill"
FREEZE_MNTS=("${MNTS[@]:0:4}")

# Sample scripts (root, 0700). $1 is "<run marker>-s": every process a script
# starts carries the run's marker, so a survivor is found by it.
cat >"$D/etc/scripts/pre.sh" <<'EOF'
#!/bin/bash
# soak pre-script: a short pause, as a database flush would take
echo "$1" >> "$(dirname "$0")/../../pre.log"
(exec -a "$1-pre" sleep 0.05)
echo "pre done"
EOF
cat >"$D/etc/scripts/post.sh" <<'EOF'
#!/bin/bash
# soak post-script
(exec -a "$1-post" sleep 0.05)
echo "$1 ${QUIESCE_RECOVERY:-runner}" >> "$(dirname "$0")/../../post.log"
echo "post done"
EOF
cat >"$D/etc/scripts/pre-hang.sh" <<'EOF'
#!/bin/bash
# soak pre-script that never ends: its timeout must kill the whole tree
(exec -a "$1-prehang" sleep 30)
echo "never reached"
EOF
cat >"$D/etc/scripts/pre-hostile.sh" <<EOF
#!/bin/bash
# soak pre-script that leaves a hostile holder behind (issue 20 item 2)
echo "\$1" >> "\$(dirname "\$0")/../../pre.log"
python3 $PWD/tests/helpers/hostile_holder.py attack "\$PPID" "$D" "\${1%-s}" >/dev/null 2>&1 &
echo "holder left"
EOF
cat >"$D/etc/scripts/pre-fill.sh" <<EOF
#!/bin/bash
# soak pre-script that fills every inode of the state filesystem
echo "\$1" >> "\$(dirname "\$0")/../../pre.log"
i=0
while : > "$D/statefs/fill/f\$i" 2>/dev/null; do i=\$((i+1)); done
echo "filled after \$i files"
EOF
chmod 700 "$D"/etc/scripts/*.sh
# The driver rewrites the configs (0600) before each run with the run's marker.
for c in config.json config-hang.json; do
    install -m 600 /dev/null "$D/etc/$c"
done
mkdir -m 700 "$D/run"

echo "$prog: scratch filesystems ${FREEZE_MNTS[*]}; state directory on $D/statefs" >&2
set +e
python3 scripts/soak/driver.py \
    --bin "$BIN" \
    --config "$D/etc/config.json" --config-hang "$D/etc/config-hang.json" \
    --pre "$D/etc/scripts/pre.sh" --pre-hang "$D/etc/scripts/pre-hang.sh" \
    --post "$D/etc/scripts/post.sh" \
    --pre-hostile "$D/etc/scripts/pre-hostile.sh" --pre-fill "$D/etc/scripts/pre-fill.sh" \
    --statefs "$D/statefs" \
    --run-dir "$D/run" --state-dir "$D/statefs/state" --script-log "$D" \
    --runs "$RUNS" --max-seconds "$SECONDS_BUDGET" \
    ${SOAK_SEED:+--seed "$SOAK_SEED"} ${SOAK_VERBOSE:+-v} \
    "${FREEZE_MNTS[@]/#/--mount=}" &
DRIVER=$!
wait "$DRIVER"
status=$?
DRIVER=
set -e

# Group faults (SPEC §11, scripts/soak/group.py): three members, each on one
# of the first three scratch mounts, against a real three-node etcd cluster
# with TLS; SOAK_GROUP_RUNS=0 skips them.
GROUP_RUNS=${SOAK_GROUP_RUNS:-12}
if [ "$GROUP_RUNS" -gt 0 ] && command -v etcd >/dev/null; then
    python3 scripts/soak/group.py --bin "$BIN" --scratch "$D" --runs "$GROUP_RUNS" \
        ${SOAK_SEED:+--seed "$SOAK_SEED"} -- "${FREEZE_MNTS[@]:0:3}" || status=1
elif [ "$GROUP_RUNS" -gt 0 ]; then
    echo "$prog: etcd is not installed (apt-get install etcd-server): group faults skipped" >&2
fi

# Whatever a dead run may have recorded: thaw it (must have nothing to do).
"$BIN" --config "$D/etc/config.json" --host-config /nonexistent \
    --run-dir "$D/run" --state-dir "$D/statefs/state" --syslog-socket /nonexistent thaw >/dev/null 2>"$D/thaw.err" \
    || { echo "$prog: final quiesce thaw failed:" >&2; cat "$D/thaw.err" >&2; status=1; }
rm -rf "$D/run"
exit "$status"
