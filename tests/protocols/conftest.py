"""Starts the real `hangar` binary for the protocol tests, on a free loopback port with a
temporary data directory, and creates the agents they talk to.

The binary is $HANGAR_BIN, else target/debug/hangar (`./x test protocols` builds it first)."""

import json
import os
import pathlib
import subprocess
import tempfile
import threading
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "protocols-admin-token-0123456789abcdef"


class Hangar:
    def __init__(self, env=None):
        self.dir = tempfile.TemporaryDirectory()
        binary = os.environ.get("HANGAR_BIN", str(ROOT / "target" / "debug" / "hangar"))
        self.log = open(pathlib.Path(self.dir.name) / "log", "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--addr", "127.0.0.1:0", "--data", str(pathlib.Path(self.dir.name) / "data")],
            env={**os.environ, "HANGAR_ADMIN_TOKEN": TOKEN, "RUST_LOG": "info", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("hangar listening on "):
                self.base = line.split("hangar listening on ", 1)[1].strip()
                break
        else:
            raise RuntimeError("hangar did not start")
        # Keep draining stdout so the server never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def call(self, method, path, body=None, token=TOKEN):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None)

    def agent(self, spec):
        status, agent = self.call("POST", "/v1/agents", spec)
        assert status == 201, agent
        status, deployed = self.call("POST", f"/v1/agents/{agent['id']}/deploy", {})
        assert status == 200, deployed
        return agent["id"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def echo_spec(name="Echo", end_output=None):
    """An agent whose echo model answers `You said: <message>`."""
    return {
        "name": name,
        "description": f"{name} repeats what it is told",
        "model": {"provider": "echo", "name": "echo-1"},
        "instructions": "Repeat.",
        "flow": {
            "start": "m",
            "nodes": [
                {"id": "m", "type": "model", "prompt": "You said: {{ input.message }}", "next": "done"},
                {"id": "done", "type": "end", "output": end_output or {"text": "{{ nodes.m.text }}"}},
            ],
        },
    }


@pytest.fixture(scope="session")
def hangar():
    server = Hangar()
    yield server
    server.stop()
