#!/usr/bin/env python3
"""Consistency-group figures of scripts/bench.sh (SPEC.md §11).

Starts a three-node etcd cluster on loopback ports (TLS and client
certificates made by openssl in the scratch directory), runs rounds of
three `quiesce snapshot --group` members, each on its own scratch mount
with its own run and state directories, and prints two sample lines
(candidate, baseline) as every figure does. Every etcd node is killed by
its pid on the way out, whatever happens.

  group.py window --runs N --quiesce Q --scratch DIR -- M1 M2 M3
      m0's windowMs in a three-member round; baseline: windowMs of one
      `snapshot` alone on M1.
  group.py death  --runs N ... -- M1 M2 M3
      SIGKILL to m0 in its window -> writes to the others' mounts complete
      (the lease is 1 s); baseline: the lease's TTL.
  group.py fail   --runs N ... -- M1 M2 M3
      m0's snapshot command exits 1 -> writes to the others' mounts
      complete; baseline: the same after a command that exits 0 (the
      round's normal end).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

LEASE = 1


def sh(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_pki(d):
    os.makedirs(d, mode=0o700, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
       "-subj", "/CN=bench-ca", cwd=d)
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")]:
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        sh("openssl", "req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
           "-subj", "/CN=bench-" + name, cwd=d)
        sh("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext", cwd=d)
    for f in ("ca.key", "server.key", "client.key"):
        os.chmod(os.path.join(d, f), 0o600)
    for f in ("ca.pem", "server.pem", "client.pem"):
        os.chmod(os.path.join(d, f), 0o644)


class Cluster:
    def __init__(self, d):
        self.d = d
        self.procs = []
        pki = os.path.join(d, "pki")
        make_pki(pki)
        self.pki = pki
        # Below the ephemeral range (32768 up), where outgoing connections
        # may hold a port first.
        base = 31000 + (os.getpid() % 170) * 10
        self.client = [base + i for i in range(3)]
        peer = [base + 5 + i for i in range(3)]
        initial = ",".join(f"n{i}=http://127.0.0.1:{peer[i]}" for i in range(3))
        for i in range(3):
            c = f"https://127.0.0.1:{self.client[i]}"
            p = f"http://127.0.0.1:{peer[i]}"
            log = open(os.path.join(d, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"n{i}", "--data-dir", os.path.join(d, f"data-n{i}"),
                 "--listen-client-urls", c, "--advertise-client-urls", c,
                 "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"bench-{os.getpid()}",
                 "--cert-file", os.path.join(pki, "server.pem"),
                 "--key-file", os.path.join(pki, "server.key"),
                 "--trusted-ca-file", os.path.join(pki, "ca.pem"), "--client-cert-auth",
                 "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdout=subprocess.DEVNULL, stderr=log))
        end = time.monotonic() + 30
        while subprocess.run(self.etcdctl("put", "bench/ready", "1"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > end:
                raise SystemExit("group.py: etcd cluster never became healthy")
            time.sleep(0.2)

    def endpoints(self):
        return [f"https://127.0.0.1:{p}" for p in self.client]

    def etcdctl(self, *args):
        return ["etcdctl", "--endpoints=" + ",".join(self.endpoints()),
                "--cacert=" + os.path.join(self.pki, "ca.pem"),
                "--cert=" + os.path.join(self.pki, "client.pem"),
                "--key=" + os.path.join(self.pki, "client.key"), *args]

    def group_file(self, groups):
        os.makedirs(groups, mode=0o700, exist_ok=True)
        path = os.path.join(groups, "bench.json")
        with open(path, "w") as f:
            json.dump({"endpoints": self.endpoints(), "caFile": os.path.join(self.pki, "ca.pem"),
                       "certFile": os.path.join(self.pki, "client.pem"),
                       "keyFile": os.path.join(self.pki, "client.key"),
                       "members": ["m0", "m1", "m2"], "joinSeconds": 30, "leaseSeconds": LEASE}, f)
        os.chmod(path, 0o600)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def member_dir(scratch, name):
    d = os.path.join(scratch, "group-" + name)
    if not os.path.isdir(d):
        os.makedirs(os.path.join(d, "run"), mode=0o700)
        os.makedirs(os.path.join(d, "metrics"), mode=0o755)
        for s in ("pre", "post"):
            with open(os.path.join(d, s + ".sh"), "w") as f:
                f.write("#!/bin/sh\nexit 0\n")
            os.chmod(os.path.join(d, s + ".sh"), 0o700)
        cfg = os.path.join(d, "config.json")
        with open(cfg, "w") as f:
            json.dump({"preScriptLocation": os.path.join(d, "pre.sh"),
                       "postScriptLocation": os.path.join(d, "post.sh")}, f)
        os.chmod(cfg, 0o600)
    return d


def isolated(q, d, mount, cmd, group=None, groups=None, member=None):
    """The quiesce command line of one member: its own run, state and metrics
    directories in the scratch directory, no syslog, no journal."""
    a = [q, "--config", os.path.join(d, "config.json"), "--host-config", "/nonexistent/host.conf",
         "--run-dir", os.path.join(d, "run"), "--state-dir", os.path.join(d, "state"),
         "--metrics-dir", os.path.join(d, "metrics"),
         "--syslog-socket", "/nonexistent/sock", "--journal-socket", "/nonexistent/journal"]
    if group:
        a += ["--group", group, "--groups-dir", groups, "--group-member", member]
    return a + ["snapshot", "--json", "--max-freeze", "20", "--mount", mount, "--", "sh", "-c", cmd]


def window_ms(out):
    try:
        return json.loads(out)["phases"]["freeze"]["windowMs"]
    except (ValueError, KeyError):
        return None


def probe(mount):
    """A write that completes once the mount is thawed."""
    return subprocess.Popen(["sh", "-c", f"echo x > '{mount}/.probe' && sync -f '{mount}/.probe'"])


def round_of(a, meet, cmds):
    """Starts the three members with their commands; returns the processes."""
    for f in os.listdir(meet):
        os.unlink(os.path.join(meet, f))
    ds = [member_dir(a.scratch, f"m{i}") for i in range(3)]
    groups = os.path.join(a.scratch, "groups.d")
    return [subprocess.Popen(isolated(a.quiesce, ds[i], a.mounts[i], cmds[i], "bench", groups, f"m{i}"),
                             stdout=subprocess.PIPE,
                             stderr=open(os.path.join(ds[i], "stderr"), "w")) for i in range(3)]


def wait_files(paths, within=30):
    end = time.monotonic() + within
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > end:
            raise SystemExit("group.py: members never reached their windows (their stderr is in "
                             "group-m*/stderr of the scratch directory)")
        time.sleep(0.002)


def fig_window(a, meet):
    cand, base = [], []
    single = member_dir(a.scratch, "single")
    for _ in range(a.runs):
        ps = round_of(a, meet, ["true"] * 3)
        outs = [p.communicate()[0] for p in ps]
        w = window_ms(outs[0])
        if w is not None:
            cand.append(w)
        out = subprocess.run(isolated(a.quiesce, single, a.mounts[0], "true"), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        w = window_ms(out)
        if w is not None:
            base.append(w)
    return cand, base


def thaw_after(a, meet, fail):
    """m0 dies (fail=None: SIGKILL) or its command ends with status `fail`;
    ms until writes to m1's and m2's mounts complete."""
    stamp = os.path.join(meet, "t0")
    inn = [os.path.join(meet, f"in-{i}") for i in range(3)]
    rest = "sleep 30" if fail is None else \
        f"while [ ! -e {inn[1]} ] || [ ! -e {inn[2]} ]; do sleep 0.001; done; sleep 0.2; date +%s%N > {stamp}; exit {fail}"
    ps = round_of(a, meet, [f"touch {inn[0]}; {rest}", f"touch {inn[1]}", f"touch {inn[2]}"])
    wait_files(inn)
    time.sleep(0.1)
    probes = [probe(m) for m in a.mounts[1:]]
    if fail is None:
        t0 = time.time_ns()
        os.kill(ps[0].pid, signal.SIGKILL)
    for p in probes:
        p.wait()
    t1 = time.time_ns()
    for p in ps:
        p.communicate()
    if fail is not None:
        with open(stamp) as f:
            t0 = int(f.read().strip())
    return (t1 - t0) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("figure", choices=["window", "death", "fail"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quiesce", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("mounts", nargs=3)
    a = ap.parse_args()
    cdir = os.path.join(a.scratch, "etcd-" + a.figure)
    shutil.rmtree(cdir, ignore_errors=True)
    os.makedirs(cdir, mode=0o700)
    meet = os.path.join(a.scratch, "meet")
    os.makedirs(meet, mode=0o700, exist_ok=True)
    cluster = Cluster(cdir)
    try:
        cluster.group_file(os.path.join(a.scratch, "groups.d"))
        if a.figure == "window":
            cand, base = fig_window(a, meet)
        elif a.figure == "death":
            cand = [thaw_after(a, meet, None) for _ in range(a.runs)]
            base = [LEASE * 1000.0] * a.runs
        else:
            cand = [thaw_after(a, meet, 1) for _ in range(a.runs)]
            base = [thaw_after(a, meet, 0) for _ in range(a.runs)]
    finally:
        cluster.stop()
    print(" ".join(f"{x:.3f}" for x in cand))
    print(" ".join(f"{x:.3f}" for x in base))


if __name__ == "__main__":
    sys.exit(main())
