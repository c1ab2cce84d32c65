"""The run event streams read with `httpx-sse`, an SSE client no one here wrote: ids, event
names and JSON data as any EventSource sees them, and resumption with Last-Event-ID."""

import json

import httpx
from httpx_sse import connect_sse

from conftest import TOKEN, echo_spec

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def read(client, method, url, **kwargs):
    with connect_sse(client, method, url, headers={**HEADERS, **kwargs.pop("headers", {})}, **kwargs) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(int(e.id), e.event, json.loads(e.data)) for e in source.iter_sse()]


def test_a_streamed_run_and_its_replay_resumed_after_an_event(hangar):
    agent = hangar.agent(echo_spec())
    with httpx.Client(base_url=hangar.base, timeout=30) as client:
        events = read(client, "POST", f"/v1/agents/{agent}/invoke/stream", json={"input": {"message": "sse"}})
        ids = [e[0] for e in events]
        assert ids == list(range(1, len(ids) + 1))
        assert events[0][1] == "run.started" and events[-1][1] == "run.finished"
        text = "".join(d["text"] for _, kind, d in events if kind == "model.delta")
        assert text == "You said: sse"
        rid = events[-1][2]["run"]["request_id"]
        tail = read(client, "GET", f"/v1/agents/{agent}/requests/{rid}/events", headers={"Last-Event-ID": "2"})
        assert tail == events[2:]
        assert read(client, "GET", f"/v1/agents/{agent}/requests/{rid}/events?after=4") == events[4:]
