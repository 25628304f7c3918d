#!/usr/bin/env python3
"""Helper of scripts/bench.sh: does a pre-sync shorten the freeze window?

  presync.py --runs N --quiesce Q --run-dir D -- MOUNT...

Only ever pass it scratch mounts bench.sh created: it freezes every one.
One writer thread per mount appends 64 KiB buffered writes to a file of its
own (rewritten at 8 MiB) for the whole measurement, so each freeze has dirty
data to flush. N rounds, alternating which goes first, of:
  1. candidate: `syncfs` on every mount concurrently (one `sync -f` process
     each, all started at once, all waited for), then at once
     `Q freeze --mount ... -- true`: its `windowMs`
  2. baseline: the same `Q freeze` without the pre-sync: its `windowMs`
with a 150 ms pause before each (cold freezes, see freeze.py). Prints two
sample lines (ms): candidate, baseline.
"""
import json
import os
import subprocess
import sys
import threading
import time


def isolated(run_dir):
    """quiesce's options that keep a run off the machine: no plugin-host
    file or MountsToSkip, and its run, state and metrics directories in the
    scratch directory (never /var/lib/quiesce), no syslog, no journal."""
    return ["--host-config", "/nonexistent/host.conf",
            "--vmbackup-conf", "/nonexistent/vmbackup.conf",
            "--run-dir", run_dir,
            "--state-dir", os.path.join(run_dir, "state"),
            "--metrics-dir", os.path.join(run_dir, "state"),
            "--syslog-socket", "/nonexistent/sock",
            "--journal-socket", "/nonexistent/journal"]


CHUNK = b"w" * 65536
REWRITE_AT = 8 << 20


def writer(mnt, stop):
    path = os.path.join(mnt, "presync-writer")
    while not stop.is_set():
        with open(path, "wb") as f:
            written = 0
            while written < REWRITE_AT and not stop.is_set():
                f.write(CHUNK)
                written += len(CHUNK)
                time.sleep(0.001)


def main():
    args = sys.argv[1:]
    if "--" not in args:
        sys.exit("presync.py --runs N --quiesce Q --run-dir D -- MOUNT...")
    opts, mounts = args[:args.index("--")], args[args.index("--") + 1:]
    o = dict(zip(opts[::2], opts[1::2]))
    runs, q, run_dir = int(o["--runs"]), o["--quiesce"], o["--run-dir"]
    qargv = [q, *isolated(run_dir), "freeze", "--json"]
    for m in mounts:
        qargv += ["--mount", m]
    qargv += ["--", "true"]

    def window(presync):
        time.sleep(0.15)
        if presync:
            procs = [subprocess.Popen(["sync", "-f", m]) for m in mounts]
            for p in procs:
                p.wait()
        p = subprocess.run(qargv, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            sys.exit(f"presync.py: quiesce exited {p.returncode}: {p.stderr[-400:]}")
        return json.loads(p.stdout)["phases"]["freeze"]["windowMs"]

    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(m, stop), daemon=True) for m in mounts]
    for t in threads:
        t.start()
    samples = {True: [], False: []}
    try:
        time.sleep(0.5)
        for r in range(runs):
            for presync in ((True, False) if r % 2 == 0 else (False, True)):
                samples[presync].append(window(presync))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    print(" ".join(f"{x:.3f}" for x in samples[True]))
    print(" ".join(f"{x:.3f}" for x in samples[False]))


if __name__ == "__main__":
    main()
