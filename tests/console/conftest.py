"""The harness of the console's browser tests.

A real `hangar serve` (the binary cargo built: $HANGAR_BIN, else target/debug/hangar) on a free
loopback port with a temporary data directory, and Debian's Chromium ($HANGAR_CHROMIUM, else
/usr/bin/chromium) driven by Playwright; Playwright never downloads a browser of its own.

Every test gets a fresh browser context (a fresh tab: empty sessionStorage) at 1280x800. After
each test, whatever it did, the harness checks that the admin token appeared in no URL the page
requested or navigated to, and in no localStorage; on failure it keeps a screenshot under
target/console-screenshots/ (CI keeps that folder).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "console-admin-token-0123456789abcdef"
FAILURES = ROOT / "target" / "console-screenshots"
# Screenshots of the main pages: into docs/console/ when asked (HANGAR_CONSOLE_DOCS=1, to refresh
# the ones docs/console.md shows), else beside the failure screenshots, so a run leaves the work
# tree as it was.
PAGES = ROOT / "docs" / "console" if os.environ.get("HANGAR_CONSOLE_DOCS") == "1" else FAILURES / "pages"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

expect.set_options(timeout=15_000)


class Hangar:
    """A running `hangar serve`, and a small client of its API for setting up and checking."""

    def __init__(self):
        binary = os.environ.get("HANGAR_BIN") or str(ROOT / "target" / "debug" / "hangar")
        if not os.path.exists(binary):
            raise RuntimeError(f"no hangar binary at {binary}: run cargo build -p hangar first")
        self.dir = tempfile.mkdtemp(prefix="hangar-console-")
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        env = {k: v for k, v in os.environ.items() if k != "HANGAR_SECRET_KEY"}
        env.update(HANGAR_ADMIN_TOKEN=TOKEN, RUST_LOG="info")
        self.proc = subprocess.Popen(
            [binary, "serve", "--addr", "127.0.0.1:0", "--data", os.path.join(self.dir, "data")],
            stdout=subprocess.PIPE, stderr=self.log, env=env,
        )
        found = threading.Event()

        def read():
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not found.is_set() and line.startswith("hangar listening on "):
                    self.base = line.removeprefix("hangar listening on ")
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError("hangar did not start: " + self.server_log())

    def server_log(self):
        self.log.flush()
        return pathlib.Path(self.dir, "server.log").read_text(errors="replace")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                text = res.read().decode()
                return res.status, (json.loads(text) if text else None), dict(res.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None), dict(e.headers)

    def create(self, spec):
        status, body, _ = self.call("POST", "/v1/agents", spec)
        assert status == 201, body
        return body["id"]


def valid_spec(name):
    return {
        "name": name,
        "description": f"{name} answers greetings",
        "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
        "instructions": "You answer briefly.",
        "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.message }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"text": "{{ nodes.greet.text }}"}},
        ]},
    }


@pytest.fixture(scope="session")
def hangar():
    server = Hangar()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    executable = os.environ.get("HANGAR_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        # Playwright gives each launch a fresh, temporary --user-data-dir of its own.
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class Console:
    """A browser tab on the console, and what it sent."""

    def __init__(self, context, hangar):
        self.context = context
        self.hangar = hangar
        self.page = context.new_page()
        self.urls = []
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.on("framenavigated", lambda f: self.urls.append(f.url))
        self.errors = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, fragment=""):
        self.page.goto(f"{self.hangar.base}/console{fragment}")

    def sign_in(self):
        self.open()
        field = self.page.get_by_label("Admin token")
        field.fill(TOKEN)
        field.press("Enter")
        expect(self.page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()

    def go(self, fragment):
        self.page.evaluate("f => { location.hash = f; }", fragment)

    def shot(self, name, full_page=True):
        PAGES.mkdir(parents=True, exist_ok=True)
        # A toast from the step before would cover the page.
        self.page.evaluate("() => document.getElementById('notice').replaceChildren()")
        self.page.screenshot(path=str(PAGES / f"{name}.png"), full_page=full_page, animations="disabled", caret="hide")

    def storage(self):
        return self.page.evaluate("() => ({local: JSON.stringify(localStorage), session: JSON.stringify(sessionStorage)})")


@pytest.fixture
def console(browser, hangar, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=hangar.base)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hangar.base)
    tab = Console(context, hangar)
    yield tab
    failed = any(getattr(request.node, f"report_{w}", None) and getattr(request.node, f"report_{w}").failed for w in ("setup", "call"))
    if failed:
        FAILURES.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        try:
            tab.page.screenshot(path=str(FAILURES / f"{name}.png"), full_page=True)
        except Exception as e:  # the page may be what broke
            print(f"no screenshot: {e}")
    try:
        leaked = [u for u in tab.urls if TOKEN in u]
        local = tab.page.evaluate("() => JSON.stringify(localStorage)") if not tab.page.is_closed() else ""
    finally:
        context.close()
    assert not leaked, f"the admin token appeared in URLs: {leaked}"
    assert TOKEN not in local, "the admin token was written to localStorage"
    assert not tab.errors, f"uncaught errors in the page: {tab.errors}"
