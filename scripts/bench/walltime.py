#!/usr/bin/env python3
"""Helper of scripts/bench.sh: wall-time measurement, statistics, rendering.

  walltime.py measure --runs N [--warmup W] [--minus MS] [--pause MS] -- RC CMD... [--- RC CMD...]
      Runs every command N times, interleaved (run i of each command before
      run i+1 of any; the order alternates each round so neither side always
      goes first). Each command must exit with its RC. Wall time of one run is
      time.perf_counter() around subprocess.run, identical for every command,
      so candidate and baseline pay the same spawn overhead. Prints one line
      per command: its N samples in ms (minus MS), space-separated. With
      --pause, every run is preceded by MS of idle time (not measured), so
      each starts after a quiet spell, as a run started by a scheduler does.

  walltime.py stats KEY UNIT TARGET WHAT BASELINE_WHAT
      Reads two sample lines (candidate, baseline) on stdin, prints one JSON
      line: key, median, unit, baseline (median), ratio, target, target_on,
      runs, and the two descriptions (used by the human rendering only).
      TARGET is a number (met when median <= it; target_on "median"), a
      number with an x suffix, e.g. 1.2x (met when ratio <= it; target_on
      "ratio"), or null (no target).

  walltime.py render (--json | --human) FILE
      FILE holds the JSON lines of `stats`; prints the figures.
"""

import json
import statistics
import subprocess
import sys
import time


def die(msg):
    print(f"walltime.py: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_commands(args):
    """`RC CMD... --- RC CMD...` -> [(rc, argv), ...]"""
    groups, cur = [], []
    for a in args + ["---"]:
        if a == "---":
            if len(cur) < 2:
                die("each command needs an expected exit code and an argv")
            try:
                rc = int(cur[0])
            except ValueError:
                die(f"expected exit code, got {cur[0]!r}")
            groups.append((rc, cur[1:]))
            cur = []
        else:
            cur.append(a)
    return groups


def run_once(rc, argv):
    t0 = time.perf_counter()
    got = subprocess.run(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode
    t1 = time.perf_counter()
    if got != rc:
        # Run it again with its output visible, to say why.
        again = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        die(f"{' '.join(argv)}: exit {got}, expected {rc}\n"
            f"--- stdout\n{again.stdout}--- stderr\n{again.stderr}")
    return (t1 - t0) * 1000.0


def run_once_rss(rc, argv):
    """Peak resident set (KiB) of the command (and the descendants it
    waited for), as GNU time reports it from wait4(2). Not wait4 from here:
    a child exec'd from this Python process inherits the interpreter's
    ~15 MiB peak into its ru_maxrss; GNU time is a small forking parent."""
    got = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if got.returncode != rc:
        die(f"{' '.join(argv)}: exit {got.returncode}, expected {rc}\n{got.stderr}")
    return float(got.stderr.strip().splitlines()[-1])


def measure(args):
    runs, warmup, minus, metric, pause = None, 2, 0.0, run_once, 0.0
    while args and args[0] != "--":
        opt = args.pop(0)
        if not args:
            die(f"{opt} needs a value")
        val = args.pop(0)
        if opt == "--runs":
            runs = int(val)
        elif opt == "--warmup":
            warmup = int(val)
        elif opt == "--minus":
            minus = float(val)
        elif opt == "--pause":
            pause = float(val) / 1000.0
        elif opt == "--metric":
            if val not in ("wall", "rss"):
                die("--metric wall|rss")
            metric = run_once if val == "wall" else run_once_rss
        else:
            die(f"unknown option {opt}")
    if not args:
        die("measure: missing `--` before the commands")
    if not runs or runs < 1:
        die("measure: --runs N (N >= 1) is required")
    cmds = parse_commands(args[1:])
    samples = [[] for _ in cmds]
    order = list(range(len(cmds)))
    tty = sys.stderr.isatty()
    for i in range(warmup + runs):
        for j in order:
            if pause:
                time.sleep(pause)
            ms = metric(*cmds[j])
            if i >= warmup:
                samples[j].append(ms - minus)
        order.reverse()
        if tty:
            print(f"  run {i + 1 - warmup}/{runs}  " if i >= warmup
                  else f"  warm-up {i + 1}/{warmup}",
                  end="\r", file=sys.stderr, flush=True)
    print(f"  {runs} runs (+{warmup} warm-up) of {len(cmds)} commands",
          file=sys.stderr)
    for s in samples:
        print(" ".join(f"{x:.4f}" for x in s))


def stats(args):
    if len(args) != 5:
        die("stats KEY UNIT TARGET WHAT BASELINE_WHAT")
    key, unit, target, what, base_what = args
    lines = [ln.split() for ln in sys.stdin.read().splitlines() if ln.strip()]
    if len(lines) != 2:
        die(f"stats {key}: expected 2 sample lines (candidate, baseline), got {len(lines)}")
    cand, base = ([float(x) for x in ln] for ln in lines)
    med, bmed = statistics.median(cand), statistics.median(base)
    ratio = round(med / bmed, 3) if bmed > 0 else None
    target_on = "median"
    if target in ("", "null", "-"):
        target = None
    else:
        if target.endswith("x"):
            target, target_on = target[:-1], "ratio"
        try:
            target = float(target)
        except ValueError:
            die(f"stats {key}: bad target {target!r}")
    print(json.dumps({
        "key": key,
        "median": round(med, 3),
        "unit": unit,
        "baseline": round(bmed, 3),
        "ratio": ratio,
        "target": target,
        "target_on": target_on,
        "runs": len(cand),
        "what": what,
        "baseline_what": base_what,
    }))


def render(args):
    if len(args) != 2 or args[0] not in ("--json", "--human"):
        die("render (--json | --human) FILE")
    with open(args[1]) as f:
        figs = [json.loads(ln) for ln in f if ln.strip()]
    if args[0] == "--json":
        keep = ("median", "unit", "baseline", "ratio", "target", "target_on",
                "runs")
        out = {fg["key"]: {k: fg[k] for k in keep} for fg in figs}
        print(json.dumps(out, indent=2))
        return
    width = max((len(fg["key"]) for fg in figs), default=0)
    for fg in figs:
        u = fg["unit"]
        ratio = "n/a" if fg["ratio"] is None else f"{fg['ratio']:.2f}x"
        if fg["target"] is None:
            verdict = "no target"
        elif fg["target_on"] == "ratio":
            ok = ("ok" if fg["ratio"] is not None and fg["ratio"] <= fg["target"]
                  else "MISSED")
            verdict = f"target ratio <= {fg['target']:g}x: {ok}"
        else:
            ok = "ok" if fg["median"] <= fg["target"] else "MISSED"
            verdict = f"target <= {fg['target']:g} {u}: {ok}"
        print(f"{fg['key']:<{width}}  median {fg['median']:9.3f} {u}  "
              f"baseline {fg['baseline']:9.3f} {u}  ratio {ratio:>7}  "
              f"{verdict}  (n={fg['runs']})")
        print(f"{'':<{width}}    {fg['what']}; baseline: {fg['baseline_what']}")


def main():
    if len(sys.argv) < 2:
        die("usage: walltime.py (measure | stats | render) ...")
    cmd, args = sys.argv[1], sys.argv[2:]
    {"measure": measure, "stats": stats, "render": render}.get(
        cmd, lambda _: die(f"unknown subcommand {cmd}"))(args)


if __name__ == "__main__":
    main()
