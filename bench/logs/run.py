#!/usr/bin/env python3
"""Step output into the store: one local step prints SIZE_MB of numbered
lines; jobx keeps all of it (the per-step cap is raised above it). Each
round alternates jobx with the baseline, the same generator writing to a
file (`awk > file`), and prints:

- throughput: kept bytes / seconds from task start to finish (goal >= 50 MB/s)
- the daemon's peak RSS while taking it (VmHWM, goal < 300 MiB)
- the store's growth against the kept output (goal <= 1.3x)
- that no line is lost: the step key's last seq = lines + jobx's own records

Usage: cargo build --release -p jobxd -p jobx-plugin-local
       python3 bench/logs/run.py [--size-mb 1024] [--rounds 3] [--random]
--random prints lines with random (incompressible) hex, to see the store's
size without the benefit of compression.
Starts target/release/jobxd on a free port with a temporary data dir.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "jobxd")
sys.path.insert(0, os.path.join(ROOT, "bench"))
from harness import TOKEN, TOKENS, call, start  # noqa: E402
LINE = 95  # bytes per generated line, newline included



def generator(lines, random_text):
    if random_text:
        # 80 hex digits from a cheap LCG: compresses about as badly as real hashes.
        body = ('x = 12345; for (i = 1; i <= %d; i++) { s = ""; for (j = 0; j < 10; j++) '
                '{ x = (x * 1103515245 + 12345) %% 2147483648; s = s sprintf("%%08x", x) } '
                'printf "line %%08d %%s\\n", i, s }' % lines)
    else:
        body = 'pad = sprintf("%%080d", 0); for (i = 1; i <= %d; i++) printf "line %%08d %%s\\n", i, pad' % lines
    return "awk 'BEGIN { " + body + " }'"


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmHWM:"):
                return int(l.split()[1]) / 1024
    return 0.0


def reset_peak(pid):
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """CPU seconds per thread name of a process (threads of one name summed)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / TICKS
    return out


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def log_bytes(base):
    """What step logs occupy in the store (jobx_store_log_bytes in /metrics);
    the file itself grows in doublings, so its size says little."""
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("jobx_store_log_bytes "):
                return int(line.split()[1])
    sys.exit("no jobx_store_log_bytes in /metrics")


def run_jobx(base, pid, data_dir, job, step_key_of):
    reset_peak(pid)
    cpu0 = thread_cpu(pid)
    t0 = time.monotonic()
    uuid = call(base, "POST", "/task/1/job/byname", {"jobname": job, "group": "one"})["uuid"]
    while True:
        t = call(base, "GET", f"/task/1/{uuid}")["data"]
        if t["status"] in ("success", "fail", "refuse"):
            break
        time.sleep(0.05)
    wall = time.monotonic() - t0
    if t["status"] != "success":
        sys.exit(f"jobx task ended {t['status']}: {t.get('reason')}")
    peak = peak_rss_mib(pid)
    cpu1 = thread_cpu(pid)
    cpu = sorted(((v - cpu0.get(k, 0.0), k) for k, v in cpu1.items()), reverse=True)
    sub = call(base, "GET", f"/subtask/1/{uuid}")["data"][0]["uuid"]
    key = step_key_of(sub)
    # The last page of the step's log: its last seq counts the records.
    lo, hi = 0, 1 << 40
    # Find the last seq by probing offsets (each probe reads one record).
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = call(base, "GET", f"/slave/bench/log/{key}?format=json&offset={mid - 1}&max=1")["data"]
        if p["records"]:
            lo = mid
        else:
            hi = mid - 1
    return wall, peak, lo, cpu


def baseline(tmp, script):
    out = os.path.join(tmp, "baseline.out")
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", script + " > " + out], check=True)
    wall = time.monotonic() - t0
    os.remove(out)
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--random", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p jobxd -p jobx-plugin-local")
    lines = args.size_mb * 1024 * 1024 // LINE
    kept = lines * LINE
    script = generator(lines, args.random)
    tmp = tempfile.mkdtemp(prefix="jobx-bench-logs-")
    data_dir = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "jobxd.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:0"\nname = "bench"\n[storage]\ndata_dir = "{data_dir}"\n'
                f'[logs]\nmax_bytes_per_step = {kept * 2}\n'
                + TOKENS)
    d, base = start(BIN, cfg)
    try:
        call(base, "POST", "/node/1", {"nodes": [{"name": "n1"}]})
        call(base, "POST", "/group/1", {"name": "one", "group_type": "list", "node": "n1"})
        job = call(base, "POST", "/job/1", {"name": "flood", "steps": [
            {"plugin": "local", "script": script, "timeout": 3600}]})["data"]
        step = job["steps"][0]
        step_key_of = lambda sub: sub + step["uuid"] + step["plugin"]
        kind = "random hex" if args.random else "repetitive"
        print(f"one step printing {kept / 1e6:.0f} MB ({lines} lines of {LINE} bytes, {kind}), "
              f"{args.rounds} rounds; jobx and `awk > file` alternate")
        rows = []
        for r in range(1, args.rounds + 1):
            wall, peak, last, cpu = run_jobx(base, d.pid, data_dir, "flood", step_key_of)
            base_wall = baseline(tmp, script)
            mbps = kept / wall / 1e6
            # The logs' pages against all output kept so far.
            grown = log_bytes(base)
            ratio = grown / (kept * r)
            # Besides the lines, the step's key holds jobx's header, the
            # node's exit code and the step's result.
            lost = lines + 3 - last
            rows.append((mbps, peak, ratio, wall / base_wall))
            print(f"round {r}: jobx {wall:6.2f} s = {mbps:6.1f} MB/s (awk > file {base_wall:5.2f} s = "
                  f"{kept / base_wall / 1e6:6.1f} MB/s), peak RSS {peak:6.1f} MiB, "
                  f"logs in store {grown / 1e6:7.1f} MB = {ratio:5.3f}x the output so far, records {last} "
                  f"({'none lost' if lost == 0 else f'{lost} missing'})")
            print("         daemon CPU: " + ", ".join(f"{k} {v:.1f} s" for v, k in cpu[:4] if v > 0.05))
        col = lambda i: [x[i] for x in rows]
        print(f"throughput  min {min(col(0)):6.1f}  median {statistics.median(col(0)):6.1f} MB/s   goal >= 50 MB/s")
        print(f"peak RSS    min {min(col(1)):6.1f}  median {statistics.median(col(1)):6.1f} MiB    goal < 300 MiB")
        print(f"store/output min {min(col(2)):5.3f}  median {statistics.median(col(2)):5.3f}x        goal <= 1.3x")
        print(f"jobx / awk > file  min {min(col(3)):5.2f}  median {statistics.median(col(3)):5.2f}")
    finally:
        d.terminate()
        d.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
