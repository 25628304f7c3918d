#!/usr/bin/env python3
"""Baseline of scripts/bench/freeze.py window: the raw ioctls, nothing else.

  raw_freeze.py MOUNT...
      Opens every MOUNT, then FIFREEZE on each in order and FITHAW on each in
      reverse; prints the ms from before the first FIFREEZE to after the
      last FITHAW (perf_counter). Whatever it froze is thawed on any error
      and on TERM/INT/HUP.

Run as a process of its own, like quiesce and fsfreeze, so all three freeze
from a freshly started process (which matters: see freeze.py's header).
"""

import fcntl
import os
import signal
import sys
import time

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    fds = [os.open(m, os.O_RDONLY | os.O_DIRECTORY) for m in sys.argv[1:]]
    frozen = []
    try:
        t0 = time.perf_counter()
        for fd in fds:
            fcntl.ioctl(fd, FIFREEZE, 0)
            frozen.append(fd)
        while frozen:
            fcntl.ioctl(frozen[-1], FITHAW, 0)
            frozen.pop()
        t1 = time.perf_counter()
    finally:
        for fd in reversed(frozen):
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            except OSError:
                pass
    print(f"{(t1 - t0) * 1000.0:.4f}")


if __name__ == "__main__":
    main()
