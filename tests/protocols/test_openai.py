"""The OpenAI-compatible endpoint, through the official `openai` Python package."""

import openai
import pytest

from conftest import TOKEN, echo_spec


def client(hangar, agent, key=TOKEN):
    return openai.OpenAI(base_url=f"{hangar.base}/v1/agents/{agent}", api_key=key, max_retries=0)


def test_a_chat_completion_runs_the_agent_and_is_the_same_run(hangar):
    agent = hangar.agent(echo_spec())
    chat = client(hangar, agent).chat.completions.create(
        model="anything",
        messages=[
            {"role": "system", "content": "ignored by the echo agent"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.content == "You said: hello there"
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage.total_tokens == 0
    assert chat.id.startswith("chatcmpl-")
    rid = chat.id.removeprefix("chatcmpl-")
    status, run = hangar.call("GET", f"/v1/agents/{agent}/requests/{rid}")
    assert status == 200 and run["status"] == "succeeded"
    assert run["output"] == {"text": "You said: hello there"}


def test_streaming_carries_the_models_pieces_then_done(hangar):
    agent = hangar.agent(echo_spec())
    stream = client(hangar, agent).chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "one two three four five six"}], stream=True
    )
    pieces, finish = [], None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        finish = choice.finish_reason or finish
    assert len(pieces) > 1, "the echo model streams in pieces"
    assert "".join(pieces) == "You said: one two three four five six"
    assert finish == "stop"


def test_non_text_output_comes_back_whole_in_one_chunk_as_json(hangar):
    agent = hangar.agent(
        {
            "name": "Json",
            "description": "answers JSON",
            "model": {"provider": "echo", "name": "echo-1"},
            "flow": {"start": "done", "nodes": [{"id": "done", "type": "end", "output": {"n": 1, "ok": True}}]},
        }
    )
    c = client(hangar, agent)
    chat = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == '{"n":1,"ok":true}'
    chunks = list(c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], stream=True))
    contents = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert contents == ['{"n":1,"ok":true}']


def test_models_lists_the_agent(hangar):
    agent = hangar.agent(echo_spec())
    models = client(hangar, agent).models.list()
    assert [m.id for m in models.data] == [agent]


def test_errors_come_in_openais_shape_with_invokes_statuses(hangar):
    agent = hangar.agent(echo_spec())
    with pytest.raises(openai.AuthenticationError) as e:
        client(hangar, agent, key="wrong").chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    assert e.value.code == "unauthorized"

    status, draft = hangar.call("POST", "/v1/agents", echo_spec("Draft"))
    with pytest.raises(openai.ConflictError) as e:
        client(hangar, draft["id"]).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "not_deployed"

    with pytest.raises(openai.NotFoundError):
        client(hangar, "0190a8c4-0000-7000-8000-000000000000").chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(openai.BadRequestError) as e:
        client(hangar, agent).chat.completions.create(model="x", messages="not a list")
    assert e.value.code == "invalid_request"

    failing = hangar.agent(
        {
            "name": "Failing",
            "description": "always fails",
            "model": {"provider": "echo", "name": "echo-1"},
            "flow": {"start": "done", "nodes": [{"id": "done", "type": "end", "output": "{{ nope.missing.field }}"}]},
        }
    )
    with pytest.raises(openai.InternalServerError) as e:
        client(hangar, failing).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    with pytest.raises(openai.APIError):
        for _ in client(hangar, failing).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_an_invocation_key_is_an_api_key(hangar):
    agent = hangar.agent(echo_spec())
    status, key = hangar.call("POST", f"/v1/agents/{agent}/keys", {})
    assert status == 201
    chat = client(hangar, agent, key=key["key"]).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "keyed"}]
    )
    assert chat.choices[0].message.content == "You said: keyed"
    other = hangar.agent(echo_spec("Other"))
    with pytest.raises(openai.PermissionDeniedError):
        client(hangar, other, key=key["key"]).chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}])
