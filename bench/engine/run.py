#!/usr/bin/env python3
"""Engine overhead: 1,000 local nodes x 1 step `true` in batches of 10%,
next to a bare spawn loop with the same batch barriers.

Usage: cargo build --release && python3 bench/engine/run.py [nodes]
Starts target/release/jobxd on a free port with a temporary data dir, talks
HTTP only to 127.0.0.1, and stops it at the end.
"""
import json, os, re, shutil, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "jobxd")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
TOKEN = "bench-token-000001"


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def bare_loop(n, batches):
    per = max(1, n // batches)
    t0 = time.monotonic()
    left = n
    while left > 0:
        k = min(per, left)
        procs = [subprocess.Popen(["bash", "-c", "true"]) for _ in range(k)]
        for p in procs:
            p.wait()
        left -= k
    return time.monotonic() - t0


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="jobx-bench-")
    cfg = os.path.join(tmp, "jobxd.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:0"\nname = "bench"\n[storage]\ndata_dir = "{tmp}/data"\n'
                f'[engine]\nmax_parallel = 128\n'
                f'[[auth.tokens]]\nname = "bench"\ntoken = "{TOKEN}"\nroles = {{ "*" = "admin" }}\n')
    d = subprocess.Popen([BIN, "--config", cfg], stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for line in d.stderr:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                base = m.group(1)
                break
        nodes = [{"name": f"n{i}"} for i in range(1, N + 1)]
        call(base, "POST", "/node/1", {"nodes": nodes})
        call(base, "POST", "/group/1", {"name": "tenth", "group_type": "percent", "percent": "10%"})
        call(base, "POST", "/job/1", {"name": "true", "steps": [{"plugin": "local", "script": "true"}]})
        t0 = time.monotonic()
        uuid = call(base, "POST", "/task/1/job/byname", {"jobname": "true", "group": "tenth"})["uuid"]
        while True:
            t = call(base, "GET", f"/task/1/{uuid}")["data"]
            if t["status"] in ("success", "fail", "refuse"):
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        subs = call(base, "GET", f"/subtask/1/{uuid}")["data"]
        print(f"jobx: {N} nodes, {len(subs)} batches, status {t['status']}, wall {wall:.2f} s "
              f"(runtime field {t['runtime']} s)")
    finally:
        d.terminate()
        d.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    bare = bare_loop(N, 10)
    print(f"bare spawn loop (bash -c true, 10 batches with barriers): wall {bare:.2f} s")


if __name__ == "__main__":
    main()
