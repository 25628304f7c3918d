#!/bin/sh
# Baseline runner of scripts/bench/freeze.py thaw: the least a shell can do
# to thaw on SIGTERM. Freezes MOUNT, prints "frozen", waits; on TERM thaws
# and exits 143.
#   shell_runner.sh MOUNT
m=$1
trap 'fsfreeze -u "$m"; kill "$pid" 2>/dev/null; exit 143' TERM
fsfreeze -f "$m" || exit 1
sleep 60 &
pid=$!
echo frozen
wait
