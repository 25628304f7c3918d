#!/usr/bin/env python3
"""A hostile pre-script holder (tests/guards.rs, issue 20 item 2): left
running by a pre-script, it goes after quiesce's own processes by every
route SPEC.md section 8 names, and records what each route answered.

Usage: hostile_holder.py probe DIR    (waits for DIR/targets.json)
       hostile_holder.py destroy DIR  (inside a private pid namespace; waits
                                       for DIR/cmd-started: the window)
       hostile_holder.py attack RUNNER DIR MARKER
                                      (scripts/soak.sh: waits for a process
                                       carrying MARKER-c-run, the window)

probe: every route is tried in a form that changes nothing even where it is
allowed (signal 0, the current priority, limits and affinity set again,
cgroup and /proc files opened for writing and closed unwritten), so the
test fails on code without the guards instead of wrecking the run.
destroy: the real thing, for a private pid namespace and a cgroup the test
made: kill -STOP -1, kill -KILL -1, "1" into the parent cgroup's
cgroup.freeze and cgroup.kill.

Either way it then proves it can still manage its own application: it
starts a child and renices, signals and kills it.
Writes DIR/holder.json ({route: errno, 0 when allowed}) and DIR/holder-done.
"""
import ctypes
import json
import os
import platform
import signal
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NR = {
    "x86_64": dict(tkill=200, tgkill=234, rt_sigqueueinfo=129, ioprio_get=252,
                   ioprio_set=251, pidfd_open=434, pidfd_send_signal=424,
                   prlimit64=302, sched_setattr=314),
    "aarch64": dict(tkill=130, tgkill=131, rt_sigqueueinfo=138, ioprio_get=31,
                    ioprio_set=30, pidfd_open=434, pidfd_send_signal=424,
                    prlimit64=261, sched_setattr=274),
}[platform.machine()]

results = {}


def call(name, fn):
    """Runs fn; records 0, or the errno of an OSError / a -1 return."""
    ctypes.set_errno(0)
    try:
        r = fn()
        err = ctypes.get_errno() if isinstance(r, int) and r < 0 else 0
    except OSError as e:
        err = e.errno or -1
    results[name] = err


def sys_(name, *args):
    return libc.syscall(NR[name], *args)


def probe(t, kind, tgid):
    """Every route against pid (or thread) t of process tgid, harmless
    where allowed."""
    call(f"kill {kind}", lambda: os.kill(t, 0))
    call(f"tkill {kind}", lambda: sys_("tkill", t, 0))
    call(f"tgkill {kind}", lambda: sys_("tgkill", tgid, t, 0))
    info = (ctypes.c_int * 32)()
    info[0], info[2] = 0, -1  # si_signo 0, si_code SI_QUEUE
    call(f"rt_sigqueueinfo {kind}", lambda: sys_("rt_sigqueueinfo", t, 0, info))

    def signal_through(fd):
        # Signal 0 through a pidfd, which is then closed (errno kept).
        if fd < 0:
            return fd
        r = sys_("pidfd_send_signal", fd, 0, None, 0)
        e = ctypes.get_errno()
        os.close(fd)
        ctypes.set_errno(e)
        return r
    call(f"pidfd_send_signal {kind}", lambda: signal_through(sys_("pidfd_open", t, 0)))
    call(f"/proc pidfd signal {kind}",
         lambda: signal_through(os.open(f"/proc/{t}", os.O_RDONLY | os.O_DIRECTORY)))
    call(f"setpriority {kind}", lambda: os.setpriority(os.PRIO_PROCESS, t, os.getpriority(os.PRIO_PROCESS, t)))
    call(f"sched_setscheduler {kind}", lambda: os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0)))
    call(f"sched_setaffinity {kind}", lambda: os.sched_setaffinity(t, os.sched_getaffinity(0)))
    call(f"prlimit {kind}", lambda: __import__("resource").prlimit(t, __import__("resource").RLIMIT_CORE))

    def ioprio():
        cur = sys_("ioprio_get", 1, t)
        if cur < 0:
            cur = 0
        return sys_("ioprio_set", 1, t, cur)
    call(f"ioprio_set {kind}", ioprio)

    def setown():
        r, w = os.pipe()
        import fcntl
        try:
            fcntl.fcntl(r, fcntl.F_SETOWN, t)
        finally:
            os.close(r)
            os.close(w)
    call(f"F_SETOWN {kind}", setown)
    for f in ("oom_score_adj", "timerslack_ns"):
        call(f"/proc {f} {kind}", lambda f=f: os.close(os.open(f"/proc/{t}/{f}", os.O_WRONLY)))


def own_cgroup_dir():
    for line in open("/proc/self/cgroup"):
        if line.startswith("0::"):
            rel = line.strip()[3:]
            for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if os.path.exists(root + "/cgroup.controllers"):
                    return root + rel
    return None


def probe_cgroups(cgroups):
    for cg in cgroups:
        for f in ("cgroup.freeze", "cgroup.kill", "cgroup.procs"):
            call(f"open {f} of {cg}", lambda p=f"{cg}/{f}": os.close(os.open(p, os.O_WRONLY)))


def own_application():
    """A process of the holder's own: renice, signal and end it."""
    pid = os.fork()
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    call("own renice", lambda: os.setpriority(os.PRIO_PROCESS, pid, 5))
    call("own sighup", lambda: os.kill(pid, signal.SIGHUP))
    _, status = os.waitpid(pid, 0)
    results["own child ended by SIGHUP"] = 0 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP else 1


def guards_of(runner):
    """Every pid whose /proc entry is masked (an empty directory: what a
    script's namespace makes of a guard's), the runner's threads included.
    A process that is not a guard (the snapshot command) is left alone."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if not os.listdir(f"/proc/{name}"):
                out.add(int(name))
        except OSError:
            pass
    out.discard(runner)
    return sorted(out)


def attack(runner, d, marker):
    """The soak's hostile holder: for real, against the guards of a run on
    this machine (never -1, never a cgroup: those are the pid-namespace
    test's), once the snapshot command runs."""
    end = time.time() + 10
    while time.time() < end:
        if any(marker + "-c-run" in open(f"/proc/{n}/cmdline", "rb").read().decode("utf-8", "replace")
               for n in os.listdir("/proc") if n.isdigit() and os.path.exists(f"/proc/{n}/cmdline")):
            break
        time.sleep(0.01)
    for g in guards_of(runner):
        call(f"SIGKILL guard {g}", lambda g=g: os.kill(g, signal.SIGKILL))
        call(f"tgkill SIGKILL guard {g}", lambda g=g: sys_("tgkill", g, g, signal.SIGKILL))

        def pidfd_kill(g=g):
            fd = sys_("pidfd_open", g, 0)
            return fd if fd < 0 else sys_("pidfd_send_signal", fd, signal.SIGKILL, None, 0)
        call(f"pidfd SIGKILL guard {g}", pidfd_kill)
    call("SIGSTOP runner", lambda: os.kill(runner, signal.SIGSTOP))
    call("tkill SIGSTOP runner", lambda: sys_("tkill", runner, signal.SIGSTOP))
    call("renice runner", lambda: os.setpriority(os.PRIO_PROCESS, runner, 19))
    call("SCHED_IDLE runner", lambda: os.sched_setscheduler(runner, os.SCHED_IDLE, os.sched_param(0)))

    def oom():
        with open(f"/proc/{runner}/oom_score_adj", "w") as f:
            f.write("1000")
    call("oom_score_adj runner", oom)
    with open(os.path.join(d, f"holder-{marker}.json"), "w") as f:
        json.dump(results, f, sort_keys=True)


def main():
    if sys.argv[1] == "attack":
        return attack(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "probe":
        path = os.path.join(d, "targets.json")
        end = time.time() + 30
        while not os.path.exists(path) and time.time() < end:
            time.sleep(0.05)
        targets = json.load(open(path))
        for kind, pids in targets["pids"].items():
            for t in pids:
                tgid = targets["runner"] if kind == "runner thread" else t
                probe(t, f"{kind} {t}", tgid)
        for g in targets["groups"]:
            call(f"kill group -{g}", lambda g=g: os.kill(-g, 0))
        call("kill -1", lambda: os.kill(-1, 0))
        probe_cgroups(targets["cgroups"])
    else:
        go = os.path.join(d, "cmd-started")
        end = time.time() + 30
        while not os.path.exists(go) and time.time() < end:
            time.sleep(0.05)
        mine = own_cgroup_dir()
        parent = os.path.dirname(mine) if mine else None
        if parent:
            for f in ("cgroup.freeze", "cgroup.kill"):
                def write(p=f"{parent}/{f}"):
                    with open(p, "w") as fh:
                        fh.write("1")
                call(f"write 1 to the parent cgroup's {f}", write)
        call("kill -STOP -1", lambda: os.kill(-1, signal.SIGSTOP))
        call("kill -KILL -1", lambda: os.kill(-1, signal.SIGKILL))
    own_application()
    with open(os.path.join(d, "holder.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    open(os.path.join(d, "holder-done"), "w").close()


if __name__ == "__main__":
    main()
