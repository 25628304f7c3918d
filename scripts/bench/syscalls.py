#!/usr/bin/env python3
"""Helper of scripts/bench.sh: how many system calls (and fsyncs) one run of a
command makes, itself and everything it forks, counted by `strace -f -c`.

  syscalls.py measure --runs N [--leaves EXE MATCH] -- RC CMD... [--- RC CMD...]
      Runs every command N times, interleaved, each under `strace -f -c`.
      Each must exit with its RC. Prints two lines per command, all the
      commands' total lines first: the total system calls of each run, then
      (same order) the fsync/fdatasync/sync_file_range calls of each run.

      --leaves EXE MATCH: the command leaves processes behind on purpose
      (`quiesce pre` leaves its post guard armed until the post is due,
      SPEC §6.6). Once the command's own process has exited, every process
      running EXE whose command line contains MATCH is killed (SIGKILL), so
      strace, which follows them, ends and prints its counts. What they did
      until then is counted: it is part of the run's cost.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

# The command-list syntax is walltime.py's, parsed by its own code.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walltime import parse_commands  # noqa: E402

SYNCS = ("fsync", "fdatasync", "sync_file_range", "syncfs")


def die(msg):
    print(f"syscalls.py: {msg}", file=sys.stderr)
    sys.exit(2)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def runs(pid, exe):
    try:
        return os.readlink(f"/proc/{pid}/exe") == exe
    except OSError:
        return False


def kill_leaves(exe, match):
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/exe") != exe:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if match.encode() not in f.read():
                    continue
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass


def summary(path):
    """(total calls, sync calls) from the `strace -c` table."""
    total, syncs = None, 0
    with open(path) as f:
        for line in f:
            # % time, seconds, usecs/call, calls, [errors,] syscall
            cols = line.split()
            if len(cols) < 5 or not cols[3].isdigit():
                continue
            calls = cols[3]
            if cols[-1] == "total":
                total = int(calls)
            elif cols[-1] in SYNCS:
                syncs += int(calls)
    if total is None:
        die(f"no total in the strace summary {path}")
    return total, syncs


def run_once(rc, argv, leaves):
    with tempfile.NamedTemporaryFile(prefix="syscalls.", suffix=".txt") as out:
        p = subprocess.Popen(["strace", "-f", "-c", "-o", out.name, "--"] + argv,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        if leaves:
            main = None
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline:
                # strace forks helpers of its own first: the command is
                # the child that runs EXE.
                if main is None:
                    main = next((k for k in children(p.pid) if runs(k, leaves[0])), None)
                if main is not None and not alive(main):
                    kill_leaves(*leaves)
                time.sleep(0.01)
        try:
            got = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            die(f"{' '.join(argv)}: still running under strace after 60 s")
        if got != rc:
            die(f"{' '.join(argv)}: exit {got} under strace, expected {rc}")
        return summary(out.name)


def measure(args):
    runs, leaves = None, None
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "--runs":
            runs = int(args.pop(0))
        elif opt == "--leaves":
            leaves = (args.pop(0), args.pop(0))
        else:
            die(f"unknown option {opt}")
    if not runs or runs < 1 or not args:
        die("measure --runs N [--leaves EXE MATCH] -- RC CMD... [--- RC CMD...]")
    cmds = parse_commands(args[1:])
    totals = [[] for _ in cmds]
    syncs = [[] for _ in cmds]
    order = list(range(len(cmds)))
    for _ in range(runs):
        for j in order:
            t, s = run_once(*cmds[j], leaves if j == 0 else None)
            totals[j].append(t)
            syncs[j].append(s)
        order.reverse()
    for series in totals + syncs:
        print(" ".join(str(n) for n in series))
    print(f"  {runs} runs of {len(cmds)} commands under strace -f -c", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "measure":
        die("usage: syscalls.py measure ...")
    measure(sys.argv[2:])
