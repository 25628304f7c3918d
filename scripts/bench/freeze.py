#!/usr/bin/env python3
"""Helper of scripts/bench.sh: freeze-window and thaw-latency measurements.

Only ever pass it scratch loop-mounted filesystems that bench.sh created:
it freezes every mount it is given.

  freeze.py window --runs N [--warmup W] [--settle-ms S] --quiesce Q
                   --run-dir D --raw RAW --shell-loop SCRIPT -- MOUNT...
      N rounds (after W warm-up rounds, default 1) of three ways to freeze
      all MOUNTs in order and thaw them in reverse, each a process of its
      own that measures its own window; the order of the three methods
      rotates every round so none always goes first. Before each method,
      every mount gets a small new unsynced file, so each freeze has the
      same little work to do (flush it), then nothing happens for S ms
      (default 100). That pause matters: FIFREEZE takes the superblock's
      three percpu rw-semaphores for writing, and each waits for an RCU
      grace period unless the same filesystem was frozen a few ms before
      (rcu_sync cool-down) -- a cold freeze costs tens of ms a mount, a warm
      one tens of us. Without the pause, whichever method follows another
      closely would get warm freezes; with it every method pays the cold
      cost, as a real (rare) freeze does. Grace periods also make the
      samples noisy: compare medians of many rounds. Prints six sample
      lines (ms):
        1. quiesce: `phases.freeze.windowMs` of `Q freeze --mount ... -- true`
           (first FIFREEZE to last FITHAW, measured inside quiesce; it
           contains running the snapshot command `true`)
        2. raw ioctls: RAW (raw_freeze.py) -- FIFREEZE on every mount dir,
           then FITHAW in reverse, perf_counter from before the first to
           after the last. A separate process on purpose: the same ioctls
           from this long-lived helper came out up to a third faster at one
           mount than from a freshly started process, which is what quiesce
           and fsfreeze are
        3. shell loop: SCRIPT (`fsfreeze -f` each, `fsfreeze -u` in reverse),
           timed by the script itself around its loops
        4-6. the same three: wall time of the whole command (perf_counter
           around subprocess.run)

  freeze.py thaw --runs N [--warmup W] --signal (TERM|KILL) --quiesce Q
                 --scratch DIR --shell-runner SCRIPT --pids FILE -- MOUNT
      Thaw latency after a signal to the process holding the window. Each
      run opens a fresh window, waits until it is really open (see
      wait_frozen), then takes perf_counter, sends the signal to the runner
      and immediately creates and writes a probe file on MOUNT: the write
      blocks while MOUNT is frozen, so perf_counter after it returns minus
      the first one is the time from the signal to a usable filesystem.
      Prints two sample lines (ms), interleaved and alternating like
      walltime.py measure:
        1. quiesce: `Q freeze --mount MOUNT -- sleep 60`, signal to its
           runner (`runnerPid` of state.json)
        2. shell: SCRIPT MOUNT (`fsfreeze -f`, then a shell whose TERM trap
           runs `fsfreeze -u`), always SIGTERM (a shell cannot thaw after
           SIGKILL, so it is the baseline of both signals)
      Every process started is recorded in FILE ("pid starttime" lines) so
      bench.sh's exit trap can reap it if this helper dies. A safety timer
      thaws MOUNT itself if nothing else did within 10 s (the run fails).

  freeze.py reap FILE
      SIGKILLs every process recorded in FILE that is still the same process
      (same start time). Used by bench.sh's exit trap, after thawing.
"""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
READY_TIMEOUT = 10.0     # s: a window must be open within this
SAFETY_THAW = 10.0       # s: thaw ourselves if the probe write blocks longer
EXIT_TIMEOUT = 10.0      # s: a signalled runner must exit within this
RUN_TIMEOUT = 120.0      # s: one freeze-all-thaw-all command, at most


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


def die(msg):
    print(f"freeze.py: {msg}", file=sys.stderr)
    sys.exit(2)


def on_signal(signum, _frame):
    # Turn TERM/HUP into an exception so every `finally` (thaws, kills) runs.
    raise SystemExit(128 + signum)


def parse(args, spec):
    """--opt value ... -- rest  ->  (dict, rest); spec: {opt: type}"""
    opts = {}
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt not in spec:
            die(f"unknown option {opt}")
        if not args:
            die(f"{opt} needs a value")
        opts[opt.lstrip("-").replace("-", "_")] = spec[opt](args.pop(0))
    if not args:
        die("missing `--` before the mounts")
    return opts, args[1:]


def ms(t0, t1):
    return (t1 - t0) * 1000.0


# --- process bookkeeping ---------------------------------------------------------

def start_time(pid):
    """Field 22 of /proc/PID/stat, or None when the process is gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid):
    kids, out, todo = children_map(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class Pids:
    """Processes we started (or that they started), recorded for bench.sh."""

    def __init__(self, path):
        self.path = path
        self.known = {}

    def add(self, pid):
        st = start_time(pid)
        if st is None or pid in self.known:
            return
        self.known[pid] = st
        with open(self.path, "a") as f:
            f.write(f"{pid} {st}\n")

    def kill_all(self):
        for pid, st in self.known.items():
            if start_time(pid) == st:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.known.clear()


def reap(args):
    if len(args) != 1:
        die("reap FILE")
    try:
        with open(args[0]) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return
    for ln in lines:
        parts = ln.split()
        if len(parts) == 2 and start_time(int(parts[0])) == parts[1]:
            try:
                os.kill(int(parts[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- freeze helpers ----------------------------------------------------------------

def dirty(mounts, tag):
    """A small new file on every mount, not synced: the next freeze flushes it."""
    for m in mounts:
        path = os.path.join(m, "dirty")
        with open(path, "wb") as f:
            f.write(tag.encode() * 64 + os.urandom(4096))


def check_run(argv, proc, t0, t1):
    if proc.returncode != 0:
        die(f"{' '.join(argv)}: exit {proc.returncode}\n--- stdout\n"
            f"{proc.stdout}--- stderr\n{proc.stderr}")
    return ms(t0, t1)


def window(args):
    o, mounts = parse(args, {"--runs": int, "--warmup": int, "--quiesce": str,
                             "--run-dir": str, "--raw": str,
                             "--shell-loop": str, "--settle-ms": float})
    runs, warmup = o.get("runs", 0), o.get("warmup", 1)
    settle = o.get("settle_ms", 100.0) / 1000.0
    if runs < 1 or not mounts or not all(
            k in o for k in ("quiesce", "run_dir", "raw", "shell_loop")):
        die("window --runs N --quiesce Q --run-dir D --raw R --shell-loop S "
            "-- MOUNT...")
    qargv = [o["quiesce"], *isolated(o["run_dir"]),
             "freeze", "--json"]
    for m in mounts:
        qargv += ["--mount", m]
    qargv += ["--", "true"]
    argvs = {"q": qargv,
             "raw": [sys.executable, o["raw"]] + mounts,
             "sh": [o["shell_loop"]] + mounts}

    def run(k):
        """(the method's own measure of its window, its wall time) in ms"""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(argvs[k], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True,
                               timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            die(f"{' '.join(argvs[k])}: still running after {RUN_TIMEOUT:.0f} s")
        t1 = time.perf_counter()
        wall = check_run(argvs[k], p, t0, t1)
        if k == "q":
            return json.loads(p.stdout)["phases"]["freeze"]["windowMs"], wall
        return float(p.stdout.split()[-1]), wall

    samples = {k: [] for k in ("q", "raw", "sh", "qwall", "rawwall", "shwall")}
    methods = ["q", "raw", "sh"]
    tty = sys.stderr.isatty()
    try:
        for i in range(warmup + runs):
            got = {}
            for k in methods:
                dirty(mounts, f"{i}{k}")
                time.sleep(settle)
                got[k], got[k + "wall"] = run(k)
            methods = methods[1:] + methods[:1]
            if i >= warmup:
                for k, v in got.items():
                    samples[k].append(v)
            if tty:
                print(f"  run {i + 1 - warmup}/{runs}  " if i >= warmup
                      else f"  warm-up {i + 1}/{warmup}",
                      end="\r", file=sys.stderr, flush=True)
    finally:
        for m in mounts:
            try:
                os.unlink(os.path.join(m, "dirty"))
            except OSError:
                pass
    print(f"  {runs} rounds (+{warmup} warm-up) of 3 methods on "
          f"{len(mounts)} mount(s)", file=sys.stderr)
    for k in ("q", "raw", "sh", "qwall", "rawwall", "shwall"):
        print(" ".join(f"{x:.4f}" for x in samples[k]))


# --- thaw latency -------------------------------------------------------------------

def is_frozen(fd):
    """True if FIFREEZE says EBUSY (frozen by someone). Should it succeed,
    we froze it ourselves: thaw at once and say False."""
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return True
        raise
    fcntl.ioctl(fd, FITHAW, 0)
    return False


def read_state(run_dir):
    try:
        with open(os.path.join(run_dir, "state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_frozen(proc, fd, pids, run_dir, command):
    """Waits until the window is really open; returns the runner's pid.

    quiesce (run_dir set): state.json names the runner, and the snapshot
    command (`command`, a descendant of the runner) runs only once every
    mount is frozen -- probing with FIFREEZE any earlier could freeze the
    mount before quiesce does and make its freeze fail (EBUSY). The shell
    runner prints a line once `fsfreeze -f` returned. Then FIFREEZE must
    answer EBUSY.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    if run_dir is None:
        if proc.stdout.readline().strip() != "frozen":
            die("shell runner: fsfreeze -f failed")
        runner = proc.pid
    else:
        while True:
            if proc.poll() is not None:
                die(f"quiesce exited {proc.returncode} before its window opened")
            if time.monotonic() > deadline:
                die("quiesce's window did not open within "
                    f"{READY_TIMEOUT:.0f} s")
            st = read_state(run_dir)
            if st and st.get("runnerPid"):
                runner = st["runnerPid"]
                if st.get("watchdogPid"):
                    pids.add(st["watchdogPid"])
                kids = descendants(runner)
                for k in kids:
                    pids.add(k)
                if any(comm(k) == command for k in kids):
                    break
            time.sleep(0.002)
        if runner != proc.pid:
            die(f"state.json runnerPid {runner} is not the started "
                f"process {proc.pid}")
    for k in descendants(proc.pid):
        pids.add(k)
    if not is_frozen(fd):
        die("the window is open but the mount is not frozen")
    return runner


def probe_once(how, sig, o, mount, fd, pids, n):
    """One window, one signal, one probe write; returns ms."""
    if how == "quiesce":
        run_dir = os.path.join(o["scratch"], f"thaw-run-{os.getpid()}-{n}")
        os.mkdir(run_dir, 0o700)
        argv = [o["quiesce"], *isolated(run_dir),
                "freeze", "--json",
                "--max-freeze", "30", "--mount", mount, "--", "sleep", "60"]
    else:
        run_dir = None
        argv = [o["shell_runner"], mount]
        sig = signal.SIGTERM
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if run_dir is None
                            else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    pids.add(proc.pid)
    safety, thawed_by_us = None, []

    def safety_thaw():
        try:
            fcntl.ioctl(fd, FITHAW, 0)
            thawed_by_us.append(True)
        except OSError:
            pass
    try:
        runner = wait_frozen(proc, fd, pids, run_dir, "sleep")
        safety = threading.Timer(SAFETY_THAW, safety_thaw)
        safety.daemon = True
        safety.start()
        probe = os.path.join(mount, f"probe-{n}")

        t0 = time.perf_counter()
        os.kill(runner, sig)
        pfd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(pfd, b"probe\n")
        os.close(pfd)
        t1 = time.perf_counter()

        safety.cancel()
        safety.join()
        if thawed_by_us:
            die(f"{how}: nothing thawed {mount} within {SAFETY_THAW:.0f} s "
                "of the signal (the safety timer did)")
        os.unlink(probe)
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            die(f"{how}: runner still alive {EXIT_TIMEOUT:.0f} s after the signal")
        want = -signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM
        if rc != want:
            die(f"{how}: runner exited {rc}, expected {want}")
        return ms(t0, t1)
    finally:
        if safety is not None:
            safety.cancel()
        # On an error path the runner may still hold the window: ask it to
        # thaw and go. Then give what outlived it (the watchdog after
        # SIGKILL) a moment to finish on its own, thaw ourselves should
        # anything still hold the mount frozen, and kill what remains (the
        # snapshot command, the shell's sleep).
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        end = time.monotonic() + 2.0
        while time.monotonic() < end and any(
                start_time(p) == st and comm(p) not in ("sleep", "")
                for p, st in pids.known.items()):
            time.sleep(0.005)
        safety_thaw()
        pids.kill_all()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def thaw(args):
    o, mounts = parse(args, {"--runs": int, "--warmup": int, "--signal": str,
                             "--quiesce": str, "--scratch": str,
                             "--shell-runner": str, "--pids": str})
    runs, warmup = o.get("runs", 0), o.get("warmup", 1)
    names = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
    if runs < 1 or len(mounts) != 1 or o.get("signal") not in names \
            or not all(k in o for k in ("quiesce", "scratch", "shell_runner", "pids")):
        die("thaw --runs N --signal TERM|KILL --quiesce Q --scratch DIR "
            "--shell-runner S --pids FILE -- MOUNT")
    sig, mount = names[o["signal"]], mounts[0]
    pids = Pids(o["pids"])
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    samples = {"quiesce": [], "shell": []}
    order = ["quiesce", "shell"]
    tty = sys.stderr.isatty()
    try:
        for i in range(warmup + runs):
            for how in order:
                v = probe_once(how, sig, o, mount, fd, pids, i)
                if i >= warmup:
                    samples[how].append(v)
            order.reverse()
            if tty:
                print(f"  run {i + 1 - warmup}/{runs}  " if i >= warmup
                      else f"  warm-up {i + 1}/{warmup}",
                      end="\r", file=sys.stderr, flush=True)
    finally:
        try:
            fcntl.ioctl(fd, FITHAW, 0)
        except OSError:
            pass
        pids.kill_all()
        os.close(fd)
    print(f"  {runs} windows (+{warmup} warm-up) each of quiesce "
          f"(SIG{o['signal']}) and the shell (SIGTERM)", file=sys.stderr)
    for how in ("quiesce", "shell"):
        print(" ".join(f"{x:.4f}" for x in samples[how]))


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if len(sys.argv) < 2:
        die("usage: freeze.py (window | thaw | reap) ...")
    cmd, args = sys.argv[1], sys.argv[2:]
    {"window": window, "thaw": thaw, "reap": reap}.get(
        cmd, lambda _: die(f"unknown subcommand {cmd}"))(args)


if __name__ == "__main__":
    main()
