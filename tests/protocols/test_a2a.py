"""A2A 1.0 through the official `a2a-sdk` client (card discovery, JSON-RPC and HTTP+JSON
bindings), and the 0.3 method names over plain JSON-RPC."""

import asyncio
import time

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb

from conftest import TOKEN, echo_spec


def run(coro):
    return asyncio.run(coro)


async def client_for(hangar, agent, *, streaming=False, binding="JSONRPC", polling=False, token=TOKEN):
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    config = ClientConfig(
        streaming=streaming, polling=polling, httpx_client=http, supported_protocol_bindings=[binding]
    )
    return await create_client(f"{hangar.base}/a2a/{agent}", client_config=config), _Closing(http)


class _Closing:
    """Closes the client's httpx client at the end of a `with` block (opened by the SDK)."""

    def __init__(self, http):
        self.http = http

    async def __aenter__(self):
        return self.http

    async def __aexit__(self, *exc):
        await self.http.aclose()


def request(text, context=None):
    message = new_text_message(text)
    if context:
        message.context_id = context
    return pb.SendMessageRequest(message=message)


def test_the_card_describes_the_live_agent(hangar):
    agent = hangar.agent(echo_spec("Carded"))
    card = httpx.get(f"{hangar.base}/a2a/{agent}/.well-known/agent-card.json")
    assert card.status_code == 200 and card.headers["etag"] and card.headers["cache-control"]
    body = card.json()
    assert body["name"] == "Carded" and body["version"] == "1"
    bindings = {i["protocolBinding"] for i in body["supportedInterfaces"]}
    assert bindings == {"JSONRPC", "HTTP+JSON"}
    status, draft = hangar.call("POST", "/v1/agents", echo_spec("Draft"))
    assert httpx.get(f"{hangar.base}/a2a/{draft['id']}/.well-known/agent-card.json").status_code == 404


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_send_blocking_then_get_the_same_task_and_run(hangar, binding):
    agent = hangar.agent(echo_spec())

    async def go():
        client, http = await client_for(hangar, agent, binding=binding)
        async with http:
            events = [e async for e in client.send_message(request("hi there", context="ctx-1"))]
            assert len(events) == 1
            task = events[0].task
            assert task.status.state == pb.TASK_STATE_COMPLETED
            assert task.context_id == "ctx-1"
            texts = [p.text for a in task.artifacts for p in a.parts if p.text]
            assert texts == ["You said: hi there"]
            again = await client.get_task(pb.GetTaskRequest(id=task.id))
            assert again.status.state == pb.TASK_STATE_COMPLETED
            return task.id

    tid = run(go())
    # The task is the run.
    status, body = hangar.call("GET", f"/v1/agents/{agent}/requests/{tid}")
    assert status == 200 and body["status"] == "succeeded"
    assert body["output"] == {"text": "You said: hi there"}


def test_return_immediately_is_accepted_then_completes(hangar):
    agent = hangar.agent(echo_spec())

    async def go():
        client, http = await client_for(hangar, agent, polling=True)
        async with http:
            events = [e async for e in client.send_message(request("later"))]
            task = events[0].task
            assert task.status.state in (pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING, pb.TASK_STATE_COMPLETED)
            assert task.context_id, "a context is made when the message has none"
            for _ in range(100):
                task = await client.get_task(pb.GetTaskRequest(id=task.id))
                if task.status.state == pb.TASK_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.05)
            assert task.status.state == pb.TASK_STATE_COMPLETED

    run(go())


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_streaming_starts_with_the_task_and_ends_completed(hangar, binding):
    agent = hangar.agent(echo_spec())

    async def go():
        client, http = await client_for(hangar, agent, streaming=True, binding=binding)
        async with http:
            events = [e async for e in client.send_message(request("stream me"))]
            assert events[0].HasField("task")
            last = events[-1]
            assert last.HasField("status_update")
            assert last.status_update.status.state == pb.TASK_STATE_COMPLETED
            artifacts = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
            assert [p.text for p in artifacts[0].parts if p.text] == ["You said: stream me"]

    run(go())


def test_unknown_tasks_and_ended_tasks_are_a2a_errors(hangar):
    agent = hangar.agent(echo_spec())

    async def go():
        client, http = await client_for(hangar, agent)
        async with http:
            with pytest.raises(TaskNotFoundError):
                await client.get_task(pb.GetTaskRequest(id="0190a8c4-0000-7000-8000-000000000000"))
            events = [e async for e in client.send_message(request("done"))]
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(pb.CancelTaskRequest(id=events[0].task.id))

    run(go())


def test_cancel_a_queued_task_and_subscribe_to_a_running_one(hangar):
    # A slow tool keeps the task running for a while.
    import http.server
    import threading

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(1.0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    spec = echo_spec("Slow")
    spec["tools"] = [{"name": "t", "connection": "svc", "security": "bearer", "method": "GET", "path": "/x"}]
    spec["flow"]["nodes"].insert(0, {"id": "call", "type": "tool", "tool": "t", "args": {}, "next": "m"})
    spec["flow"]["start"] = "call"
    status, created = hangar.call("POST", "/v1/agents", spec)
    agent = created["id"]
    hangar.call("POST", f"/v1/agents/{agent}/connections", {"id": "svc", "server": url, "auth": {"type": "bearer", "token": "t"}})
    assert hangar.call("POST", f"/v1/agents/{agent}/deploy", {})[0] == 200

    async def go():
        client, http = await client_for(hangar, agent, streaming=True, polling=True)
        async with http:
            plain, http2 = await client_for(hangar, agent, polling=True)
            async with http2:
                first = [e async for e in plain.send_message(request("one"))][0].task
                events = [e async for e in client.subscribe(pb.SubscribeToTaskRequest(id=first.id))]
                assert events[0].HasField("task") and events[0].task.id == first.id
                assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED

                second = [e async for e in plain.send_message(request("two"))][0].task
                canceled = await plain.cancel_task(pb.CancelTaskRequest(id=second.id))
                assert canceled.status.state == pb.TASK_STATE_CANCELED
        server.shutdown()

    run(go())


def test_v03_method_names_answer_in_v03_form(hangar):
    agent = hangar.agent(echo_spec())
    status, body = hangar.call(
        "POST",
        f"/a2a/{agent}",
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "message/send",
            "params": {"message": {"kind": "message", "messageId": "m1", "role": "user", "parts": [{"kind": "text", "text": "old"}]}},
        },
    )
    assert status == 200 and body["id"] == 7, body
    task = body["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "completed"
    status, got = hangar.call("POST", f"/a2a/{agent}", {"jsonrpc": "2.0", "id": 8, "method": "tasks/get", "params": {"id": task["id"]}})
    assert got["result"]["id"] == task["id"]
    status, missing = hangar.call("POST", f"/a2a/{agent}", {"jsonrpc": "2.0", "id": 9, "method": "nope", "params": {}})
    assert missing["error"]["code"] == -32601
    status, bad = hangar.call("POST", f"/a2a/{agent}", {"jsonrpc": "2.0", "id": 10, "method": "message/send", "params": {}})
    assert bad["error"]["code"] == -32602


def test_an_invocation_key_works_and_another_agents_is_refused(hangar):
    agent = hangar.agent(echo_spec())
    other = hangar.agent(echo_spec("Other"))
    status, key = hangar.call("POST", f"/v1/agents/{agent}/keys", {})

    async def go():
        client, http = await client_for(hangar, agent, token=key["key"])
        async with http:
            events = [e async for e in client.send_message(request("keyed"))]
            assert events[0].task.status.state == pb.TASK_STATE_COMPLETED
        client, http = await client_for(hangar, other, token=key["key"])
        async with http:
            with pytest.raises(Exception):
                [e async for e in client.send_message(request("nope"))]

    run(go())


def test_push_config_is_delivered_to_a_loopback_receiver(hangar):
    import http.server
    import json as _json
    import threading

    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, _json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/a2a-hook"
    agent = hangar.agent(echo_spec())

    async def go():
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        config = ClientConfig(
            streaming=False,
            polling=True,
            httpx_client=http,
            push_notification_config=pb.TaskPushNotificationConfig(
                url=url,
                token="notify-token",
                authentication=pb.AuthenticationInfo(scheme="Bearer", credentials="receiver-secret"),
            ),
        )
        client = await create_client(f"{hangar.base}/a2a/{agent}", client_config=config)
        async with _Closing(http):
            task = [e async for e in client.send_message(request("push me"))][0].task
            configs = await client.list_task_push_notification_configs(
                pb.ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert [c.url for c in configs.configs] == [url]
            assert not configs.configs[0].token, "the token is never shown again"
            return task.id

    tid = run(go())
    for _ in range(200):
        if received:
            break
        time.sleep(0.05)
    server.shutdown()
    headers, body = received[0]
    assert body["task"]["id"] == tid
    assert body["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert headers["authorization"] == "Bearer receiver-secret"
    assert headers["x-a2a-notification-token"] == "notify-token"


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_list_pages_through_a_contexts_tasks_newest_first(hangar, binding):
    agent = hangar.agent(echo_spec())

    async def go():
        client, http = await client_for(hangar, agent, binding=binding)
        async with http:
            ids = []
            for text in ["a", "b", "c"]:
                ids.append([e async for e in client.send_message(request(text, context="list-ctx"))][0].task.id)
            await client.send_message(request("elsewhere")).__anext__()
            first = await client.list_tasks(pb.ListTasksRequest(context_id="list-ctx", page_size=2))
            assert [t.id for t in first.tasks] == ids[::-1][:2]
            assert first.next_page_token
            rest = await client.list_tasks(
                pb.ListTasksRequest(context_id="list-ctx", page_size=2, page_token=first.next_page_token)
            )
            assert [t.id for t in rest.tasks] == ids[:1]
            assert not rest.next_page_token
            done = await client.list_tasks(pb.ListTasksRequest(status=pb.TASK_STATE_COMPLETED, page_size=100))
            assert set(ids) <= {t.id for t in done.tasks}

    run(go())
