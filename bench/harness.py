"""What the Python benches share: a release jobxd on a free port with a
temporary config, and JSON calls to it with the bench's admin token."""
import json, re, subprocess, sys, threading, urllib.request

TOKEN = "bench-token-000001"
TOKENS = f'[[auth.tokens]]\nname = "bench"\ntoken = "{TOKEN}"\nroles = {{ "*" = "admin" }}\n'


def call(base, method, path, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start(binary, cfg):
    """Starts `binary --config cfg`; answers (process, base URL) once it listens."""
    d = subprocess.Popen([binary, "--config", cfg], stderr=subprocess.PIPE, text=True)
    for line in d.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            # Keep reading the daemon's log so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in d.stderr], daemon=True).start()
            return d, m.group(1)
    d.wait()
    sys.exit("jobxd did not start")
