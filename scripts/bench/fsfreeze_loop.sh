#!/usr/bin/env bash
# Baseline of scripts/bench/freeze.py window: `fsfreeze -f` every MOUNT in
# order, then `fsfreeze -u` in reverse; prints the wall time of the two
# loops in ms (from before the first fsfreeze to after the last).
# Whatever it froze is thawed on failure and on TERM/INT/HUP.
#   fsfreeze_loop.sh MOUNT...
set -u
export LC_ALL=C   # EPOCHREALTIME with a '.' decimal point

frozen=()
thaw_all() {
    local i
    for (( i = ${#frozen[@]} - 1; i >= 0; i-- )); do
        fsfreeze -u "${frozen[i]}"
    done
    frozen=()
}
trap 'thaw_all; exit 143' TERM INT HUP

t0=$EPOCHREALTIME
for m in "$@"; do
    fsfreeze -f "$m" || { thaw_all; exit 1; }
    frozen+=("$m")
done
thaw_all
t1=$EPOCHREALTIME

us=$(( ${t1/./} - ${t0/./} ))
printf '%d.%03d\n' $(( us / 1000 )) $(( us % 1000 ))
