#!/usr/bin/env python3
"""Engine and local-executor overhead: N local nodes x 1 step `true` in
batches of 10%, next to a bare spawn loop with the same batch barriers.

Usage:
  cargo build --release -p jobxd -p jobx-plugin-local
  python3 bench/engine/run.py [--nodes N] [--rounds R] [--plugin-dir DIR] [--jobxd PATH]

--plugin-dir loads the plugins from DIR instead of next to jobxd, to compare
two builds of a plugin against the same daemon; --jobxd PATH runs another
build of the daemon (default target/release/jobxd).

Starts target/release/jobxd on a free port with a temporary data dir, talks
HTTP only to 127.0.0.1, and stops it at the end. The machine is shared and
noisy, so jobx and the baseline alternate in the same run, round after
round, and the ratio is reported per round and as min/median.

Besides wall time it reports CPU per node, read from /proc:
  * children: CPU of the step processes (the daemon's reaped children, plus
    the live ones such as the local executor's reaper) or, for the baseline,
    of the spawned `bash -c true`;
  * daemon: CPU of jobxd itself (engine, store, HTTP, plugin threads), and
    at the end the same split by thread name (/proc/<pid>/task/*).
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "jobxd")
sys.path.insert(0, os.path.join(ROOT, "bench"))
from harness import TOKEN, TOKENS, call, start  # noqa: E402
GOAL = 1.3
TICKS = os.sysconf("SC_CLK_TCK")



def stat_fields(pid):
    """utime, stime, cutime, cstime (seconds) and ppid of a process."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
    ppid = int(rest[1])
    ut, st, cut, cst = (int(x) / TICKS for x in rest[11:15])
    return ppid, ut, st, cut, cst


def live_children_cpu(pid):
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, ut, st, _, _ = stat_fields(entry)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            total += ut + st
    return total


def reaper_cpu(pid):
    """CPU seconds of the local executor's reaper (a live child of the daemon)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"jobx-local-reaper" not in f.read():
                    continue
            ppid, ut, st, _, _ = stat_fields(entry)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            return ut + st
    return 0.0


def daemon_cpu(pid):
    """(own CPU, children CPU incl. live children) of the daemon, seconds."""
    _, ut, st, cut, cst = stat_fields(pid)
    return ut + st, cut + cst + live_children_cpu(pid)


def thread_cpu(pid):
    """CPU seconds of the daemon's threads, summed by thread name."""
    by = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            _, ut, st, _, _ = stat_fields(f"{pid}/task/{tid}")
        except (OSError, IndexError, ValueError):
            continue
        by[name] = by.get(name, 0.0) + ut + st
    return by


def run_jobx(base, pid, n):
    own0, kids0 = daemon_cpu(pid)
    t0 = time.monotonic()
    uuid = call(base, "POST", "/task/1/job/byname", {"jobname": "true", "group": "tenth"})["uuid"]
    while True:
        t = call(base, "GET", f"/task/1/{uuid}")["data"]
        if t["status"] in ("success", "fail", "refuse"):
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    own1, kids1 = daemon_cpu(pid)
    if t["status"] != "success":
        sys.exit(f"jobx task ended {t['status']}: {t.get('reason')}")
    batches = len(call(base, "GET", f"/subtask/1/{uuid}")["data"])
    return wall, (own1 - own0) / n, (kids1 - kids0) / n, batches


def bare_loop(n, batches):
    per = max(1, n // batches)
    c0 = os.times()
    t0 = time.monotonic()
    left = n
    while left > 0:
        k = min(per, left)
        procs = [subprocess.Popen(["bash", "-c", "true"]) for _ in range(k)]
        for p in procs:
            p.wait()
        left -= k
    wall = time.monotonic() - t0
    c1 = os.times()
    kids = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return wall, kids / n


def ms(x):
    return f"{x * 1000:.2f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plugin-dir", help="load the plugins from this directory (to compare builds)")
    ap.add_argument("--jobxd", default=BIN, help="the daemon binary (to compare builds)")
    args = ap.parse_args()
    n = args.nodes
    if not os.path.exists(args.jobxd):
        sys.exit("build first: cargo build --release -p jobxd -p jobx-plugin-local")
    tmp = tempfile.mkdtemp(prefix="jobx-bench-")
    cfg = os.path.join(tmp, "jobxd.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:0"\nname = "bench"\n[storage]\ndata_dir = "{tmp}/data"\n'
                f'[engine]\nmax_parallel = 128\n'
                + (f'[plugins]\ndir = ["{os.path.abspath(args.plugin_dir)}"]\n' if args.plugin_dir else '')
                + TOKENS)
    d, base = start(args.jobxd, cfg)
    rows = []
    try:
        nodes = [{"name": f"n{i}"} for i in range(1, n + 1)]
        call(base, "POST", "/node/1", {"nodes": nodes})
        call(base, "POST", "/group/1", {"name": "tenth", "group_type": "percent", "percent": "10%"})
        call(base, "POST", "/job/1", {"name": "true", "steps": [{"plugin": "local", "script": "true"}]})
        print(f"{n} nodes x `true`, 10% batches, {args.rounds} rounds (jobx and the bare loop alternate)")
        threads0 = thread_cpu(d.pid)
        reaper0 = reaper_cpu(d.pid)
        for r in range(1, args.rounds + 1):
            wall, own, kids, batches = run_jobx(base, d.pid, n)
            bare, bare_kids = bare_loop(n, batches)
            ratio = wall / bare
            rows.append((wall, bare, ratio, own, kids, bare_kids))
            print(f"round {r}: jobx {wall:.2f} s ({batches} batches; daemon {ms(own)}/node, "
                  f"children {ms(kids)}/node) | bare {bare:.2f} s (children {ms(bare_kids)}/node) "
                  f"| ratio {ratio:.2f}x")
        threads1 = thread_cpu(d.pid)
        print(f"the local executor's reaper (part of children): "
              f"{ms((reaper_cpu(d.pid) - reaper0) / (n * len(rows)))}/node")
        spent = sorted(((threads1[k] - threads0.get(k, 0.0), k) for k in threads1), reverse=True)
        total = n * len(rows)
        print("daemon CPU per node by thread: " + ", ".join(
            f"{name} {ms(sec / total)}" for sec, name in spent if sec / total >= 0.000005))
        with open(f"/proc/{d.pid}/status") as f:
            rss = next((l.split(":", 1)[1].strip() for l in f if l.startswith("VmRSS")), "?")
        print(f"jobxd resident memory after the rounds: {rss}")
    finally:
        d.terminate()
        d.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [row[2] for row in rows]
    med = statistics.median
    print(f"ratio jobx/bare: min {min(ratios):.2f}x, median {med(ratios):.2f}x (goal <= {GOAL}x: "
          f"{'met' if med(ratios) <= GOAL else 'not met'} by the median)")
    print(f"jobx wall: min {min(r[0] for r in rows):.2f} s, median {med([r[0] for r in rows]):.2f} s; "
          f"bare wall: min {min(r[1] for r in rows):.2f} s, median {med([r[1] for r in rows]):.2f} s")
    print(f"CPU per node (median): daemon {ms(med([r[3] for r in rows]))}, "
          f"children {ms(med([r[4] for r in rows]))}, bare children {ms(med([r[5] for r in rows]))}")


if __name__ == "__main__":
    main()
