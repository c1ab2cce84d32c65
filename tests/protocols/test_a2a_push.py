"""A2A push notification configs on an existing task through the official `a2a-sdk` client:
create, get, list and delete on both bindings, with a loopback receiver getting the push of
a task that had already ended when its config was created."""

import http.server
import json
import threading
import time

import pytest
from a2a.types import a2a_pb2 as pb

from conftest import echo_spec
from test_a2a import client_for, request, run


class LoopbackReceiver:
    """An HTTP server on 127.0.0.1 that records each POST (lowercased headers, JSON body)."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, n, seconds=20):
        deadline = time.monotonic() + seconds
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.received)

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_the_sdk_sets_gets_lists_and_deletes_a_tasks_push_config(hangar, binding):
    agent = hangar.agent(echo_spec())
    receiver = LoopbackReceiver()
    hook = f"{receiver.url}/sdk-hook"

    async def go():
        client, http = await client_for(hangar, agent, binding=binding)
        async with http:
            task = [e async for e in client.send_message(request("tell me later"))][0].task
            assert task.status.state == pb.TASK_STATE_COMPLETED
            created = await client.create_task_push_notification_config(
                pb.TaskPushNotificationConfig(
                    task_id=task.id,
                    id="sdk-config",
                    url=hook,
                    token="sdk-token",
                    authentication=pb.AuthenticationInfo(scheme="Bearer", credentials="sdk-credentials"),
                )
            )
            assert (created.id, created.task_id, created.url) == ("sdk-config", task.id, hook)
            assert not created.token, "the token is never shown again"

            got = await client.get_task_push_notification_config(
                pb.GetTaskPushNotificationConfigRequest(task_id=task.id, id="sdk-config")
            )
            assert got.url == hook and got.authentication.scheme == "Bearer"
            listed = await client.list_task_push_notification_configs(
                pb.ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert [c.id for c in listed.configs] == ["sdk-config"]

            # The task had ended: its final state is pushed at once.
            pushes = receiver.wait(1)
            assert len(pushes) == 1, pushes
            headers, path, body = pushes[0]
            assert path == "/sdk-hook"
            assert body["task"]["id"] == task.id
            assert body["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
            assert headers["authorization"] == "Bearer sdk-credentials"
            assert headers["x-a2a-notification-token"] == "sdk-token"

            await client.delete_task_push_notification_config(
                pb.DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="sdk-config")
            )
            listed = await client.list_task_push_notification_configs(
                pb.ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert list(listed.configs) == []
            # Deleting again is not an error (as in the SDK's own server).
            await client.delete_task_push_notification_config(
                pb.DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="sdk-config")
            )

    try:
        run(go())
    finally:
        receiver.close()
