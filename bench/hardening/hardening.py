#!/usr/bin/env python3
"""Resource limits of jobxd under hostile load, one figure per finding.

Starts the given jobxd (a release build) on a loopback port with a fresh data
dir, reproduces each finding and prints the figure beside its goal:

  1. slow unauthenticated bodies: 300 connections announce 1 MiB and send all
     but 16 bytes, then stay silent; RSS growth and how many are still open
     after the body timeout (plus the same with a valid token);
  2. a 100 MB step log served as HTML and as text to 4 concurrent readers:
     RSS growth, time to first byte, total time;
  3. the amplifying selection group ("52,"*33000 + "52;1;1", 300 nodes):
     preview time and RSS growth;
  4. metrics series after 20,000 unauthenticated requests to random paths;
  5. request latency on a kept-alive connection (p50, p90);
  6. answers to a 10 KB request line, 5,000 headers, a percent-encoded
     project id.

Everything stays on 127.0.0.1 and every loop is bounded.

usage: hardening.py BIN_DIR [--only 1,1b,2,...]   (BIN_DIR holds jobxd and the plugins)
"""

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "bench-admin-token-0001"
BODY_TIMEOUT = 10  # the default server.body_timeout


class Daemon:
    def __init__(self, bin_dir, work):
        self.work = work
        conf = os.path.join(work, "jobxd.toml")
        with open(conf, "w") as f:
            f.write(
                f"""[server]
listen = "127.0.0.1:0"
name = "bench"
[storage]
data_dir = "{work}/data"
[logs]
max_bytes_per_step = 120000000
[plugins]
dir = ["{bin_dir}"]
[[auth.tokens]]
name = "bench"
token = "{TOKEN}"
roles = {{ "*" = "admin" }}
"""
            )
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "jobxd"), "--config", conf],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(os.environ, RUST_LOG="warn,jobxd=info"),
            text=True,
        )
        deadline = time.time() + 30
        self.addr = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            if "listening on http://" in line:
                hostport = line.split("listening on http://")[1].split()[0]
                host, port = hostport.rsplit(":", 1)
                self.addr = (host, int(port))
                break
        if self.addr is None:
            raise SystemExit("jobxd did not start")
        # Keep draining stderr so the daemon never blocks on it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for _ in self.proc.stderr:
            pass

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Peak:
    """Samples the daemon's RSS every 10 ms while active."""

    def __init__(self, d):
        self.d = d
        self.base = d.rss_kib()
        self.peak = self.base
        self.running = True
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while self.running:
            try:
                self.peak = max(self.peak, self.d.rss_kib())
            except OSError:
                return
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.t.join()
        return (self.peak - self.base) / 1024.0


def connect(d, timeout=30):
    s = socket.create_connection(d.addr, timeout=timeout)
    return s


def read_response(s, limit=1 << 20):
    """Reads one response (Content-Length or chunked, else to EOF); answers
    (status, headers dict, body bytes). Bodies beyond `limit` are counted only."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return (None, {}, buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        body = bytearray(rest)
        while len(body) < n:
            chunk = s.recv(min(1 << 20, n - len(body)))
            if not chunk:
                break
            body += chunk
        return (status, headers, bytes(body))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        rest = bytearray(rest)
        while True:
            while b"\r\n" not in rest:
                chunk = s.recv(65536)
                if not chunk:
                    return (status, headers, body)
                rest += chunk
            i = rest.index(b"\r\n")
            size_line, rest = bytes(rest[:i]), rest[i + 2 :]
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    return (status, headers, body)
                rest += chunk
            if size == 0:
                return (status, headers, bytes(body))
            if len(body) < limit:
                body += rest[:size]
            rest = rest[size + 2 :]
    return (status, headers, rest)


def request(d, method, path, body=None, token=TOKEN, extra=""):
    s = connect(d)
    data = b"" if body is None else json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(
        (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{auth}{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n"
        ).encode()
        + data
    )
    st, _, b = read_response(s, limit=1 << 30)
    s.close()
    try:
        return st, json.loads(b)
    except ValueError:
        return st, b


def ok(d, method, path, body=None):
    st, v = request(d, method, path, body)
    if st != 200:
        raise SystemExit(f"{method} {path}: {st} {v!r:.300}")
    return v


def is_closed(s):
    """True once the daemon closed (or reset) the connection."""
    s.setblocking(False)
    try:
        data = s.recv(65536, socket.MSG_PEEK)
        if data == b"":
            return True
        # An answer arrived; closed if EOF follows it.
        s.recv(65536)
        return is_closed(s)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def slow_bodies(d, token, n=300):
    """n connections announce 1 MiB and send all but 16 bytes."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /node/10 HTTP/1.1\r\nHost: bench\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    ).encode()
    payload = b" " * (1048576 - 16)
    socks = []
    lock = threading.Lock()

    def one():
        try:
            s = socket.create_connection(d.addr, timeout=5)
        except OSError:
            return
        with lock:
            socks.append(s)
        try:
            s.sendall(head + payload)
        except OSError:
            pass  # refused or closed early: the daemon did not take the body

    peak = Peak(d)
    t0 = time.time()
    threads = []
    for _ in range(n):
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
        while sum(th.is_alive() for th in threads) >= 32:
            time.sleep(0.005)
    for t in threads:
        t.join()
    time.sleep(1.0)
    grow = peak.stop()
    open_now = sum(not is_closed(s) for s in socks)
    # Wait out the body timeout (bounded), then count again.
    deadline = t0 + BODY_TIMEOUT + 5
    while time.time() < deadline and any(not is_closed(s) for s in socks):
        time.sleep(0.25)
    open_later = sum(not is_closed(s) for s in socks)
    for s in socks:
        s.close()
    return grow, len(socks), open_now, open_later, time.time() - t0


def finding1(d):
    grow, n, open_now, open_later, secs = slow_bodies(d, None)
    print(
        f"1. slow bodies, no token: RSS +{grow:.1f} MiB for {n} connections "
        f"(goal < 20 MiB); open after sending: {open_now}; open {secs:.0f} s later: "
        f"{open_later} (goal 0, closed by the {BODY_TIMEOUT} s body timeout)"
    )


def finding1b(d):
    grow, n, open_now, open_later, secs = slow_bodies(d, TOKEN)
    print(
        f"1b. slow bodies, valid token: RSS +{grow:.1f} MiB for {n} connections "
        f"(bodies of known callers are read, up to server.max_body_bytes each); "
        f"open after sending: {open_now}; open {secs:.0f} s later: {open_later} (goal 0)"
    )


def big_log_task(d):
    ok(d, "POST", "/node/10", {"nodes": [{"name": "n1"}]})
    ok(d, "POST", "/group/10", {"name": "one", "group_type": "list", "node": "n1"})
    # 100 MB of `"` without newlines: 32 KiB records, 6x when escaped.
    ok(
        d,
        "POST",
        "/job/10",
        {
            "name": "big",
            "steps": [
                {
                    "plugin": "local",
                    "timeout": 600,
                    "script": "head -c 100000000 /dev/zero | tr '\\0' '\"'",
                }
            ],
        },
    )
    v = ok(d, "POST", "/task/10/job/byname", {"jobname": "big", "group": "one"})
    uuid = v["uuid"]
    deadline = time.time() + 600
    while time.time() < deadline:
        t = ok(d, "GET", f"/task/10/{uuid}")["data"]
        if t["status"] in ("success", "fail", "refuse"):
            return uuid
        time.sleep(0.5)
    raise SystemExit("the big task did not finish")


def read_log(d, uuid, accept, query, out):
    s = connect(d, timeout=300)
    t0 = time.time()
    s.sendall(
        (
            f"GET /slave/bench/log/{uuid}{query} HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {TOKEN}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    first = None
    total = 0
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        if first is None:
            first = time.time() - t0
        total += len(chunk)
    s.close()
    out.append((first or 0.0, time.time() - t0, total))


def finding2(d):
    uuid = big_log_task(d)
    # One read first, unmeasured: it fills the store's page cache (a fixed
    # size, [storage] cache_mb), which is not memory of the requests.
    read_log(d, uuid, "text/plain", "?format=text", [])
    for name, accept, query in (
        ("HTML", "text/html", ""),
        ("text", "text/plain", "?format=text"),
    ):
        time.sleep(1.0)
        out = []
        peak = Peak(d)
        ts = [
            threading.Thread(target=read_log, args=(d, uuid, accept, query, out))
            for _ in range(4)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        grow = peak.stop()
        firsts = max(o[0] for o in out)
        totals = max(o[1] for o in out)
        size = out[0][2] / 1e6
        print(
            f"2. 100 MB log as {name}, 4 readers: RSS +{grow:.1f} MiB (goal < 50 MiB); "
            f"first byte {firsts * 1000:.0f} ms, whole {size:.0f} MB page {totals:.1f} s"
        )


def json_page(d, uuid):
    time.sleep(1.0)
    peak = Peak(d)
    t0 = time.time()
    s = connect(d, timeout=300)
    s.sendall(
        (
            f"GET /slave/bench/log/{uuid}?format=json&max=10000 HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    st, _, body = read_response(s, limit=1 << 31)
    s.close()
    grow = peak.stop()
    records = body.count(b'"seq":') if st == 200 else 0
    print(
        f"2j. JSON page max=10000 of the 100 MB log: {st}, {records} records, "
        f"{len(body) / 1e6:.1f} MB answer in {time.time() - t0:.1f} s, RSS +{grow:.1f} MiB"
    )


def finding2j(d):
    json_page(d, big_log_task(d))


def finding3(d):
    names = [{"name": f"h{i:03}"} for i in range(300)]
    ok(d, "POST", "/node/52", {"nodes": names})
    text = "52," * 33000 + "52;1;1"
    st, v = request(
        d, "POST", "/group/52", {"name": "amp", "group_type": "percent", "percent": text}
    )
    if st != 200:
        print(f"3. amplifying group: saving it answered {st} {v!r:.200}")
        return
    gid = v["data"]["id"]
    times = []
    peak = Peak(d)
    for _ in range(5):
        t0 = time.time()
        st, v = request(d, "GET", f"/group/52/{gid}/node")
        times.append(time.time() - t0)
    grow = peak.stop()
    print(
        f"3. amplifying group preview: {statistics.median(times) * 1000:.1f} ms median of 5 "
        f"(goal < 50 ms), RSS +{grow:.1f} MiB (goal < 10 MiB), answer {st}"
    )


def series(d):
    _, body = request(d, "GET", "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    return sum(1 for l in text.splitlines() if l.startswith("jobx_http_requests_total{"))


def finding4(d, n=20000):
    series(d)  # the first look at /metrics is itself a series
    before = series(d)
    rnd = random.Random(4)

    def worker(count):
        for _ in range(count):
            path = "/" + "/".join(
                "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
                for _ in range(rnd.randint(1, 3))
            )
            s = connect(d)
            # RST on close: no TIME_WAIT left behind by 20,000 connections.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            read_response(s)
            s.close()

    ts = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    after = series(d)
    _, body = request(d, "GET", "/metrics")
    print(
        f"4. metrics: {before} → {after} series after {n} random unauthenticated paths "
        f"in {time.time() - t0:.0f} s (goal unchanged); /metrics {len(body) / 1024:.0f} KiB"
    )


def finding5(d, n=200):
    s = connect(d)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(
            f"GET /node/10 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        st, _, _ = read_response(s)
        lat.append(time.perf_counter() - t0)
        if st != 200:
            raise SystemExit(f"kept-alive request: {st}")
    s.close()
    lat.sort()
    fresh = []
    for _ in range(50):
        t0 = time.perf_counter()
        request(d, "GET", "/node/10")
        fresh.append(time.perf_counter() - t0)
    print(
        f"5. kept-alive latency: p50 {lat[n // 2] * 1000:.2f} ms, p90 {lat[n * 9 // 10] * 1000:.2f} ms "
        f"over {n} requests (goal p50 < 2 ms); fresh connection p50 "
        f"{statistics.median(fresh) * 1000:.2f} ms"
    )


def raw_status(d, data):
    s = connect(d, timeout=15)
    try:
        s.sendall(data)
        st, _, _ = read_response(s)
    except OSError as e:
        st = f"no answer ({e.__class__.__name__})"
    s.close()
    return st if st is not None else "no answer (closed)"


def finding6(d):
    line = raw_status(
        d, f"GET /node/10?{'x' * 10000} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    )
    hdrs = "".join(f"X-H{i}: v\r\n" for i in range(5000))
    many = raw_status(d, f"GET /node/10 HTTP/1.1\r\nHost: bench\r\n{hdrs}\r\n".encode())
    st, _ = request(d, "GET", "/group/%31%30")
    print(
        f"6. 10 KB request line: {line} (goal 414); 5,000 headers: {many} (goal 431); "
        f"/group/%31%30: {st} (goal 400)"
    )


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    bin_dir = os.path.abspath(sys.argv[1])
    only = None
    if len(sys.argv) > 3 and sys.argv[2] == "--only":
        only = set(sys.argv[3].split(","))
    print(f"jobxd: {bin_dir}/jobxd")
    steps = [
        ("1", finding1),
        ("1b", finding1b),
        ("2", finding2),
        ("2j", finding2j),
        ("3", finding3),
        ("4", finding4),
        ("5", finding5),
        ("6", finding6),
    ]
    for name, step in steps:
        if only and name not in only:
            continue
        # A fresh daemon per finding, so one figure does not carry another's memory.
        with tempfile.TemporaryDirectory(prefix="jobx-hardening-") as work:
            d = Daemon(bin_dir, work)
            try:
                step(d)
            finally:
                d.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
