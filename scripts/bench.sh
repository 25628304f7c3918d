#!/usr/bin/env bash
# Benchmarks of quiesce: each figure is the median of many runs, printed with
# its ratio against a baseline measured in the same run on the same machine
# (STYLE.md: "Benchmarks measure, tests assert" -- speed targets live here,
# never in tests).
#
#   scripts/bench.sh            human-readable, one line per figure
#   scripts/bench.sh --json     one JSON object on stdout:
#                               {"<key>": {"median", "unit", "baseline",
#                                          "ratio", "target", "runs"}, ...}
#   BENCH_RUNS=N                runs per figure (default 50; slow figures
#                               use a fraction of it, see each figure)
#   BENCH_ONLY=key[,key...]     run only these figures
#
# Run as root from the repo root (the trust checks want root-owned files).
# It never freezes anything.
#
# Adding a figure:
#   1. write `figure_<key>`: it prints exactly two lines on stdout, the
#      candidate samples and the baseline samples (space-separated numbers in
#      the figure's unit), usually via `measure` below; progress to stderr;
#   2. add one `register <key> <unit> <target|null> "<what>" "<baseline>"`
#      line to the registry at the bottom.
# Median, ratio, target verdict, human and JSON output are common code
# (scripts/bench/walltime.py stats/render).
set -euo pipefail
cd "$(dirname "$0")/.."

prog=scripts/bench.sh
helper=scripts/bench/walltime.py

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
Q="$PWD/target/release/quiesce"

# Scratch directory: root-owned, 0700, under /run (every directory above the
# config and scripts must be root-owned and not group/world-writable, so /tmp
# is refused by quiesce).
scratch=$(mktemp -d /run/quiesce-bench.XXXXXX)
chmod 700 "$scratch"
results="$scratch/results.jsonl"
: > "$results"
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- common routines -----------------------------------------------------------

# make_case NAME TIMEOUT_SECONDS PRE_BODY
# Creates $scratch/NAME/ with pre.sh (PRE_BODY after a #!/bin/sh line), an
# instant post.sh, the config, and a run dir; sets CASE_DIR and PRE_SCRIPT.
make_case() {
    local name=$1 timeout=$2 body=$3
    CASE_DIR="$scratch/$name"
    mkdir -m 700 "$CASE_DIR" "$CASE_DIR/run"
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
# isolated from the machine (no plugin-host file, own run dir, no syslog).
quiesce_argv() {
    QARGV=("$Q" --config "$1/VMSnapshotScriptPluginConfig.json"
        --host-config /nonexistent/host.conf --run-dir "$1/run"
        --syslog-socket /nonexistent/sock "$2" --json)
}

# measure RUNS MINUS_MS -- RC CMD... --- RC CMD...
# Interleaved wall times of candidate and baseline, both taken the same way
# (perf_counter around subprocess.run); prints the two sample lines.
measure() {
    local runs=$1 minus=$2
    shift 2
    python3 "$helper" measure --runs "$runs" --minus "$minus" "$@"
}

# --- figures -------------------------------------------------------------------

# Whole `quiesce pre` on an instant script vs `timeout 10 <script>`.
figure_pre_instant_ms() {
    make_case pre_instant 10 'exit 0'
    quiesce_argv "$CASE_DIR" pre
    measure "$RUNS" 0 -- 0 "${QARGV[@]}" --- 0 timeout 10 "$PRE_SCRIPT"
}

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

# --- registry ------------------------------------------------------------------
# register KEY UNIT TARGET WHAT BASELINE_WHAT   (TARGET: number or null; a
# figure meets its target when median <= target)
FIGURES=()
declare -A UNIT=() TARGET=() WHAT=() BASE_WHAT=()
register() {
    FIGURES+=("$1"); UNIT[$1]=$2; TARGET[$1]=$3; WHAT[$1]=$4; BASE_WHAT[$1]=$5
}

register pre_instant_ms ms 10 \
    "wall time of 'quiesce pre' on an instant script" \
    "'timeout 10 <same script>'"
register timeout_late_ms ms 20 \
    "wall time past the 1 s deadline of 'quiesce pre' on 'sleep 30' (upper bound)" \
    "'timeout 1 sleep 30' past 1 s"

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

for key in "${selected[@]}"; do
    log "== $key"
    "figure_$key" \
        | python3 "$helper" stats "$key" "${UNIT[$key]}" "${TARGET[$key]}" \
            "${WHAT[$key]}" "${BASE_WHAT[$key]}" >> "$results"
done

if [ "$json" -eq 1 ]; then
    python3 "$helper" render --json "$results"
else
    python3 "$helper" render --human "$results"
fi
