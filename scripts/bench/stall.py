#!/usr/bin/env python3
"""Helper of scripts/bench.sh: the stall a database user feels.

  stall.py run --runs N --engine postgres|mariadb --socket S [--port P]
               --quiesce Q --mount M --dir D --config C [--extension]

A writer commits continuously (one INSERT per transaction, autocommit) on
one client session of its own; every commit's completion time is noted.
Each run measures the longest gap between two consecutive commits around
one command (from the last commit before it starts to the first after it
ends), interleaved:

  candidate  `quiesce snapshot --config C --mount M -- true` (quiesce's
             built-in workload method), or with --extension the Azure
             extension's own MariaDB SQL (preMysqlMaster.sql: FLUSH TABLES
             WITH READ LOCK; SET GLOBAL read_only = ON; then SLEEP in that
             session) around a bare `quiesce freeze`, released as the
             extension does: its session killed, then postMysqlMaster.sql
             (SET GLOBAL read_only = OFF; UNLOCK TABLES) from a new session.
             (The extension polls for the lock every 2 s; here the harness
             goes on as soon as the lock is held, which favours it.)
  baseline   `quiesce freeze --mount M -- true`: a bare freeze of the same
             filesystem, no application (the floor).

Prints two lines, candidate then baseline: the longest gap of each run, ms.
STALL_DEBUG=1: each run's longest gap, where it fell in the command and the
next longest, on stderr.
"""

import argparse
import os
import subprocess
import sys
import threading
import time


def client(engine, socket, port, extra=()):
    if engine == "postgres":
        return ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", str(port), "-d", "postgres",
                *extra]
    return ["mariadb", "--no-defaults", "--user=root", f"--socket={socket}",
            "--batch", "--skip-column-names", "--unbuffered", *extra]


class Writer:
    """One session committing as fast as it can; completion times noted."""

    def __init__(self, engine, socket, port):
        self.done = []
        self.stop = False
        self.p = subprocess.Popen(client(engine, socket, port), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, bufsize=1)
        table = "stall_t" if engine == "postgres" else "stall.t"
        self.insert = f"INSERT INTO {table} (v) VALUES (1);\nSELECT 'm';\n"
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            self.p.stdin.write(self.insert)
            self.p.stdin.flush()
            line = self.p.stdout.readline()
            if not line:
                return
            while line.strip() != "m":
                line = self.p.stdout.readline()
                if not line:
                    return
            self.done.append(time.perf_counter())

    def longest_gap(self, t0, t1):
        """Longest gap between consecutive commits from the last one before
        t0 to the first one after t1 (waiting up to 10 s for it)."""
        end = time.perf_counter() + 10
        while time.perf_counter() < end and not any(t > t1 for t in self.done[-50:]):
            time.sleep(0.005)
        ts = list(self.done)
        before = [t for t in ts if t <= t0]
        after = [t for t in ts if t >= t1]
        if not before or not after:
            sys.exit("stall.py: the writer made no commit around the run")
        inside = [t for t in ts if t0 < t < t1]
        seq = [before[-1], *inside, after[0]]
        gap, at = max((b - a, a) for a, b in zip(seq, seq[1:]))
        if os.environ.get("STALL_DEBUG"):
            print(f"gap {gap * 1e3:.1f} ms at +{(at - t0) * 1e3:.0f} ms of {(t1 - t0) * 1e3:.0f} ms;"
                  f" next {sorted(b - a for a, b in zip(seq, seq[1:]))[-2] * 1e3:.1f} ms",
                  file=sys.stderr)
        return gap * 1e3

    def close(self):
        self.stop = True
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=10)


def isolated(args, command):
    argv = [args.quiesce, "--host-config", "/nonexistent/host.conf",
            "--apps-dir", "/nonexistent/apps.d", "--workload-conf", "/nonexistent/workload.conf",
            "--run-dir", f"{args.dir}/run", "--state-dir", f"{args.dir}/state",
            "--metrics-dir", f"{args.dir}/metrics",
            "--syslog-socket", "/nonexistent/sock", "--journal-socket", "/nonexistent/journal"]
    if command == "snapshot":
        argv += ["--config", args.config]
    argv += [command, "--mount", args.mount, "--max-freeze", "30", "--", "true"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"stall.py: quiesce {command} exited {r.returncode}:\n{r.stderr[-2000:]}")


def extension(args):
    """The extension's SQL around a bare freeze, released its way."""
    side = subprocess.Popen(client("mariadb", args.socket, args.port), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=1)
    side.stdin.write("FLUSH TABLES WITH READ LOCK; SET GLOBAL read_only = ON;\n"
                     "SELECT 'locked';\nSELECT SLEEP(900);\n")
    side.stdin.flush()
    while side.stdout.readline().strip() != "locked":
        if side.poll() is not None:
            sys.exit("stall.py: the extension's pre SQL failed")
    isolated(args, "freeze")
    side.kill()
    side.wait()
    subprocess.run(client("mariadb", args.socket, args.port,
                          ["-e", "SET GLOBAL read_only = OFF; UNLOCK TABLES;"]),
                   check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--engine", choices=["postgres", "mariadb"], required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--quiesce", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--extension", action="store_true")
    args = ap.parse_args()
    w = Writer(args.engine, args.socket, args.port)
    time.sleep(0.5)
    cand, base = [], []
    try:
        for i in range(args.runs):
            order = [("c", cand), ("b", base)] if i % 2 == 0 else [("b", base), ("c", cand)]
            for kind, out in order:
                time.sleep(0.2)
                t0 = time.perf_counter()
                if kind == "b":
                    isolated(args, "freeze")
                elif args.extension:
                    extension(args)
                else:
                    isolated(args, "snapshot")
                t1 = time.perf_counter()
                out.append(w.longest_gap(t0, t1))
    finally:
        w.close()
    print(" ".join(f"{x:.3f}" for x in cand))
    print(" ".join(f"{x:.3f}" for x in base))


if __name__ == "__main__":
    main()
