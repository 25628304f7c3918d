#!/usr/bin/env python3
"""Fault soak driver for scripts/soak.sh (issue 7, "Fault soak").

Runs `quiesce snapshot` N times on scratch ext4 + xfs + btrfs mounts, each run
with one fault injected at a random moment, and checks after every run:

  (a) every mount is writable: a child process writes and syncs a probe file
      within a few seconds, else the mount counts as FROZEN_AFTER (and is
      thawed with `fsfreeze -u` so the soak can go on);
  (b) no process of the run survives: everything the run starts carries the
      run's marker in its argv (the runner and its watchdog through the
      snapshot command's arguments, scripts through their parameters, their
      `sleep`s through `exec -a MARKER-...`); survivors count as LEAKED;
  (c) the exit status (and the status JSON) is the one the contract gives for
      the fault; anything else counts as WRONG_STATUS.

Ends with the line `runs=N frozen_after=N leaked=N wrong_status=N
skipped_post=N double_post=N`; exits 1
if any of those three is non-zero. Only ever freezes the mounts it is given.
"""

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

SIGNAL_KINDS = {
    "sigterm": signal.SIGTERM,
    "sigint": signal.SIGINT,
    "sighup": signal.SIGHUP,
    "sigkill": signal.SIGKILL,
}
KINDS = [
    "sigterm",
    "sigint",
    "sighup",
    "sigkill",
    "wdkill",  # SIGKILL to the watchdog: the runner thaws itself
    "bothkill",  # watchdog then runner: `quiesce thaw` must recover
    "hung",  # snapshot command never ends: --max-freeze thaws (122)
    "pretimeout",  # pre-script never ends: Pre-ScriptTimeout (308)
    "late",  # a FIFREEZE held by fanotify completes after its deadline (122)
    "ebusysig",  # another tool froze a mount (EBUSY), then a signal
    "midstage",  # TERM/KILL while the calls of the stage are in flight
    "prepost",  # SIGKILL between the pre-script and the post-script
    "stop",  # SIGSTOP of the runner held past the deadline (issue 20)
    "stoplate",  # SIGSTOP while its FIFREEZE is blocked in the kernel
    "hostile",  # a pre-script holder attacks every guard by every route
    "fullstate",  # the pre-script fills the state filesystem's inodes
    "postkill",  # SIGKILL right after the post-script ran, before its record went
    "bridge",  # a separate pre, then post/recover/guard racing for its post
    "none",  # control
]
BRIDGE_RACES = ["twoposts", "latepost", "recoverpost", "killedpost"]
STOP_HOLD = 3.6  # --max-freeze 2 + the watchdog's 1 s margin + its policing
HOLDER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "helpers", "hostile_holder.py"
)
FANOTIFY_HOLD = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "helpers", "fanotify_hold.py"
)
EBUSY_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL]
MIDSTAGE_SIGNALS = [signal.SIGTERM, signal.SIGKILL]
MIDSTAGE_WITHIN = 0.06  # the stage's concurrent cold FIFREEZEs take ~30 ms

SNAP_SECONDS = "0.15"  # a normal snapshot command
HUNG_SECONDS = "30"  # a hung one (the marker keeps it findable)
PROBE_WITHIN = 3.0  # seconds for a probe write to complete
RUN_TIMEOUT = 30.0  # a runner still alive after this is a failure
SETTLE_AFTER_KILL = 1.5  # watchdog thaw + its kill of the command group
POST_WITHIN = 15.0  # seconds for a pending post-script to run after a kill
LATE_SIGNAL = 0.10  # a signal this close to a completed run may miss it


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes


def proc_list():
    """[(pid, ppid, state, cmdline)] of every process."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat", "r") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[-1].split()
        out.append((pid, int(rest[1]), rest[0], cmd.strip()))
    return out


def marked(marker):
    """Live (non-zombie) processes whose argv contains `marker`."""
    me = os.getpid()
    return [
        p for p in proc_list() if marker in p[3] and p[2] != "Z" and p[0] != me
    ]


def wait_marked(marker, timeout, stop=None):
    """Waits (bounded) for a process carrying `marker`; True if one appeared."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if stop is not None and stop():
            return False
        if marked(marker):
            return True
        time.sleep(0.002)
    return False


# ---------------------------------------------------------------- mounts


def probe(mnt, within=PROBE_WITHIN):
    """Writes and syncs a file on `mnt` from a child; (ok, child)."""
    p = os.path.join(mnt, "probe")
    child = subprocess.Popen(
        ["sh", "-c", f"echo x > '{p}' && sync -f '{p}'"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rc = child.wait(timeout=within)
        return rc == 0, None
    except subprocess.TimeoutExpired:
        return False, child


def fsfreeze_unfreeze(mnt):
    return subprocess.run(
        ["fsfreeze", "-u", mnt], capture_output=True, text=True
    )


# ---------------------------------------------------------------- one run


class Run:
    def __init__(self, n, kind, marker):
        self.n = n
        self.kind = kind
        self.marker = marker
        self.trigger = None
        self.fault_sent = None  # seconds after start, or None (no-op)
        self.fault_note = ""
        self.rc = None
        self.elapsed = None
        self.exit_after_fault = None
        self.stdout = b""
        self.stderr = b""
        self.status = None
        self.watchdog_killed = False
        self.hung_cmd = False
        self.problems = []
        self.foreign = None  # a mount frozen by "another tool" (ebusysig)
        self.holder = None  # the fanotify listener holding a writer (late)
        self.writer = None
        self.signal = None

    def json(self):
        if self.status is None and self.stdout.strip():
            try:
                self.status = json.loads(self.stdout)
            except ValueError:
                self.status = {}
        return self.status or {}

    def error_codes(self):
        return [e.get("code") for e in self.json().get("errors", [])]

    def describe(self):
        errs = [
            f"{e.get('name')}({e.get('code')})"
            for e in self.json().get("errors", [])
        ]
        return (
            f"run {self.n} kind={self.kind} trigger={self.trigger} "
            f"fault_at={self.fault_sent if self.fault_sent is None else round(self.fault_sent, 3)} "
            f"{self.fault_note} rc={self.rc} elapsed={self.elapsed and round(self.elapsed, 3)} "
            f"result={self.json().get('result')} errors={errs}"
        )


class Soak:
    def __init__(self, args):
        self.a = args
        self.mounts = args.mount
        self.rng = random.Random(args.seed)
        self.tag = f"qsoak{os.getpid()}x"
        self.counts = collections.Counter()
        self.by_kind = collections.Counter()
        self.notes = collections.Counter()
        self.frozen_after = 0
        self.leaked = 0
        self.skipped_post = 0
        self.double_post = 0
        self.wrong = 0
        self.cgroups_left = 0
        self.failures = []
        self.runner_pids = []

    # -- configuration --------------------------------------------------

    def write_config(self, marker, hang, pre=None):
        cfg = {
            "pluginName": "ScriptRunner",
            "preScriptLocation": pre or (self.a.pre_hang if hang else self.a.pre),
            "postScriptLocation": self.a.post,
            # The scripts name their own processes "<marker>-s-<phase>".
            "preScriptParams": [f"{marker}-s"],
            "postScriptParams": [f"{marker}-s"],
            "preScriptNoOfRetries": 0,
            "postScriptNoOfRetries": 0,
            "timeoutInSeconds": 1 if hang else 5,
            "continueBackupOnFailure": True,
            "fsFreezeEnabled": True,
        }
        path = self.a.config_hang if hang else self.a.config
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        return path

    def base_args(self, config):
        return [
            self.a.bin,
            "--config",
            config,
            "--host-config",
            "/nonexistent",
            "--run-dir",
            self.a.run_dir,
            "--state-dir",
            self.a.state_dir,
            "--syslog-socket",
            "/nonexistent",
        ]

    # -- fault injection ------------------------------------------------

    def watchdog_pid(self, runner):
        """The watchdog recorded in state.json, if it is the runner's child."""
        try:
            with open(os.path.join(self.a.run_dir, "state.json")) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return None
        wd = st.get("watchdogPid")
        if not wd or st.get("runnerPid") != runner.pid:
            return None
        try:
            with open(f"/proc/{wd}/stat") as f:
                rest = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            return None
        # Forked by the runner: never hit a recycled pid.
        if int(rest[1]) != runner.pid or rest[0] == "Z":
            return None
        return wd

    def hold_writer(self, r):
        """late: a writer of the first mount held inside open(O_TRUNC) by an
        unanswered fanotify permission event, so its FIFREEZE blocks."""
        mnt = self.mounts[0]
        victim = os.path.join(mnt, "held")
        with open(victim, "w") as f:
            f.write("x")
        ready = os.path.join(os.path.dirname(self.a.run_dir), "fanotify-ready")
        if os.path.exists(ready):
            os.unlink(ready)
        r.holder = subprocess.Popen(["python3", FANOTIFY_HOLD, mnt, ready])
        if not self.wait_file(ready, "marked"):
            r.problems.append("fanotify listener did not start")
            return
        r.writer = subprocess.Popen(["sh", "-c", f"echo y > '{victim}'"])
        if not self.wait_file(ready, "held"):
            r.problems.append("fanotify listener never held the writer")

    @staticmethod
    def wait_file(path, word, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(path) as f:
                    if word in f.read():
                        return True
            except OSError:
                pass
            time.sleep(0.01)
        return False

    def release_writer(self, r):
        if r.holder is not None and r.holder.poll() is None:
            r.holder.send_signal(signal.SIGTERM)
            r.holder.wait()
        if r.writer is not None:
            try:
                r.writer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                r.problems.append("held writer never finished")

    @staticmethod
    def send(r, p, t0, sig):
        """Sends `sig` to the runner `p` unless its run is already over."""
        if p.poll() is not None:
            r.fault_note = "(run already over: no-op)"
            return
        os.kill(p.pid, sig)
        r.fault_sent = time.monotonic() - t0

    def inject(self, r, p, t0):
        """Injects r.kind's fault into the runner `p` started at `t0`."""
        kind = r.kind
        if kind == "late":
            # Past the 2 s deadline of the call (and the watchdog's): the
            # late FIFREEZE must be thawed by the runner or its watchdog.
            delay = self.rng.uniform(2.5, 4.5)
            r.trigger = f"release {delay * 1000:.0f}ms"
            time.sleep(delay)
            self.release_writer(r)
            r.fault_sent = time.monotonic() - t0
            return
        if kind == "ebusysig":
            r.signal = self.rng.choice(EBUSY_SIGNALS)
            delay = self.rng.uniform(0.0, 0.3)
            r.trigger = f"{signal.Signals(r.signal).name} at {delay * 1000:.0f}ms"
            time.sleep(delay)
            self.send(r, p, t0, r.signal)
            return
        if kind == "midstage":
            # The recovery record is written just before the first FIFREEZE:
            # a fault 0-60 ms later lands while the calls of the stage (every
            # scratch mount: they are independent) are in flight or just
            # returned, before or after each is recorded.
            r.signal = self.rng.choice(MIDSTAGE_SIGNALS)
            end = time.monotonic() + 3.0
            while time.monotonic() < end and p.poll() is None and not self.watchdog_pid(p):
                time.sleep(0.0005)
            delay = self.rng.uniform(0.0, MIDSTAGE_WITHIN)
            r.trigger = f"{signal.Signals(r.signal).name} {delay * 1000:.0f}ms into the window"
            time.sleep(delay)
            self.send(r, p, t0, r.signal)
            return
        if kind == "prepost":
            # The pre-script has run, the post-script not yet: the post guard
            # must run the pending post-script (SPEC §6.6).
            end = time.monotonic() + 3.0
            while (
                time.monotonic() < end
                and p.poll() is None
                and self.script_log_count("pre", r.marker) == 0
            ):
                time.sleep(0.001)
            delay = self.rng.uniform(0.0, 0.1)
            r.trigger = f"SIGKILL {delay * 1000:.0f}ms after the pre-script"
            time.sleep(delay)
            if p.poll() is not None or self.script_log_count("post", r.marker):
                r.fault_note = "(post-script already ran: no-op)"
                return
            r.signal = signal.SIGKILL
            os.kill(p.pid, signal.SIGKILL)
            r.fault_sent = time.monotonic() - t0
            return
        if kind == "postkill":
            # Kill-after-reap: its completion is recorded at the reap, so
            # the post-script must not run a second time as runner-died.
            r.trigger = self.after_post_reaped(p, r.marker)
            self.send(r, p, t0, signal.SIGKILL)
            r.signal = signal.SIGKILL
            return
        if kind in ("stop", "stoplate"):
            return self.stop_and_probe(r, p, t0)
        if kind in ("hung", "pretimeout", "none", "hostile", "fullstate"):
            r.trigger = "none"
            return
        if kind in SIGNAL_KINDS:
            if self.random_moment(r, p):
                time.sleep(self.rng.uniform(0.0, 0.02))
            self.send(r, p, t0, SIGNAL_KINDS[kind])
            return
        # wdkill / bothkill: only while a window (and so a watchdog) exists.
        r.trigger = "window"
        end = time.monotonic() + 3.0
        wd = None
        while time.monotonic() < end and p.poll() is None:
            wd = self.watchdog_pid(p)
            if wd:
                break
            time.sleep(0.001)
        if not wd or p.poll() is not None:
            r.fault_note = "(no window seen: no-op)"
            return
        if kind == "wdkill":
            time.sleep(self.rng.uniform(0.0, 0.05))
        os.kill(wd, signal.SIGKILL)
        r.watchdog_killed = True
        r.fault_sent = time.monotonic() - t0
        r.fault_note = f"(watchdog {wd})"
        if kind == "bothkill":
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            else:
                r.fault_note += " (runner already over)"

    @staticmethod
    def task_states(pid, comm=None):
        """The one-letter state of each thread of `pid` (named `comm`)."""
        out = []
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    stat = f.read()
                name = stat[stat.find("(") + 1:stat.rfind(")")]
                if comm is None or name == comm:
                    out.append(stat.rsplit(")", 1)[-1].split()[0])
        except OSError:
            pass
        return out

    def random_moment(self, r, p):
        """Waits for a random moment of run `r` (runner `p`): 0-300 ms, or
        until the pre-script, the snapshot command or the post-script
        appears. Sets r.trigger; True when it waited for a marker."""
        if self.rng.random() < 0.5:
            delay = self.rng.uniform(0.0, 0.3)
            r.trigger = f"delay {delay * 1000:.0f}ms"
            time.sleep(delay)
            return False
        which = self.rng.choice(["s-pre", "c-run", "s-post"])
        r.trigger = f"marker {which}"
        if not wait_marked(f"{r.marker}-{which}", 2.0, stop=lambda: p.poll() is not None):
            r.trigger += " (never seen)"
        return True

    def after_post_reaped(self, p, marker):
        """Waits (bounded) until runner `p` has reaped the post-script of
        run `marker` (its pid gone from /proc: a killed runner before that
        is a runner dying *during* its post-script, which runs it again by
        design), then 0-5 ms more. Returns the trigger's description."""
        end = time.monotonic() + 5.0
        script = None
        while script is None and time.monotonic() < end and p.poll() is None:
            script = next((q[0] for q in marked(f"{marker}-s") if "post.sh" in q[3]), None)
            time.sleep(0.0005)
        while script and os.path.exists(f"/proc/{script}") and time.monotonic() < end:
            time.sleep(0.0002)
        delay = self.rng.uniform(0.0, 0.005)
        time.sleep(delay)
        what = f"SIGKILL {delay * 1000:.1f}ms after the post-script's reap"
        return what + (" (post-script never seen)" if script is None else "")

    def stop_and_probe(self, r, p, t0):
        """stop / stoplate (issue 20): SIGSTOP the runner — at a random
        moment, or while its FIFREEZE is blocked in the kernel (stoplate:
        the fanotify listener holds a writer; released once it is stopped)
        — hold it past the deadline, and, while it is still stopped, check
        that every mount takes a write: the watchdog thaws at the deadline
        whatever state the runner is in. Then SIGCONT."""
        if r.kind == "stoplate":
            end = time.monotonic() + 3.0
            # Blocked in FIFREEZE: the window's record exists (written
            # right before the first FIFREEZE) and a freeze thread is in D
            # twice in a row (the crew threads exist from the run's start
            # and pass through D on their own now and then).
            seen = 0
            while time.monotonic() < end and p.poll() is None and seen < 2:
                blocked = "D" in self.task_states(p.pid, "quiesce-freeze")
                seen = seen + 1 if blocked and self.watchdog_pid(p) else 0
                time.sleep(0.002)
            r.trigger = "FIFREEZE blocked" if seen >= 2 else "FIFREEZE never seen blocked"
        else:
            self.random_moment(r, p)
        if p.poll() is not None:
            r.fault_note = "(run already over: no-op)"
            return
        os.kill(p.pid, signal.SIGSTOP)
        r.fault_sent = time.monotonic() - t0
        r.signal = signal.SIGSTOP
        try:
            if r.kind == "stoplate":
                self.release_writer(r)
            time.sleep(STOP_HOLD)
            still_stopped = all(s in ("T", "t") for s in self.task_states(p.pid))
            blocked = [m for m in self.mounts if not probe(m, 1.0)[0]]
            if blocked and still_stopped:
                self.frozen_after += len(blocked)
                r.problems.append(f"FROZEN_WHILE_STOPPED {blocked}")
                log(f"FROZEN_WHILE_STOPPED {blocked} {STOP_HOLD}s after SIGSTOP: {r.describe()}")
                for m in blocked:
                    fsfreeze_unfreeze(m)
            elif not still_stopped:
                r.fault_note += " (runner not stopped at the probe)"
        finally:
            os.kill(p.pid, signal.SIGCONT)

    def truthful(self, r):
        """A status that claims `application` only for a window that held:
        no mount thawed by the watchdog, none frozen past --max-freeze."""
        v = r.json()
        mounts = v.get("phases", {}).get("freeze", {}).get("mounts", [])
        if v.get("consistency") in ("application", "filesystem"):
            return not any(
                m.get("thawedByWatchdog") or m.get("frozenMs", 0) > 2000 + 100 for m in mounts
            )
        return True

    def check_hostile(self, r):
        """hostile: every route of the holder must have been refused."""
        path = os.path.join(self.a.script_log, f"holder-{r.marker}.json")
        try:
            with open(path) as f:
                got = json.load(f)
        except (OSError, ValueError):
            r.problems.append("the hostile holder left no result")
            return False
        reached = [k for k, v in got.items() if v == 0]
        if reached:
            r.problems.append(f"the holder reached a guard: {reached}")
            return False
        return True

    def after_fullstate(self, r):
        """fullstate: empty the state filesystem again, then `quiesce
        recover`, which must not run the post-script a second time."""
        fill = os.path.join(self.a.statefs, "fill")
        for n in os.listdir(fill) if os.path.isdir(fill) else []:
            os.unlink(os.path.join(fill, n))
        subprocess.run(
            self.base_args(self.a.config) + ["recover", "--json"],
            capture_output=True,
            timeout=60,
        )

    # -- one run --------------------------------------------------------

    def one(self, n, kind):
        marker = f"{self.tag}{n:05d}"
        r = Run(n, kind, marker)
        if kind == "bridge":
            return self.one_bridge(r)
        hang_pre = kind == "pretimeout"
        r.hung_cmd = kind == "hung" or (kind == "wdkill" and self.rng.random() < 0.3)
        pre = {"hostile": self.a.pre_hostile, "fullstate": self.a.pre_fill}.get(kind)
        config = self.write_config(marker, hang_pre, pre)
        if kind in ("late", "stoplate"):
            self.hold_writer(r)
        if kind == "ebusysig":
            r.foreign = self.rng.choice(self.mounts)
            subprocess.run(["fsfreeze", "-f", r.foreign], check=True)
        cmd = self.base_args(config) + ["snapshot", "--json"]
        for m in self.mounts:
            cmd += ["--mount", m]
        cmd += [
            "--max-freeze",
            "2",
            "--",
            "/bin/bash",
            "-c",
            # The runner's argv (and so its watchdog's) carries "<marker>-c";
            # only the command itself carries "<marker>-c-run".
            'exec -a "$0-run" sleep "$1"',
            f"{marker}-c",
            HUNG_SECONDS if r.hung_cmd else SNAP_SECONDS,
        ]
        t0 = time.monotonic()
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/"
        )
        self.runner_pids.append(p.pid)
        outs = {}

        def drain(name, f):
            outs[name] = f.read()

        readers = [
            threading.Thread(target=drain, args=("out", p.stdout), daemon=True),
            threading.Thread(target=drain, args=("err", p.stderr), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            try:
                self.inject(r, p, t0)
            except ProcessLookupError:
                r.fault_note += " (target gone)"
            try:
                p.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                r.problems.append(f"runner still alive after {RUN_TIMEOUT}s")
                self.thaw_all_mounts(r, quiet=True)
                p.kill()
                p.wait()
        except BaseException:
            # The soak itself is being stopped: let the runner thaw and clean
            # up (SIGTERM), never leave it running behind us.
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.thaw_all_mounts(r, quiet=True)
                    p.kill()
                    p.wait()
            raise
        finally:
            self.release_writer(r)
        t_exit = time.monotonic()
        for t in readers:
            t.join(timeout=5)
        r.rc = p.returncode
        r.elapsed = t_exit - t0
        if r.fault_sent is not None:
            r.exit_after_fault = r.elapsed - r.fault_sent
        r.stdout = outs.get("out", b"")
        r.stderr = outs.get("err", b"")
        if kind == "fullstate":
            self.after_fullstate(r)
        self.after(r, p.pid)
        return r

    def one_bridge(self, r):
        """Bridge mode (issue 26 item 3): a separate `pre` whose post-script
        is due in 1-2 s, then a race for it -- two `post`s at once; a `post`
        at about the due time, racing the guard; `recover` and `post` at
        once past it; a `post` SIGKILLed right after its post-script ran,
        then another. Every call must exit 0 (the killed one excepted), and
        the post-script must run exactly once (check_post)."""
        config = self.write_config(r.marker, False)
        base = self.base_args(config)
        due = self.rng.choice([1, 2])
        race = self.rng.choice(BRIDGE_RACES)
        r.trigger = f"{race} post-due {due}s"
        t0 = time.monotonic()
        pre = subprocess.run(
            base + ["--post-due", str(due), "pre", "--json"],
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
        r.stdout, r.stderr = pre.stdout, pre.stderr
        if pre.returncode != 0:
            r.problems.append(f"bridge: pre exited {pre.returncode}")
        calls = []  # (what, Popen, expected codes)

        def start(what, args, codes=(0,)):
            p = subprocess.Popen(
                base + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/"
            )
            self.runner_pids.append(p.pid)
            calls.append((what, p, codes))
            return p

        if race == "twoposts":
            start("post", ["post"])
            start("post", ["post"])
        elif race == "latepost":
            time.sleep(max(0.0, due + self.rng.uniform(-0.2, 0.5) - (time.monotonic() - t0)))
            start("post", ["post"])
        elif race == "recoverpost":
            time.sleep(max(0.0, due + self.rng.uniform(0.0, 0.3) - (time.monotonic() - t0)))
            start("recover", ["recover"])
            start("post", ["post"])
        else:  # killedpost: SIGKILL right after it reaped the post-script
            p = start("post", ["post"], codes=(0, -signal.SIGKILL))
            r.trigger += ", " + self.after_post_reaped(p, r.marker)
            if p.poll() is None:
                p.kill()
                r.fault_sent = time.monotonic() - t0
            start("post", ["post"])
        for what, p, codes in calls:
            try:
                _, err = p.communicate(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                r.problems.append(f"bridge: {what} still alive after {RUN_TIMEOUT}s")
            if p.returncode not in codes:
                r.problems.append(f"bridge: {what} exited {p.returncode}")
                log(f"  {what} stderr: {err.decode('utf-8', 'replace')[-800:]}")
        r.rc = 0
        r.elapsed = time.monotonic() - t0
        # The guard runs the post-script at the due time if nothing did.
        end = time.monotonic() + due + POST_WITHIN
        while self.pending_records() and time.monotonic() < end:
            time.sleep(0.02)
        if self.pending_records():
            r.problems.append(f"bridge: records left {self.pending_records()}")
        self.after(r, calls[0][1].pid if calls else 0)
        return r

    def pending_records(self):
        try:
            return [n for n in os.listdir(self.a.state_dir) if n.startswith("pending-post-")]
        except OSError:
            return []

    # -- checks ---------------------------------------------------------

    def thaw_all_mounts(self, r, quiet=False):
        for m in self.mounts:
            fsfreeze_unfreeze(m)

    def check_foreign(self, r):
        """ebusysig: the other tool's freeze must have survived the run."""
        if r.foreign is None:
            return
        ok, child = probe(r.foreign, 0.3)
        if ok:
            self.wrong += 1
            self.notes["ebusysig: THAWED ANOTHER TOOL'S FREEZE"] += 1
            r.problems.append(f"THAWED_FOREIGN {r.foreign}")
            log(f"THAWED_FOREIGN {r.foreign}: {r.describe()}")
        fsfreeze_unfreeze(r.foreign)
        if child is not None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    def check_frozen(self, r):
        killed_runner = (
            r.kind in ("sigkill", "bothkill")
            or (r.kind in ("ebusysig", "midstage") and r.signal == signal.SIGKILL)
        ) and r.fault_sent is not None
        both = r.kind == "bothkill" and r.watchdog_killed and r.rc == -signal.SIGKILL
        if both:
            # Runner and watchdog dead: the contract is that `quiesce thaw`
            # (or the next run) recovers. Note whether it was still frozen.
            still = [m for m in self.mounts if not probe(m, 0.3)[0]]
            if still:
                self.notes["bothkill: frozen until quiesce thaw"] += 1
            # The blocked probes finish once thawed; run the recovery.
            th = subprocess.run(
                self.base_args(self.a.config) + ["thaw", "--json"],
                capture_output=True,
                timeout=30,
            )
            r.thaw_report = th.stdout.decode("utf-8", "replace")
            if th.returncode != 0:
                r.problems.append(
                    f"quiesce thaw exited {th.returncode}: {th.stderr.decode()[-400:]}"
                )
                self.wrong += 1
        blocked = []
        for m in self.mounts:
            ok, child = probe(m, PROBE_WITHIN + (SETTLE_AFTER_KILL if killed_runner else 0))
            if not ok:
                blocked.append((m, child))
        for m, child in blocked:
            self.frozen_after += 1
            r.problems.append(f"FROZEN_AFTER {m}")
            log(f"FROZEN_AFTER {m}: {r.describe()}")
            try:
                with open(os.path.join(self.a.run_dir, "state.json")) as f:
                    log(f"  state.json: {f.read()}")
            except OSError:
                log("  state.json: absent")
            if getattr(r, "thaw_report", None):
                try:
                    thawed = json.loads(r.thaw_report)["phases"]["freeze"]["thawed"]
                    log(f"  quiesce thaw said: {json.dumps(thawed)}")
                except (ValueError, KeyError, TypeError):
                    log(f"  quiesce thaw said: {r.thaw_report[-800:]}")
            log(f"  stderr tail: {r.stderr.decode('utf-8', 'replace')[-1500:]}")
            res = fsfreeze_unfreeze(m)
            log(f"  fsfreeze -u {m}: rc={res.returncode} {res.stderr.strip()}")
            if child is not None:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

    def check_leaks(self, r, runner_pid):
        settle = SETTLE_AFTER_KILL if r.rc == -signal.SIGKILL else 0.5
        end = time.monotonic() + settle
        left = marked(r.marker + "-")
        while left and time.monotonic() < end:
            time.sleep(0.02)
            left = marked(r.marker + "-")
        if left:
            self.leaked += len(left)
            r.problems.append(f"LEAKED {len(left)}")
            log(f"LEAKED: {r.describe()}")
            for pid, ppid, state, cmd in left:
                log(f"  pid {pid} ppid {ppid} state {state}: {cmd[:200]}")
            for pid, *_ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # cgroups the run's runner created and nobody removed (informational)
        for base in ("/sys/fs/cgroup/unified/quiesce", "/sys/fs/cgroup/quiesce",
                     "/sys/fs/cgroup/pids/quiesce"):
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for nm in names:
                if f"-{runner_pid}-" in nm:
                    self.cgroups_left += 1
                    if r.rc != -signal.SIGKILL:
                        self.notes[f"cgroup left after {r.kind} (rc {r.rc})"] += 1
                    try:
                        os.rmdir(os.path.join(base, nm))
                    except OSError:
                        pass

    def check_status(self, r):
        v = r.json()
        codes = r.error_codes()
        kind = r.kind
        late_ok = (
            r.rc == 0
            and v.get("result") == "success"
            and "post" in v.get("phases", {})
            and r.exit_after_fault is not None
            and r.exit_after_fault <= LATE_SIGNAL
        )
        ok = False
        if r.problems and any(p.startswith("runner still alive") for p in r.problems):
            ok = False
        elif kind in SIGNAL_KINDS and r.fault_sent is None:
            # The run ended before the fault: a control run.
            ok = r.rc == 0 and v.get("result") == "success"
            self.notes[f"{kind}: after the run (no-op)"] += 1
        elif kind in ("sigterm", "sigint", "sighup"):
            sig = SIGNAL_KINDS[kind]
            if r.rc == 128 + sig:
                ok = v.get("result") == "failure"
                if not ok:
                    r.problems.append("exit 128+N but result is not failure")
            elif r.rc == -sig and not r.stdout and r.fault_sent < 0.05:
                # Before the handlers were installed: nothing had started.
                ok = True
                self.notes[f"{kind}: died before handlers (at {r.fault_sent * 1000:.0f} ms)"] += 1
            elif late_ok:
                ok = True
                self.notes[f"{kind}: raced a normal exit (0)"] += 1
        elif kind == "sigkill":
            if r.rc == -signal.SIGKILL:
                ok = True
            elif late_ok:
                ok = True
                self.notes["sigkill: raced a normal exit (0)"] += 1
        elif kind == "bothkill":
            if not r.watchdog_killed:
                ok = r.rc == 0 and v.get("result") == "success"
                self.notes["bothkill: no window seen (no-op)"] += 1
            else:
                ok = r.rc == -signal.SIGKILL or late_ok
        elif kind == "wdkill":
            if r.hung_cmd:
                ok = r.rc == 2 and 122 in codes
            else:
                ok = r.rc == 0 and v.get("result") == "success"
            if not r.watchdog_killed:
                self.notes["wdkill: no window seen (no-op)"] += 1
            elif ok and not any("watchdog died" in w for w in v.get("warnings", [])):
                self.notes["wdkill: no 'watchdog died' warning"] += 1
        elif kind == "hung":
            ok = r.rc == 2 and 122 in codes
        elif kind == "late":
            # continueBackupOnFailure: crash-consistent snapshot, exit 1.
            ok = r.rc == 1 and 122 in codes
        elif kind == "ebusysig":
            if r.fault_sent is None:
                ok = r.rc == 1 and 121 in codes
                self.notes["ebusysig: after the run (no-op)"] += 1
            elif r.signal == signal.SIGKILL:
                ok = r.rc == -signal.SIGKILL or (r.rc == 1 and 121 in codes)
            else:
                ok = r.rc in (128 + r.signal, -r.signal) or (r.rc == 1 and 121 in codes)
        elif kind == "midstage":
            if r.fault_sent is None:
                ok = r.rc == 0 and v.get("result") == "success"
                self.notes["midstage: after the run (no-op)"] += 1
            elif r.signal == signal.SIGKILL:
                ok = r.rc == -signal.SIGKILL or late_ok
            else:
                ok = (r.rc == 128 + r.signal and v.get("result") == "failure") or late_ok
        elif kind == "prepost":
            if r.fault_sent is None:
                ok = r.rc == 0 and v.get("result") == "success"
                self.notes["prepost: post-script before the kill (no-op)"] += 1
            else:
                ok = r.rc == -signal.SIGKILL or late_ok
        elif kind == "postkill":
            ok = r.rc == -signal.SIGKILL or (r.rc == 0 and v.get("result") == "success")
            if r.fault_sent is None:
                self.notes["postkill: after the run (no-op)"] += 1
        elif kind == "bridge":
            ok = not any(p.startswith("bridge:") for p in r.problems)
        elif kind == "pretimeout":
            ok = r.rc == 1 and 308 in codes
        elif kind == "stop":
            # Stopped past the deadline inside the window: FsFreezeTimeout,
            # crash-consistent (exit 1), or no snapshot at all when the
            # snapshot command was still running and was killed at the
            # thaw (exit 2, as for a hung command); anywhere else the run
            # is unharmed.
            timed_out = (r.rc == 1 and 122 in codes and v.get("consistency") in ("crash", "none")) or (
                r.rc == 2 and 122 in codes and v.get("consistency") == "none"
            )
            clean = r.rc == 0 and v.get("result") == "success"
            ok = (timed_out or clean) and self.truthful(r)
            self.notes[f"stop: {'FsFreezeTimeout' if timed_out else 'unharmed'}"] += 1
        elif kind == "stoplate":
            ok = (
                (r.rc == 1 and 122 in codes)
                or (r.rc == 2 and 122 in codes and v.get("consistency") == "none")
            ) and self.truthful(r)
        elif kind == "hostile":
            ok = r.rc == 0 and v.get("result") == "success" and self.check_hostile(r)
        elif kind == "fullstate":
            ok = r.rc == 0 and v.get("result") == "success"
        elif kind == "none":
            ok = r.rc == 0 and v.get("result") == "success" and not codes
        if ok and not self.truthful(r):
            ok = False
            r.problems.append("the status claims a consistency the window did not hold")
        if not ok:
            self.wrong += 1
            r.problems.append("WRONG_STATUS")
            log(f"WRONG_STATUS: {r.describe()}")
            log(f"  stderr tail: {r.stderr.decode('utf-8', 'replace')[-1500:]}")

    def script_log_count(self, phase, marker):
        """How many times the sample `phase`-script of run `marker` ran."""
        try:
            with open(os.path.join(self.a.script_log, f"{phase}.log")) as f:
                return sum(1 for line in f if line.split()[:1] == [f"{marker}-s"])
        except FileNotFoundError:
            return 0

    def check_post(self, r):
        """SPEC §6.6: once its pre-script started, a run's post-script runs
        exactly once -- by the runner, or after a kill by the post guard's
        `quiesce recover` (waited for, bounded)."""
        if self.script_log_count("pre", r.marker) == 0:
            return
        end = time.monotonic() + POST_WITHIN
        while self.script_log_count("post", r.marker) == 0 and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.05)  # a second run of it would be under way by now
        n = self.script_log_count("post", r.marker)
        if n == 0:
            self.skipped_post += 1
            r.problems.append("SKIPPED_POST: the pre-script ran, the post-script never did")
            log(f"SKIPPED_POST: {r.describe()}")
        elif n > 1:
            self.double_post += 1
            r.problems.append(f"the post-script ran {n} times")
            log(f"DOUBLE_POST ({n}): {r.describe()}")

    def after(self, r, runner_pid):
        self.check_foreign(r)
        self.check_frozen(r)
        # Before the leak check: a recovered post-script is the runner's own.
        self.check_post(r)
        self.check_leaks(r, runner_pid)
        self.check_status(r)

    # -- the soak -------------------------------------------------------

    def run(self):
        start = time.monotonic()
        deadline = start + self.a.max_seconds
        order = []
        n = 0
        while n < self.a.runs:
            if time.monotonic() > deadline:
                log(f"time budget of {self.a.max_seconds}s reached after {n} runs")
                break
            if not order:
                order = list(KINDS)
                self.rng.shuffle(order)
            kind = order.pop()
            n += 1
            r = self.one(n, kind)
            self.by_kind[kind] += 1
            if self.a.verbose or r.problems:
                log(("  " if not r.problems else "! ") + r.describe())
            elif n % 25 == 0:
                log(f"  ... {n} runs ({time.monotonic() - start:.0f}s)")
        took = time.monotonic() - start
        log("")
        log(f"soak: {n} runs in {took:.1f}s on {', '.join(self.mounts)}")
        log("faults by kind: " + " ".join(f"{k}={self.by_kind[k]}" for k in KINDS))
        for k, v in sorted(self.notes.items()):
            log(f"  note: {k}: {v}")
        log(f"cgroups left by killed runners (removed by the soak): {self.cgroups_left}")
        log(
            f"runs={n} frozen_after={self.frozen_after} leaked={self.leaked} "
            f"wrong_status={self.wrong} skipped_post={self.skipped_post} "
            f"double_post={self.double_post}"
        )
        bad = self.frozen_after or self.leaked or self.wrong
        return 1 if (bad or self.skipped_post or self.double_post) else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--config-hang", required=True)
    ap.add_argument("--pre", required=True)
    ap.add_argument("--pre-hang", required=True)
    ap.add_argument("--post", required=True)
    ap.add_argument("--pre-hostile", required=True)
    ap.add_argument("--pre-fill", required=True)
    ap.add_argument("--statefs", required=True, help="the small filesystem of --state-dir")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--script-log", required=True, help="where pre.log and post.log are")
    ap.add_argument("--mount", action="append", required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=540)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    log(f"seed {args.seed} (SOAK_SEED to repeat)")

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    soak = Soak(args)
    try:
        sys.exit(soak.run())
    except KeyboardInterrupt as e:
        log(f"soak interrupted ({e}); the current run was stopped cleanly")
        sys.exit(130)


if __name__ == "__main__":
    main()
