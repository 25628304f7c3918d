#!/usr/bin/env bash
# Benchmarks of quiesce: each figure is the median of many runs, printed with
# its ratio against a baseline measured in the same run on the same machine
# (STYLE.md: "Benchmarks measure, tests assert" -- speed targets live here,
# never in tests).
#
#   scripts/bench.sh            human-readable, one line per figure
#   scripts/bench.sh --json     one JSON object on stdout:
#                               {"<key>": {"median", "unit", "baseline",
#                                          "ratio", "target", "target_on",
#                                          "runs"}, ...}
#                               (target_on: "median" or "ratio", which of
#                               the two must be <= target)
#   BENCH_RUNS=N                runs per figure (default 50; slow figures
#                               use a fraction of it, see each figure)
#   BENCH_ONLY=key[,key...]     run only these figures
#   BENCH_QUIESCE=PATH          measure this binary instead of the one built
#                               here (to pair two builds in one session)
#
# Run as root from the repo root (the trust checks want root-owned files).
# The freeze_* and thaw_* figures freeze ONLY scratch ext4 filesystems it
# creates itself: 32 MiB images on a tmpfs inside its scratch directory,
# loop-mounted there (up to 32 of them, so up to 32 loop devices). Never `/`,
# never the work tree's filesystem. On exit, however it exits, the trap thaws
# every scratch mount, kills what the figures started and is still running,
# then unmounts and removes everything.
#
# Adding a figure:
#   1. write `figure_<key>`: it prints exactly two lines on stdout, the
#      candidate samples and the baseline samples (space-separated numbers in
#      the figure's unit), usually via `measure` below; progress to stderr;
#   2. add one `register <key> <unit> <target|null> "<what>" "<baseline>"`
#      line to the registry at the bottom (target: a number, met when the
#      median is <= it, or a number with an x suffix, e.g. 1.2x, met when
#      the ratio to the baseline is <= it).
# Median, ratio, target verdict, human and JSON output are common code
# (scripts/bench/walltime.py stats/render).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/scratchfs.sh
. scripts/lib/scratchfs.sh

prog=scripts/bench.sh
helper=scripts/bench/walltime.py
freeze_helper=scripts/bench/freeze.py

json=0
case "${1:-}" in
    --json) json=1 ;;
    "") ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$prog: unknown argument ${1} (usage: $prog [--json])" >&2; exit 64 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    echo "$prog: run as root (the trust checks require root-owned files)" >&2
    exit 2
fi
for tool in cargo python3 timeout; do
    command -v "$tool" >/dev/null || { echo "$prog: $tool not found" >&2; exit 2; }
done

RUNS=${BENCH_RUNS:-50}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 1 ]; then
    echo "$prog: BENCH_RUNS must be a positive integer, got '$RUNS'" >&2
    exit 64
fi

log() { echo "$@" >&2; }

log "== building quiesce (release)"
cargo build --release --quiet >&2
Q="${BENCH_QUIESCE:-$PWD/target/release/quiesce}"

# Scratch directory: root-owned, 0700, under /run (every directory above the
# config and scripts must be root-owned and not group/world-writable, so /tmp
# is refused by quiesce).
scratch=$(mktemp -d /run/quiesce-bench.XXXXXX)
chmod 700 "$scratch"
results="$scratch/results.jsonl"
: > "$results"
# Processes the freeze/thaw figures start, "pid starttime" a line, so the
# trap can kill them should a helper die with a window open.
pids_file="$scratch/pids"

# Exit trap: thaw every scratch mount FIRST (a process blocked on a frozen
# filesystem cannot die and a frozen filesystem should never be left
# behind), then kill leftovers, then unmount (retrying while dying processes
# still hold the mount), detach the loop devices, and remove the directory.
cleanup() {
    set +e
    trap '' INT TERM
    local m
    for m in "$scratch"/mnt/*; do
        mountpoint -q "$m" 2>/dev/null && fsfreeze -u "$m" 2>/dev/null
    done
    [ -f "$pids_file" ] && python3 "$freeze_helper" reap "$pids_file"
    # The post guards the `pre` figures leave armed until their post is due
    # (SPEC §6.6): the processes whose command line names this run's own
    # scratch directory (made by mktemp: no one else's). Not by their exe:
    # BENCH_QUIESCE may be a wrapper that execs another binary.
    local pid
    for pid in $(pgrep -f -- "--run-dir $scratch/"); do
        kill -KILL "$pid" 2>/dev/null
    done
    scratch_release "$scratch"/mnt/*
    if mountpoint -q "$scratch/img" 2>/dev/null; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            umount "$scratch/img" 2>/dev/null && break
            sleep 0.2
        done
    fi
    if mountpoint -q "$scratch/img" 2>/dev/null; then
        log "$prog: cannot unmount $scratch/img; left in place"
    else
        if [ -n "${BENCH_KEEP:-}" ]; then log "$prog: kept $scratch (BENCH_KEEP)"; else rm -rf "$scratch"; fi
    fi
}
trap cleanup EXIT
# INT/TERM: stop the running figure at once (it runs as a job of its own,
# see the run loop: bash would otherwise run the trap only once the figure
# is over), then exit, which runs cleanup. The helpers thaw what they froze
# on TERM, and quiesce does too.
fig_pgid=
stop() {
    trap '' INT TERM
    if [ -n "$fig_pgid" ]; then
        kill -TERM -- "-$fig_pgid" 2>/dev/null
        wait "$fig_pgid" 2>/dev/null
    fi
    exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

# --- common routines -----------------------------------------------------------

# make_case NAME TIMEOUT_SECONDS PRE_BODY
# Creates $scratch/NAME/ with pre.sh (PRE_BODY after a #!/bin/sh line), an
# instant post.sh, the config, and a run dir; sets CASE_DIR and PRE_SCRIPT.
make_case() {
    local name=$1 timeout=$2 body=$3
    CASE_DIR="$scratch/$name"
    mkdir -m 700 "$CASE_DIR" "$CASE_DIR/run"
    mkdir -m 755 "$CASE_DIR/metrics"
    printf '#!/bin/sh\n%s\n' "$body" > "$CASE_DIR/pre.sh"
    printf '#!/bin/sh\nexit 0\n' > "$CASE_DIR/post.sh"
    chmod 700 "$CASE_DIR/pre.sh" "$CASE_DIR/post.sh"
    printf '{"preScriptLocation": "%s", "postScriptLocation": "%s", "timeoutInSeconds": %d}\n' \
        "$CASE_DIR/pre.sh" "$CASE_DIR/post.sh" "$timeout" \
        > "$CASE_DIR/VMSnapshotScriptPluginConfig.json"
    chmod 600 "$CASE_DIR/VMSnapshotScriptPluginConfig.json"
    PRE_SCRIPT="$CASE_DIR/pre.sh"
}

# quiesce_argv CASE_DIR PHASE -> QARGV (array): the full quiesce command line,
# isolated from the machine: no plugin-host file, its own run and state
# directories and metrics directory in the scratch directory (never the
# machine's /var/lib/quiesce: a pending post-script recorded there would be
# run by every later quiesce on this machine), no syslog, no journal.
quiesce_argv() {
    QARGV=("$Q" --config "$1/VMSnapshotScriptPluginConfig.json"
        --host-config /nonexistent/host.conf --run-dir "$1/run"
        --state-dir "$1/state" --metrics-dir "$1/metrics"
        --syslog-socket /nonexistent/sock --journal-socket /nonexistent/journal
        "$2" --json)
}

# measure RUNS MINUS_MS -- RC CMD... --- RC CMD...
# Interleaved wall times of candidate and baseline, both taken the same way
# (perf_counter around subprocess.run); prints the two sample lines.
measure() {
    local runs=$1 minus=$2
    shift 2
    python3 "$helper" measure --runs "$runs" --minus "$minus" "$@"
}

# scratch_mounts N -> MNTS (array): N scratch ext4 filesystems, created on
# first use: $scratch/img/K.img on a tmpfs of ours (so a freeze's flush
# costs the same every time, whatever the machine's disk is doing), mounted
# on $scratch/mnt/K. Inode tables and journal are initialised by mkfs (no
# lazy init): a background ext4lazyinit thread would make freezes slow at
# random.
scratch_mounts() {
    local n=$1 k tool
    for tool in fsfreeze mkfs.ext4 losetup mount umount mountpoint truncate; do
        command -v "$tool" >/dev/null || { log "$prog: $tool not found"; exit 2; }
    done
    if ! mountpoint -q "$scratch/img"; then
        mkdir -m 700 "$scratch/img" "$scratch/mnt"
        mount -t tmpfs -o size=2g,mode=700 quiesce-bench "$scratch/img"
    fi
    MNTS=()
    for (( k = 1; k <= n; k++ )); do
        if ! mountpoint -q "$scratch/mnt/$k" 2>/dev/null; then
            scratch_mount "$scratch/img/$k.img" "$scratch/mnt/$k" ext4 32M \
                -E lazy_itable_init=0,lazy_journal_init=0
        fi
        MNTS+=("$scratch/mnt/$k")
    done
}

# window_samples N ROUNDS: the six sample lines of `freeze.py window` on N
# scratch mounts (quiesce windowMs, raw ioctls, shell loop, then the wall
# time of each whole command), measured once per bench run and cached, as
# several figures read them.
window_samples() {
    local n=$1 rounds=$2 cache="$scratch/window-$1.samples"
    if [ ! -s "$cache" ]; then
        [ "$rounds" -ge 5 ] || rounds=5
        scratch_mounts "$n"
        [ -d "$scratch/freeze-run" ] || mkdir -m 700 "$scratch/freeze-run"
        python3 "$freeze_helper" window --runs "$rounds" \
            --quiesce "$Q" --run-dir "$scratch/freeze-run" \
            --raw scripts/bench/raw_freeze.py \
            --shell-loop scripts/bench/fsfreeze_loop.sh -- "${MNTS[@]}" > "$cache.part"
        mv "$cache.part" "$cache"
    fi
    cat "$cache"
}

# thaw_samples TERM|KILL: the two sample lines of `freeze.py thaw` on one
# scratch mount. Each run opens a fresh window: BENCH_RUNS/5 runs, at least 5.
thaw_samples() {
    local runs=$(( RUNS / 5 ))
    [ "$runs" -ge 5 ] || runs=5
    scratch_mounts 1
    python3 "$freeze_helper" thaw --runs "$runs" --signal "$1" --quiesce "$Q" \
        --scratch "$scratch" --shell-runner scripts/bench/shell_runner.sh \
        --pids "$pids_file" -- "${MNTS[0]}"
}

# remember_pid PID: the exit trap SIGKILLs it (after thawing) if still running.
remember_pid() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20)
    echo "$1 $st" >> "$pids_file"
}

# db_mount -> DB_MNT: one scratch ext4 of 512 MiB for the databases (on our
# tmpfs, like the other scratch mounts), and the scratch directory made
# traversable (0711) by the servers' own users; nothing in it is listable
# or writable by them.
db_mount() {
    scratch_mounts 0
    DB_MNT="$scratch/mnt/db"
    if ! mountpoint -q "$DB_MNT" 2>/dev/null; then
        scratch_mount "$scratch/img/db.img" "$DB_MNT" ext4 512M \
            -E lazy_itable_init=0,lazy_journal_init=0
        chmod 711 "$scratch" "$scratch/mnt" "$DB_MNT"
        mkdir -m 755 "$scratch/dbrun"
    fi
}

# db_workload_config NAME JSON_CONNECTION ENGINE -> WL_CONFIG
db_workload_config() {
    WL_CONFIG="$scratch/$1.json"
    printf '{"workload": "%s", "connection": %s, "timeoutInSeconds": 30}\n' "$3" "$2" > "$WL_CONFIG"
    chmod 600 "$WL_CONFIG"
    [ -d "$scratch/stall" ] || mkdir -m 700 "$scratch/stall" "$scratch/stall/run" "$scratch/stall/metrics"
}

# pg_up: a PostgreSQL 15 of our own on DB_MNT (socket in $scratch/dbrun).
pg_up() {
    # Each figure runs in a subshell of its own: the mark is a file.
    [ -e "$scratch/dbrun/pg.up" ] && return
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$bin/initdb" ] || { log "$prog: PostgreSQL not installed (scripts/databases.sh)"; exit 2; }
    db_mount
    install -d -o postgres -g postgres -m 700 "$DB_MNT/pgdata"
    install -d -o postgres -g postgres -m 755 "$scratch/dbrun/pg"
    setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$DB_MNT/pgdata" \
        -U postgres --auth-local=peer --auth-host=reject --no-sync >/dev/null
    setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$DB_MNT/pgdata" \
        -c port=55499 -c "unix_socket_directories=$scratch/dbrun/pg" -c listen_addresses= \
        -c shared_buffers=16MB -c fsync=on -c synchronous_commit=on \
        > "$scratch/dbrun/pg.log" 2>&1 < /dev/null &
    remember_pid $!
    local i
    for i in $(seq 1 100); do
        runuser -u postgres -- psql -X -q -h "$scratch/dbrun/pg" -p 55499 -d postgres \
            -c 'CREATE TABLE stall_t (id bigserial PRIMARY KEY, v int)' 2>/dev/null && PG_UP=1 && break
        sleep 0.2
    done
    [ -n "${PG_UP:-}" ] || { log "$prog: PostgreSQL did not start:"; tail -n 20 "$scratch/dbrun/pg.log" >&2; exit 2; }
    : > "$scratch/dbrun/pg.up"
}

# maria_up: a MariaDB of our own on DB_MNT, InnoDB only.
maria_up() {
    [ -e "$scratch/dbrun/maria.up" ] && return
    command -v mariadbd >/dev/null || { log "$prog: MariaDB not installed (scripts/databases.sh)"; exit 2; }
    db_mount
    install -d -o mysql -g mysql -m 700 "$DB_MNT/mysql" "$scratch/dbrun/mytmp"
    install -d -o mysql -g mysql -m 755 "$scratch/dbrun/my"
    local opts=(--innodb-log-file-size=16M --innodb-buffer-pool-size=32M)
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_MNT/mysql" \
        --tmpdir="$scratch/dbrun/mytmp" --skip-test-db \
        --auth-root-authentication-method=socket "${opts[@]}" >/dev/null 2>&1
    mariadbd --no-defaults --user=mysql --datadir="$DB_MNT/mysql" --tmpdir="$scratch/dbrun/mytmp" \
        --socket="$scratch/dbrun/my/mysqld.sock" --skip-networking \
        --pid-file="$scratch/dbrun/my/mysqld.pid" --log-error="$scratch/dbrun/my/mysqld.log" \
        "${opts[@]}" > /dev/null 2>&1 < /dev/null &
    remember_pid $!
    local i
    for i in $(seq 1 100); do
        mariadb --no-defaults --user=root --socket="$scratch/dbrun/my/mysqld.sock" \
            -e 'CREATE DATABASE stall; CREATE TABLE stall.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB' \
            2>/dev/null && MARIA_UP=1 && break
        sleep 0.2
    done
    [ -n "${MARIA_UP:-}" ] || { log "$prog: MariaDB did not start:"; tail -n 20 "$scratch/dbrun/my/mysqld.log" >&2; exit 2; }
    : > "$scratch/dbrun/maria.up"
}

# stall_samples ENGINE [--extension]: the two sample lines of stall.py, one
# run each per BENCH_RUNS/5 (at least 5).
stall_samples() {
    local engine=$1 runs=$(( RUNS / 5 )) sock port
    shift
    [ "$runs" -ge 5 ] || runs=5
    db_mount
    if [ "$engine" = postgres ]; then
        pg_up
        sock="$scratch/dbrun/pg" port=55499
        db_workload_config pg "{\"socket\": \"$sock\", \"port\": $port, \"osUser\": \"postgres\"}" postgres
    else
        maria_up
        sock="$scratch/dbrun/my/mysqld.sock" port=0
        db_workload_config maria "{\"socket\": \"$sock\", \"user\": \"root\"}" mariadb
    fi
    python3 scripts/bench/stall.py run --runs "$runs" --engine "$engine" --socket "$sock" \
        --port "$port" --quiesce "$Q" --mount "$DB_MNT" --dir "$scratch/stall" \
        --config "$WL_CONFIG" "$@"
}

# --- figures -------------------------------------------------------------------

# Whole `quiesce pre` on an instant script vs `timeout 10 <script>`.
figure_pre_instant_ms() {
    make_case pre_instant 10 'exit 0'
    quiesce_argv "$CASE_DIR" pre
    measure "$RUNS" 0 -- 0 "${QARGV[@]}" --- 0 timeout 10 "$PRE_SCRIPT"
}

# The same `pre` as a scheduler starts it: after a quiet spell (200 ms of
# nothing before each run). The kernel's cgroup-move lock waits for an RCU
# grace period when it is first taken after such a spell; back-to-back runs
# (pre_instant_ms) mostly find it warm and hide what one backup a night
# pays. BENCH_RUNS/3 runs, at least 5.
figure_pre_cold_ms() {
    local runs=$(( RUNS / 3 ))
    [ "$runs" -ge 5 ] || runs=5
    make_case pre_cold 10 'exit 0'
    quiesce_argv "$CASE_DIR" pre
    measure "$runs" 0 --pause 200 -- 0 "${QARGV[@]}" --- 0 timeout 10 "$PRE_SCRIPT"
}

# System calls of one whole `quiesce pre` on an instant script, itself and
# everything it forks (sentinel, post guard until the runner exits, the
# script), counted by `strace -f -c`, against `timeout 10 <script>`; and
# the fsyncs among them. Cached: both figures read the same runs
# (BENCH_RUNS/10 runs, at least 3; the count barely varies).
syscall_samples() {
    local cache="$scratch/syscalls.samples" runs=$(( RUNS / 10 ))
    [ "$runs" -ge 3 ] || runs=3
    if [ ! -s "$cache" ]; then
        command -v strace >/dev/null || { log "$prog: strace not found (apt-get install strace)"; exit 2; }
        make_case pre_syscalls 10 'exit 0'
        quiesce_argv "$CASE_DIR" pre
        python3 scripts/bench/syscalls.py measure --runs "$runs" --leaves "$Q" "$CASE_DIR/run" \
            -- 0 "${QARGV[@]}" --- 0 timeout 10 "$PRE_SCRIPT" > "$cache.part"
        mv "$cache.part" "$cache"
    fi
    cat "$cache"
}
figure_pre_syscalls() { syscall_samples | sed -n '1p;2p'; }
figure_pre_fsyncs() { syscall_samples | sed -n '3p;4p'; }

# How late the timeout kill lands: total wall time of `quiesce pre` with
# timeoutInSeconds 1 on a script sleeping 30 s, minus the 1000 ms deadline.
# This is an UPPER BOUND on the lateness: it also contains quiesce's process
# start, config and script checks before the deadline clock starts, and the
# reaping and exit reporting after the kill. Baseline: `timeout 1 sleep 30`
# measured the same way. Slow (1 s a run): BENCH_RUNS/5 runs, at least 3.
figure_timeout_late_ms() {
    local runs=$(( RUNS / 5 ))
    [ "$runs" -ge 3 ] || runs=3
    make_case timeout_late 1 'sleep 30'
    quiesce_argv "$CASE_DIR" pre
    measure "$runs" 1000 -- 2 "${QARGV[@]}" --- 124 timeout 1 sleep 30
}

# The freeze window on N scratch mounts (SPEC.md §6.2), each method cold
# (see freeze.py's header: a freeze within a few tens of ms of the previous
# one skips the RCU grace periods and would not be comparable), each mount
# dirtied with a small file before each method. Candidate: quiesce's own
# `windowMs` for `freeze --mount ... -- true` -- which also contains running
# the snapshot command `true`. Rounds: BENCH_RUNS for 1 mount, /2 for 8, /5
# for 32 (at least 5).
figure_freeze_overhead_ratio_1() { window_samples 1 "$RUNS" | sed -n '1p;2p'; }
figure_freeze_overhead_ratio_8() { window_samples 8 $(( RUNS / 2 )) | sed -n '1p;2p'; }
figure_freeze_overhead_ratio_32() { window_samples 32 $(( RUNS / 5 )) | sed -n '1p;2p'; }
# The stage at the physical limit (SPEC.md §6.1): 8 independent mounts are
# one stage, frozen concurrently, so the window on 8 costs about one cold
# freeze. Candidate: windowMs on 8 mounts; baseline: windowMs on 1 mount.
figure_freeze_window_8_vs_1() {
    window_samples 8 $(( RUNS / 2 )) | sed -n '1p'
    window_samples 1 "$RUNS" | sed -n '1p'
}
figure_freeze_shell_loop_ratio_1() { window_samples 1 "$RUNS" | sed -n '1p;3p'; }
figure_freeze_shell_loop_ratio_8() { window_samples 8 $(( RUNS / 2 )) | sed -n '1p;3p'; }
figure_freeze_shell_loop_ratio_32() { window_samples 32 $(( RUNS / 5 )) | sed -n '1p;3p'; }
# Whether a pre-sync would shorten the window (issue 14): with a writer on
# each of 8 mounts, windowMs right after a concurrent `sync -f` of every
# mount against windowMs without. Informational: quiesce has no pre-sync,
# this is the measurement that decided it (BENCH_RUNS/5 rounds, at least 5).
figure_freeze_presync_8_ratio() {
    local runs=$(( RUNS / 5 ))
    [ "$runs" -ge 5 ] || runs=5
    scratch_mounts 8
    [ -d "$scratch/freeze-run" ] || mkdir -m 700 "$scratch/freeze-run"
    python3 scripts/bench/presync.py --runs "$runs" --quiesce "$Q" \
        --run-dir "$scratch/freeze-run" -- "${MNTS[@]}"
}
# For information: the whole `quiesce freeze` command on 8 mounts (process
# start, checks, lock, watchdog, report) against the whole shell-loop script.
figure_freeze_command_wall_8_ms() { window_samples 8 $(( RUNS / 2 )) | sed -n '4p;6p'; }

# Peak resident memory of a whole `quiesce snapshot` run (pre-script, freeze
# of one scratch mount, `true`, thaw, post-script), from wait4's rusage.
# Baseline: the same job as a minimal shell (fsfreeze -f; true; fsfreeze -u).
figure_peak_rss_kib() {
    [ -x /usr/bin/time ] || { log "$prog: GNU time not found (apt-get install time)"; exit 2; }
    local runs=$(( RUNS / 5 ))
    [ "$runs" -ge 5 ] || runs=5
    scratch_mounts 1
    make_case peak_rss 10 'exit 0'
    quiesce_argv "$CASE_DIR" snapshot
    # shellcheck disable=SC2016 # "$1" belongs to the inner shell
    python3 "$helper" measure --metric rss --runs "$runs" -- \
        0 "${QARGV[@]}" --mount "${MNTS[0]}" -- true --- \
        0 sh -c 'fsfreeze -f "$1" && true; fsfreeze -u "$1"' sh "${MNTS[0]}"
}

# Growth in mounts: the window's cost per mount at 64 mounts against the
# cost of a single mount (both quiesce's windowMs, cold). Linear growth is a
# ratio near 1. Slow: BENCH_RUNS/10 rounds at 64 mounts, at least 3.
figure_freeze_per_mount_64_ms() {
    local one sixty_four
    one=$(window_samples 1 "$RUNS" | sed -n '1p')
    sixty_four=$(window_samples 64 $(( RUNS / 10 )) | sed -n '1p')
    python3 -c 'import sys; print(" ".join(f"{float(x)/64:.4f}" for x in sys.argv[1].split()))' "$sixty_four"
    echo "$one"
}

# Time from a signal to the runner holding a window open until a write to
# the frozen mount completes (SPEC.md §6.4 points 3 and 4).
figure_thaw_after_term_ms() { thaw_samples TERM; }
figure_thaw_after_kill_ms() { thaw_samples KILL; }

# The stall a database user feels (issue 23): a writer committing
# continuously, its longest gap between commits during one `snapshot` with
# the built-in workload, against a bare freeze of the same filesystem.
figure_stall_postgres_ratio() { stall_samples postgres; }
figure_stall_mariadb_ratio() { stall_samples mariadb; }
figure_stall_mariadb_extension_ratio() { stall_samples mariadb --extension; }
# Consistency groups (SPEC §11): a three-node etcd cluster with TLS on
# loopback ports, three members each on its own scratch mount
# (scripts/bench/group.py; every etcd node is killed by its pid at the end).
group_samples() {
    local runs=$(( RUNS / 5 ))
    [ "$runs" -ge 5 ] || runs=5
    command -v etcd >/dev/null || { log "$prog: etcd not found (apt-get install etcd-server)"; exit 2; }
    scratch_mounts 3
    python3 scripts/bench/group.py "$1" --runs "$runs" --quiesce "$Q" --scratch "$scratch" -- "${MNTS[@]}"
}
figure_group_window_ms() { group_samples window; }
figure_group_death_thaw_ms() { group_samples death; }
figure_group_clean_fail_thaw_ms() { group_samples fail; }

# --- registry ------------------------------------------------------------------
# register KEY UNIT TARGET WHAT BASELINE_WHAT   (TARGET: number, met when
# median <= target; number with an x suffix, met when ratio <= it; or null)
FIGURES=()
declare -A UNIT=() TARGET=() WHAT=() BASE_WHAT=()
register() {
    FIGURES+=("$1"); UNIT[$1]=$2; TARGET[$1]=$3; WHAT[$1]=$4; BASE_WHAT[$1]=$5
}

register pre_instant_ms ms 5 \
    "wall time of 'quiesce pre' on an instant script" \
    "'timeout 10 <same script>'"
register pre_cold_ms ms null \
    "wall time of 'quiesce pre' on an instant script, each run after 200 ms of quiet (as a scheduler starts one)" \
    "'timeout 10 <same script>', the same way"
register pre_syscalls calls null \
    "system calls of one 'quiesce pre' on an instant script, with everything it forks (strace -f -c)" \
    "'timeout 10 <same script>'"
register pre_fsyncs calls null \
    "fsync/fdatasync calls among them (SPEC §6.6 needs the pending record and its directory: 2)" \
    "'timeout 10 <same script>'"
register timeout_late_ms ms 20 \
    "wall time past the 1 s deadline of 'quiesce pre' on 'sleep 30' (upper bound)" \
    "'timeout 1 sleep 30' past 1 s"
# One mount: quiesce adds little to the ioctl. 8 and 32 independent mounts
# are one stage frozen concurrently: a fraction of the sequential ioctls.
declare -A OVERHEAD_TARGET=([1]=1.2x [8]=0.4x [32]=0.4x)
for n in 1 8 32; do
    register "freeze_overhead_ratio_$n" ms "${OVERHEAD_TARGET[$n]}" \
        "quiesce windowMs of 'freeze' on $n independent scratch ext4 mount(s) (one stage, cold, incl. running 'true')" \
        "raw FIFREEZE on each in turn, FITHAW in reverse (a Python process of its own, first freeze to last thaw)"
    register "freeze_shell_loop_ratio_$n" ms 1.0x \
        "quiesce windowMs of 'freeze' on $n scratch ext4 mount(s) (cold, incl. running 'true')" \
        "shell loop 'fsfreeze -f' each, 'fsfreeze -u' in reverse (loop wall time)"
done
register freeze_window_8_vs_1 ms 1.5x \
    "quiesce windowMs of 'freeze' on 8 independent scratch ext4 mounts (one stage, cold)" \
    "quiesce windowMs of 'freeze' on 1 scratch ext4 mount (cold), same run"
register freeze_presync_8_ratio ms null \
    "quiesce windowMs on 8 scratch ext4 mounts, each with a writer, right after a concurrent 'sync -f' of all" \
    "the same window without the pre-sync, same run"
register freeze_command_wall_8_ms ms null \
    "wall time of the whole 'quiesce freeze --mount x8 -- true' command" \
    "wall time of the whole shell-loop script on the same 8 mounts"
register freeze_per_mount_64_ms ms 1.5x \
    "quiesce windowMs per mount on 64 scratch ext4 mounts (one stage, cold)" \
    "quiesce windowMs on 1 mount (sequential freezes would give a ratio near 1; one stage far below)"
register peak_rss_kib KiB 4096 \
    "peak RSS of a whole 'quiesce snapshot' (pre, freeze 1 mount, true, thaw, post)" \
    "a shell doing 'fsfreeze -f; true; fsfreeze -u' on the same mount"
register thaw_after_term_ms ms 5 \
    "SIGTERM to the quiesce runner holding 1 mount frozen -> a write to it completes" \
    "the same with 'fsfreeze -f' + a shell trapping TERM to 'fsfreeze -u'"
register thaw_after_kill_ms ms 50 \
    "SIGKILL to the quiesce runner holding 1 mount frozen (its watchdog thaws) -> a write completes" \
    "no shell survives SIGKILL: the SIGTERM shell baseline of thaw_after_term_ms, measured again"
register stall_postgres_ratio ms 1.2x \
    "PostgreSQL: a writer's longest gap between commits during 'quiesce snapshot' with the built-in workload (CHECKPOINT, no lock)" \
    "the same writer during a bare 'quiesce freeze' of the same filesystem (the floor)"
register stall_mariadb_ratio ms 1.2x \
    "MariaDB, InnoDB only: a writer's longest gap between commits during 'quiesce snapshot' with the built-in workload (no lock)" \
    "the same writer during a bare 'quiesce freeze' of the same filesystem (the floor)"
register stall_mariadb_extension_ratio ms null \
    "MariaDB, InnoDB only: the same gap with the Azure extension's SQL (FLUSH TABLES WITH READ LOCK, read_only, held by SLEEP, released from a new session) around a bare freeze" \
    "the same writer during a bare 'quiesce freeze' of the same filesystem (the floor)"

register group_window_ms ms 1.3x \
    "windowMs of one member of a three-member consistency group (two barriers in etcd inside the window)" \
    "windowMs of one 'snapshot' alone on the same mount, same run"
register group_death_thaw_ms ms 1100 \
    "SIGKILL to one member in its window -> writes to the other two members' mounts complete (lease 1 s)" \
    "the lease's TTL"
register group_clean_fail_thaw_ms ms 50 \
    "one member's snapshot command exits 1 -> writes to the other two members' mounts complete" \
    "the same after an exit 0 (the round's normal end)"

# --- run -----------------------------------------------------------------------

selected=("${FIGURES[@]}")
if [ -n "${BENCH_ONLY:-}" ]; then
    IFS=, read -r -a selected <<< "$BENCH_ONLY"
    for key in "${selected[@]}"; do
        [ -n "${UNIT[$key]+set}" ] || { log "$prog: unknown figure '$key' (known: ${FIGURES[*]})"; exit 64; }
    done
fi

machine() {
    local cpu
    cpu=$(grep -m1 -E '^(model name|Model|cpu model)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
    [ -n "$cpu" ] || cpu=$(uname -m)
    echo "machine: $(nproc) CPUs, kernel $(uname -r), CPU: $cpu"
}
if [ "$json" -eq 1 ]; then machine >&2; else machine; fi

# Each figure runs as a background job with job control on, i.e. in a
# process group of its own that stop() can signal as a whole.
set -m
for key in "${selected[@]}"; do
    log "== $key"
    { "figure_$key" \
        | python3 "$helper" stats "$key" "${UNIT[$key]}" "${TARGET[$key]}" \
            "${WHAT[$key]}" "${BASE_WHAT[$key]}" >> "$results"; } &
    fig_pgid=$!
    wait "$fig_pgid"
    fig_pgid=
done
set +m

if [ "$json" -eq 1 ]; then
    python3 "$helper" render --json "$results"
else
    python3 "$helper" render --human "$results"
fi
