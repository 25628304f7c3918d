#!/usr/bin/env python3
"""Group faults of scripts/soak.sh (SPEC.md §11): rounds of three
`quiesce snapshot --group` members against a real three-node etcd cluster
with TLS (scripts/bench/group.py's), each run with one fault at a random
moment, and after each run the soak's checks: every member's mount
writable again, no process of the run left, each exit status one the
contract allows for the fault, and every pre-script that ran followed by
exactly one post-script (by the runner, or by the post guard after a kill).

Faults: none, kill (SIGKILL to a member at 0-800 ms), term (SIGTERM to a
member at 0-800 ms), prefail (a member's pre-script exits 1), cmdfail (a
member's snapshot command exits 1), node (one etcd node killed at
0-800 ms, restarted after the run).

Prints `group: runs=N frozen_after=F leaked=L wrong_status=W
skipped_post=S double_post=D`; exit status 1 if any count is not 0.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import group as bench  # noqa: E402  (scripts/bench/group.py)

FAULTS = ["none", "kill", "term", "prefail", "cmdfail", "node"]


def member(scratch, name):
    d = os.path.join(scratch, "soak-group-" + name)
    os.makedirs(os.path.join(d, "run"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(d, "metrics"), mode=0o755, exist_ok=True)
    return d


def scripts(d, pre_exit):
    log = os.path.join(d, "ran")
    for s, code in (("pre", pre_exit), ("post", 0)):
        p = os.path.join(d, s + ".sh")
        with open(p, "w") as f:
            f.write(f"#!/bin/sh\necho {s} >> {log}\nexit {code}\n")
        os.chmod(p, 0o700)
    cfg = os.path.join(d, "config.json")
    with open(cfg, "w") as f:
        json.dump({"preScriptLocation": os.path.join(d, "pre.sh"),
                   "postScriptLocation": os.path.join(d, "post.sh"), "timeoutInSeconds": 10}, f)
    os.chmod(cfg, 0o600)
    if os.path.exists(log):
        os.unlink(log)


def writable(mount, within=20.0):
    p = bench.probe(mount)
    try:
        return p.wait(timeout=within) == 0
    except subprocess.TimeoutExpired:
        subprocess.run(["fsfreeze", "-u", mount], stderr=subprocess.DEVNULL)
        p.wait()
        return False


def leftovers(dirs):
    out = subprocess.run(["pgrep", "-f", "--", "--run-dir"], stdout=subprocess.PIPE, text=True).stdout
    mine = []
    for pid in out.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(d + "/run" in cmd for d in dirs):
            mine.append(int(pid))
    return mine


def one_run(a, cluster, dirs, fault, rng):
    victim = rng.randrange(3)
    for i, d in enumerate(dirs):
        scripts(d, 1 if (fault == "prefail" and i == victim) else 0)
    cmds = ["exit 1" if (fault == "cmdfail" and i == victim) else "sleep 0.05" for i in range(3)]
    groups = os.path.join(a.scratch, "groups.d")
    ps = [subprocess.Popen(bench.isolated(a.bin, dirs[i], a.mounts[i], cmds[i], "bench", groups, f"m{i}"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for i in range(3)]
    if fault in ("kill", "term", "node"):
        time.sleep(rng.uniform(0, 0.8))
        if fault == "node":
            cluster.procs[rng.randrange(3)].kill()
        else:
            ps[victim].send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
    outs = [p.communicate(timeout=120)[0] for p in ps]
    return victim, [p.returncode for p in ps], outs


def allowed(fault, i, victim, code):
    if fault == "none" or fault == "node":
        return code in (0, 2) if fault == "node" else code == 0
    if i == victim and fault == "kill":
        # 0: the round was over before the kill came.
        return code in (0, -signal.SIGKILL)
    if i == victim and fault == "term":
        return code in (0, 143, 2)
    return code in (0, 2) if fault in ("kill", "term") else code == 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int)
    ap.add_argument("mounts", nargs=3)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    cdir = os.path.join(a.scratch, "soak-etcd")
    os.makedirs(cdir, mode=0o700, exist_ok=True)
    cluster = bench.Cluster(cdir)
    counts = dict(runs=0, frozen_after=0, leaked=0, wrong_status=0, skipped_post=0, double_post=0)
    dirs = [member(a.scratch, f"m{i}") for i in range(3)]
    kinds = dict.fromkeys(FAULTS, 0)
    try:
        cluster.group_file(os.path.join(a.scratch, "groups.d"))
        for n in range(a.runs):
            fault = FAULTS[n % len(FAULTS)] if n < len(FAULTS) else rng.choice(FAULTS)
            kinds[fault] += 1
            victim, codes, outs = one_run(a, cluster, dirs, fault, rng)
            counts["runs"] += 1
            for i in range(3):
                if not writable(a.mounts[i]):
                    counts["frozen_after"] += 1
                if not allowed(fault, i, victim, codes[i]):
                    counts["wrong_status"] += 1
                    print(f"group run {n} ({fault}, victim m{victim}): m{i} exited {codes[i]}", file=sys.stderr)
                consistent = (json.loads(outs[i] or b"{}").get("group") or {}).get("consistent")
                if consistent and fault in ("prefail", "cmdfail"):
                    counts["wrong_status"] += 1
            end = time.monotonic() + 20
            while True:
                ran = [open(os.path.join(d, "ran")).read() if os.path.exists(os.path.join(d, "ran")) else ""
                       for d in dirs]
                short = [r.count("pre") > r.count("post") for r in ran]
                if not any(short) or time.monotonic() > end:
                    break
                time.sleep(0.1)
            counts["skipped_post"] += sum(short)
            counts["double_post"] += sum(r.count("post") > r.count("pre") for r in ran)
            time.sleep(0.5)
            left = leftovers(dirs)
            if left:
                counts["leaked"] += 1
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
            if fault == "node":
                # A fresh cluster for the next runs (the killed node's
                # peers would take a while to accept it back).
                cluster.stop()
                shutil.rmtree(cdir)
                os.makedirs(cdir, mode=0o700)
                cluster = bench.Cluster(cdir)
                cluster.group_file(os.path.join(a.scratch, "groups.d"))
    finally:
        cluster.stop()
    print("group faults by kind: " + " ".join(f"{k}={v}" for k, v in kinds.items()))
    print("group: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if all(v == 0 for k, v in counts.items() if k != "runs") else 1


if __name__ == "__main__":
    sys.exit(main())
