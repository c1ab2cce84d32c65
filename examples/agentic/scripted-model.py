#!/usr/bin/env python3
"""A scripted OpenAI-compatible model for trying the example without a real one: it looks the
order up when asked about one, refunds it when asked to, and otherwise sums up the last tool
result. POST /v1/chat/completions on 127.0.0.1:8098 (base_url http://127.0.0.1:8098/v1)."""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def reply(messages):
    last = messages[-1]
    if last["role"] == "tool":
        result = last.get("content") or ""
        if "not_approved" in result:
            return {"content": "The refund was not approved, so I did not make it."}
        if "refunded" in result:
            return {"content": "Done: the order is refunded; the money reaches your card within 14 days."}
        data = json.loads(result).get("body", {}) if result.startswith("{") else {}
        return {"content": f"Order {data.get('order_id')} is {data.get('status')}, arriving {data.get('eta')}."}
    text = last.get("content") or ""
    order = re.search(r"[A-Z]-\d+", " ".join(m.get("content") or "" for m in messages if m["role"] in ("user", "assistant")))
    order_id = order.group(0) if order else "unknown"
    name = "refund" if "refund" in text.lower() else "order_status"
    call = {"id": f"call_{name}", "type": "function",
            "function": {"name": name, "arguments": json.dumps({"order_id": order_id})}}
    return {"content": None, "tool_calls": [call]}


class Model(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        message = {"role": "assistant", **reply(request["messages"])}
        body = json.dumps({"id": "chatcmpl-scripted", "object": "chat.completion", "model": request.get("model"),
                           "choices": [{"index": 0, "message": message,
                                        "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        sys.stderr.write("model: " + (args[0] % args[1:]) + "\n")


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8098), Model).serve_forever()
