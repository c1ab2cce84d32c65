#!/usr/bin/env python3
"""Reproduces the re-run after a crash found by hangar-crashtest (docs/reliability.md, Crash and
load): an async run killed with SIGKILL while it is running is run AGAIN after the restart,
although docs/runtime.md says it ends `failed`/`interrupted` and is never run again.

    cargo build --release --bin hangar
    python3 crashtest/repro/rerun_after_kill.py [target/release/hangar] [seconds after the tool call]

Exit 0: one tool call, the run ended failed/interrupted (as documented). Exit 1: the bug.
Standard library only; everything on 127.0.0.1; a temporary data directory.
"""
import http.server, json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/hangar"
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
TOKEN = "repro-token-0123456789abcdef"
calls = []


class Tool(http.server.BaseHTTPRequestHandler):
    """A tool with a side effect: it records each call, then answers after 2 s."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        calls.append(self.path)
        time.sleep(2)
        try:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:
            pass  # the server that called was killed

    def log_message(self, *a):
        pass


tool = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tool)
threading.Thread(target=tool.serve_forever, daemon=True).start()
data = tempfile.mkdtemp(prefix="hangar-rerun-")


def start():
    p = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--data", data],
                         env={**os.environ, "HANGAR_ADMIN_TOKEN": TOKEN, "RUST_LOG": "warn"},
                         stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        m = re.match(r"hangar listening on (\S+)", line)
        if m:
            return p, m.group(1)
    sys.exit("hangar did not start")


def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


server, base = start()
spec = {"name": "rerun", "description": "re-run after a crash", "instructions": "-",
        "model": {"provider": "echo", "name": "echo-1"},
        "tools": [{"name": "slow", "connection": "svc", "security": "bearer", "method": "POST",
                   "path": "/slow?q={{ args.q }}", "body": {}}],
        "flow": {"start": "call", "nodes": [
            {"id": "call", "type": "tool", "tool": "slow", "args": {"q": "{{ input.q }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"status": "{{ nodes.call.status }}"}}]}}
_, agent = call(base, "POST", "/v1/agents", spec)
aid = agent["id"]
call(base, "POST", f"/v1/agents/{aid}/connections",
     {"id": "svc", "server": f"http://127.0.0.1:{tool.server_port}", "credentials": "team",
      "auth": {"type": "bearer", "token": "t"}})
assert call(base, "POST", f"/v1/agents/{aid}/deploy", {})[0] == 200
status, accepted = call(base, "POST", f"/v1/agents/{aid}/invoke/async", {"input": {"q": "once"}})
assert status == 202, accepted
rid = accepted["request_id"]
while not calls:  # the run is running: its tool call arrived
    time.sleep(0.001)
time.sleep(DELAY)
server.kill()  # SIGKILL while the run is in flight
server.wait()
server, base = start()
_, run = call(base, "GET", f"/v1/agents/{aid}/requests/{rid}?wait=30")
time.sleep(0.5)
server.kill()
server.wait()
print(f"request {rid}: tool called {len(calls)} time(s); final state {run['status']}"
      f" {(run.get('error') or {}).get('code') or ''}")
ok = len(calls) == 1 and run["status"] == "failed" and run["error"]["code"] == "interrupted"
print("as documented" if ok else "BUG: the run was run again after the crash")
sys.exit(0 if ok else 1)
