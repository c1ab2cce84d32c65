#!/usr/bin/env python3
"""A stand-in order service for the example: GET /orders/<id>, POST /refunds.
Answers only with `Authorization: Bearer orders-demo-token`. Listens on 127.0.0.1:8099."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

TOKEN = "Bearer orders-demo-token"


class Orders(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Authorization") != TOKEN:
            return self.answer(401, {"error": "unauthorized"})
        if self.path.startswith("/orders/"):
            order = self.path.rsplit("/", 1)[-1]
            return self.answer(200, {"order_id": order, "status": "shipped", "eta": "Thursday"})
        self.answer(404, {"error": "not found"})

    def do_POST(self):
        if self.headers.get("Authorization") != TOKEN:
            return self.answer(401, {"error": "unauthorized"})
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.answer(200, {"refunded": True, "order_id": body.get("order_id")})

    def log_message(self, *args):
        sys.stderr.write("orders: " + (args[0] % args[1:]) + "\n")


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8099), Orders).serve_forever()
