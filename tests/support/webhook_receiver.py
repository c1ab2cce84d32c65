#!/usr/bin/env python3
"""A webhook receiver for Hangar's black-box push tests, on 127.0.0.1 only.

It verifies every delivery with the `standardwebhooks` package from PyPI (the reference
implementation, not Hangar's own code) and the bearer token, answers with the next status of a
script, and appends one JSON line per request to --out:

    {"n", "path", "status_answered", "verified", "verify_error", "token_ok", "webhook_id",
     "webhook_timestamp", "body"}

Usage:

    python3 tests/support/webhook_receiver.py --port 0 --secret whsec_... --token TOKEN \
        --script 500,500,200 --out deliveries.jsonl

prints `listening on http://127.0.0.1:PORT` (flushed) once it accepts connections. With
--secret-file instead of --secret, the secret is read from that file at each request, so a test
can start the receiver before Hangar has generated the agent's signing secret. A 3xx answer
carries `Location: /redirected`, so a followed redirect would show up as a request to that path.
--retry-after adds `Retry-After: SECONDS` to every non-2xx answer. A GET answers 200 with the
number of POSTs seen so far.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:
    from standardwebhooks.webhooks import Webhook
except ImportError:  # pragma: no cover - a setup problem, reported plainly
    sys.exit("webhook_receiver: the 'standardwebhooks' package is missing: pip install standardwebhooks")


def parse_script(text: str) -> list[int]:
    try:
        statuses = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--script must be comma-separated HTTP statuses, got {text!r}")
    if not statuses or any(not 100 <= s <= 599 for s in statuses):
        raise argparse.ArgumentTypeError(f"--script statuses must be 100-599, got {text!r}")
    return statuses


class Receiver:
    """What every request shares: the script position and the output file, under one lock."""

    def __init__(self, args: argparse.Namespace):
        self.script: list[int] = args.script
        self.token: str = args.token
        self.secret: str | None = args.secret
        self.secret_file: Path | None = args.secret_file
        self.retry_after: int | None = args.retry_after
        self.out: Path = args.out
        self.count = 0
        self.lock = threading.Lock()

    def current_secret(self) -> str | None:
        if self.secret is not None:
            return self.secret
        try:
            text = self.secret_file.read_text().strip() if self.secret_file else ""
        except OSError:
            return None
        return text or None

    def verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
        secret = self.current_secret()
        if secret is None:
            return False, "no secret known yet"
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
            return True, None
        except Exception as e:  # WebhookVerificationError, or a malformed secret/header
            return False, f"{type(e).__name__}: {e}"

    def token_ok(self, authorization: str | None) -> bool:
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest((authorization or "").encode(), expected)

    def record(self, entry: dict) -> int:
        """Takes the next status of the script and appends the request's line; returns the status."""
        with self.lock:
            status = self.script[min(self.count, len(self.script) - 1)]
            self.count += 1
            entry = {"n": self.count, "status_answered": status, **entry}
            with self.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
            return status


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified, verify_error = receiver.verify(body, headers)
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
            status = receiver.record(
                {
                    "path": self.path,
                    "verified": verified,
                    "verify_error": verify_error,
                    "token_ok": receiver.token_ok(headers.get("authorization")),
                    "webhook_id": headers.get("webhook-id"),
                    "webhook_timestamp": headers.get("webhook-timestamp"),
                    "body": parsed,
                }
            )
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/redirected")
            if receiver.retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", str(receiver.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with receiver.lock:
                text = f"{receiver.count}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args) -> None:
            # Never echo headers (they carry the token); one short line per request to stderr.
            sys.stderr.write(f"webhook_receiver: {format % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Standard Webhooks receiver for Hangar's tests (127.0.0.1 only).")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="the agent's whsec_... signing secret")
    secret.add_argument("--secret-file", type=Path, help="a file holding the secret, read at each request")
    p.add_argument("--token", required=True, help="the expected bearer token")
    p.add_argument("--script", type=parse_script, default=[200], help="statuses to answer in turn, e.g. 500,500,200")
    p.add_argument("--retry-after", type=int, default=None, help="Retry-After seconds on non-2xx answers")
    p.add_argument("--out", type=Path, required=True, help="JSON lines file, one line per request")
    args = p.parse_args(argv)

    receiver = Receiver(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(receiver))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
