"""End-to-end tests: the official ``openai`` Python SDK against the running gateway.

Providers: ``echo`` (built in) and ``mock`` (kind ``openai``, pointed at
``mock_upstream.MockUpstream``). See ``shared/design/interface.md``.
"""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

import mock_upstream as mu
from conftest import CLIENT_TIMEOUT_S, GATEWAY_KEY, UPSTREAM_KEY

MOCK_MODEL = "mock/gpt-4o-mini"
GATEWAY_HEADERS = ("x-llmgate-provider", "x-llmgate-model", "x-llmgate-attempts", "x-llmgate-overhead-ms", "x-request-id")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": mu.TOOL_NAME,
        "description": "Get the current weather in a location",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
}


def marker() -> str:
    """A unique word, so a test can find its own request at the mock upstream."""
    return "m" + uuid.uuid4().hex[:12]


def words(text: str) -> int:
    return len(text.split())


def assert_gateway_headers(headers: httpx.Headers, provider: str, model: str) -> None:
    for name in GATEWAY_HEADERS:
        assert headers.get(name), f"missing response header {name}: {dict(headers)}"
    assert headers["x-llmgate-provider"] == provider
    assert headers["x-llmgate-model"] == model
    assert int(headers["x-llmgate-attempts"]) >= 1
    overhead = float(headers["x-llmgate-overhead-ms"])
    assert overhead >= 0.0


def assert_chunk_envelope(chunks: list, model: str) -> None:
    assert chunks, "the stream produced no chunk"
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and next(iter(ids)), f"chunks do not share one id: {ids}"
    created = {c.created for c in chunks}
    assert len(created) == 1, f"chunks do not share one created: {created}"
    assert all(type(c.created) is int and c.created > 0 for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == model for c in chunks), [c.model for c in chunks]


def collect_choice(chunks: list, index: int = 0) -> tuple[list, str, list]:
    """(deltas of choice ``index`` in order, concatenated content, finish reasons in order)."""
    deltas, finishes = [], []
    for c in chunks:
        for ch in c.choices:
            if ch.index == index:
                deltas.append(ch.delta)
                finishes.append(ch.finish_reason)
    content = "".join(d.content or "" for d in deltas)
    return deltas, content, finishes


# --------------------------------------------------------------------------- echo


def test_echo_non_stream_content_usage_and_headers(client: openai.OpenAI) -> None:
    system = "Answer briefly please"
    user = "the quick brown fox jumps"
    raw = client.chat.completions.with_raw_response.create(
        model="echo/anything",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert_gateway_headers(raw.headers, provider="echo", model="anything")

    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model == "echo/anything"
    assert resp.id
    assert type(resp.created) is int and resp.created > 0
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == user
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == words(system) + words(user)
    assert resp.usage.completion_tokens == words(user)
    assert resp.usage.total_tokens == words(system) + 2 * words(user)


def test_echo_request_id_is_echoed_back(client: openai.OpenAI) -> None:
    rid = "e2e-" + uuid.uuid4().hex
    raw = client.chat.completions.with_raw_response.create(
        model="echo/x",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-ID": rid},
    )
    assert raw.headers["x-request-id"] == rid
    assert raw.parse().choices[0].message.content == "hi"


def test_echo_text_parts_are_joined(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo/parts",
        messages=[
            {"role": "user", "content": "ignored earlier message"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "second"}]},
        ],
    )
    assert resp.choices[0].message.content == "first part second"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 3 + 1 + 3
    assert resp.usage.completion_tokens == 3


def test_echo_stream(client: openai.OpenAI) -> None:
    text = "streaming is word by word here"
    raw = client.chat.completions.with_raw_response.create(
        model="echo/stream-model",
        messages=[{"role": "user", "content": text}],
        stream=True,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_gateway_headers(raw.headers, provider="echo", model="stream-model")
    chunks = list(raw.parse())

    assert_chunk_envelope(chunks, "echo/stream-model")
    deltas, content, finishes = collect_choice(chunks)
    assert content == text
    assert deltas[0].role == "assistant"
    # the content arrives in several pieces (word by word), not in one
    assert sum(1 for d in deltas if d.content) == words(text)
    # finish_reason: null until the last chunk of the choice, which says stop
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1]), finishes
    assert all(c.usage is None for c in chunks), "no chunk may carry usage without include_usage"
    assert all(c.choices for c in chunks), "no usage-only chunk without include_usage"


def test_echo_stream_include_usage(client: openai.OpenAI) -> None:
    text = "count these five words"
    prompt = "sys prompt"
    stream = client.chat.completions.create(
        model="echo/u",
        messages=[{"role": "developer", "content": prompt}, {"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert_chunk_envelope(chunks, "echo/u")
    _, content, finishes = collect_choice(chunks)
    assert content == text
    assert finishes[-1] == "stop"

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == words(prompt) + words(text)
    assert last.usage.completion_tokens == words(text)
    assert last.usage.total_tokens == words(prompt) + 2 * words(text)
    with_usage = [i for i, c in enumerate(chunks) if c.usage is not None]
    assert with_usage == [len(chunks) - 1], f"usage on chunks {with_usage}, expected only the last"
    assert sum(1 for c in chunks if not c.choices) == 1


def test_echo_n_choices_non_stream(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo/n", messages=[{"role": "user", "content": "two identical answers"}], n=2
    )
    assert [c.index for c in resp.choices] == [0, 1]
    assert [c.message.content for c in resp.choices] == ["two identical answers"] * 2
    assert [c.finish_reason for c in resp.choices] == ["stop", "stop"]


def test_echo_n_choices_stream(client: openai.OpenAI) -> None:
    text = "alpha beta gamma"
    chunks = list(
        client.chat.completions.create(
            model="echo/n", messages=[{"role": "user", "content": text}], n=2, stream=True
        )
    )
    assert_chunk_envelope(chunks, "echo/n")
    seen = {ch.index for c in chunks for ch in c.choices}
    assert seen == {0, 1}
    for i in (0, 1):
        deltas, content, finishes = collect_choice(chunks, i)
        assert deltas[0].role == "assistant", f"choice {i}: first delta has no role"
        assert content == text, f"choice {i}"
        assert finishes[-1] == "stop"
        assert all(f is None for f in finishes[:-1])


def test_echo_max_tokens_cut(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo/cut", messages=[{"role": "user", "content": "one two three four five"}], max_tokens=3
    )
    assert resp.choices[0].message.content == "one two three"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


def test_echo_max_completion_tokens_cut_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="echo/cut",
            messages=[{"role": "user", "content": "one two three four five"}],
            max_completion_tokens=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    _, content, finishes = collect_choice(chunks)
    assert content == "one two"
    assert finishes[-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2


def test_echo_not_cut_when_max_tokens_is_enough(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo/cut", messages=[{"role": "user", "content": "one two three"}], max_tokens=3
    )
    assert resp.choices[0].message.content == "one two three"
    assert resp.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------ mock upstream


def test_mock_non_stream(client: openai.OpenAI, upstream: mu.MockUpstream) -> None:
    tag = marker()
    raw = client.chat.completions.with_raw_response.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": f"hello {tag}"}], temperature=0.2
    )
    assert raw.status_code == 200
    assert_gateway_headers(raw.headers, provider="mock", model="gpt-4o-mini")
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model == MOCK_MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == mu.REPLY
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == mu.PROMPT_TOKENS
    assert resp.usage.completion_tokens == mu.COMPLETION_TOKENS
    assert resp.usage.total_tokens == mu.PROMPT_TOKENS + mu.COMPLETION_TOKENS
    assert resp.system_fingerprint == mu.SYSTEM_FINGERPRINT  # provider extras kept as-is

    reqs = upstream.find(tag)
    assert len(reqs) == 1, f"the upstream got {len(reqs)} requests for this call"
    req = reqs[0]
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "gpt-4o-mini"
    assert req["body"]["messages"] == [{"role": "user", "content": f"hello {tag}"}]
    assert req["body"]["temperature"] == 0.2
    assert not req["body"].get("stream")


def test_mock_stream(client: openai.OpenAI, upstream: mu.MockUpstream) -> None:
    tag = marker()
    raw = client.chat.completions.with_raw_response.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": tag}], stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_gateway_headers(raw.headers, provider="mock", model="gpt-4o-mini")
    chunks = list(raw.parse())
    assert_chunk_envelope(chunks, MOCK_MODEL)
    deltas, content, finishes = collect_choice(chunks)
    assert content == mu.REPLY
    assert deltas[0].role == "assistant"
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    # the client did not ask for usage: none may reach it (even though the upstream sent one)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)

    reqs = upstream.find(tag)
    assert len(reqs) == 1
    body = reqs[0]["body"]
    assert body["stream"] is True
    assert body["model"] == "gpt-4o-mini"
    assert (body.get("stream_options") or {}).get("include_usage") is True, body


def test_mock_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MOCK_MODEL,
            messages=[{"role": "user", "content": "usage please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert_chunk_envelope(chunks, MOCK_MODEL)
    _, content, _ = collect_choice(chunks)
    assert content == mu.REPLY
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == mu.PROMPT_TOKENS
    assert last.usage.completion_tokens == mu.COMPLETION_TOKENS
    assert last.usage.total_tokens == mu.PROMPT_TOKENS + mu.COMPLETION_TOKENS
    assert [i for i, c in enumerate(chunks) if c.usage is not None] == [len(chunks) - 1]


def test_mock_streamed_tool_call_with_sdk_helper(client: openai.OpenAI) -> None:
    chunks = []
    arg_done_events = []
    with client.chat.completions.stream(
        model=MOCK_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        for event in stream:
            if event.type == "chunk":
                chunks.append(event.chunk)
            elif event.type == "tool_calls.function.arguments.done":
                arg_done_events.append(event)
        final = stream.get_final_completion()

    assert_chunk_envelope(chunks, MOCK_MODEL)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == mu.TOOL_CALL_ID
    assert call.type == "function"
    assert call.function.name == mu.TOOL_NAME
    assert json.loads(call.function.arguments) == mu.TOOL_ARGUMENTS
    assert call.function.parsed_arguments == mu.TOOL_ARGUMENTS  # strict tool: the SDK parsed it

    assert len(arg_done_events) == 1
    assert arg_done_events[0].name == mu.TOOL_NAME
    assert json.loads(arg_done_events[0].arguments) == mu.TOOL_ARGUMENTS


def test_mock_streamed_tool_call_deltas(client: openai.OpenAI, upstream: mu.MockUpstream) -> None:
    tag = marker()
    chunks = list(
        client.chat.completions.create(
            model=MOCK_MODEL,
            messages=[{"role": "user", "content": f"weather? {tag}"}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            stream=True,
        )
    )
    assert_chunk_envelope(chunks, MOCK_MODEL)
    deltas, _, finishes = collect_choice(chunks)
    assert deltas[0].role == "assistant"
    assert finishes[-1] == "tool_calls"
    assert all(f is None for f in finishes[:-1])

    tc_deltas = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(tc_deltas) >= 2, "the tool call should arrive over several deltas"
    assert all(tc.index is not None for tc in tc_deltas), "every tool-call delta must carry index"
    first = tc_deltas[0]
    assert first.id == mu.TOOL_CALL_ID
    assert first.type == "function"
    assert first.function is not None and first.function.name == mu.TOOL_NAME

    # manual accumulation by index, as clients do
    calls: dict[int, dict] = {}
    for tc in tc_deltas:
        acc = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
        if tc.id:
            acc["id"] = tc.id
        if tc.function and tc.function.name:
            acc["name"] = tc.function.name
        if tc.function and tc.function.arguments:
            acc["arguments"] += tc.function.arguments
    assert list(calls) == [0]
    assert calls[0]["id"] == mu.TOOL_CALL_ID
    assert calls[0]["name"] == mu.TOOL_NAME
    assert json.loads(calls[0]["arguments"]) == mu.TOOL_ARGUMENTS

    reqs = upstream.find(tag)
    assert len(reqs) == 1
    sent_tools = reqs[0]["body"].get("tools")
    assert sent_tools and sent_tools[0]["function"]["name"] == mu.TOOL_NAME
    assert reqs[0]["body"].get("tool_choice") == "auto"


def test_mock_non_stream_tool_call(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MOCK_MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == mu.TOOL_CALL_ID
    assert call.function.name == mu.TOOL_NAME
    assert json.loads(call.function.arguments) == mu.TOOL_ARGUMENTS


def test_upstream_gets_provider_key_never_gateway_key(client: openai.OpenAI, upstream: mu.MockUpstream) -> None:
    tag = marker()
    client.chat.completions.create(model=MOCK_MODEL, messages=[{"role": "user", "content": tag}])
    list(client.chat.completions.create(model=MOCK_MODEL, messages=[{"role": "user", "content": tag}], stream=True))
    reqs = upstream.find(tag)
    assert len(reqs) == 2
    for req in reqs:
        assert req["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"
        for name, value in req["headers"].items():
            assert GATEWAY_KEY not in value, f"the gateway key leaked upstream in header {name}"
        assert GATEWAY_KEY not in json.dumps(req["body"])
    # and over the whole session, no request to the upstream ever carried it
    for req in upstream.snapshot():
        assert all(GATEWAY_KEY not in v for v in req["headers"].values())


# ------------------------------------------------------------------------ errors


def test_wrong_gateway_key_is_401(gateway) -> None:
    bad = openai.OpenAI(base_url=gateway.base_url, api_key="sk-wrong", timeout=CLIENT_TIMEOUT_S, max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "hi"}])
    finally:
        bad.close()
    err = exc.value
    assert err.status_code == 401
    assert err.code == "invalid_api_key"
    assert err.response.headers["content-type"].startswith("application/json")


def test_missing_gateway_key_is_401(gateway) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "echo/x", "messages": [{"role": "user", "content": "hi"}]},
        timeout=CLIENT_TIMEOUT_S,
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    err = exc.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert "nope" in err.message


def test_unknown_model_stream_is_404_before_streaming(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert exc.value.code == "model_not_found"


def test_temperature_out_of_range_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="echo/x", messages=[{"role": "user", "content": "hi"}], temperature=5)
    err = exc.value
    assert err.status_code == 400
    assert err.param == "temperature"
    assert err.type == "invalid_request_error"
    assert "temperature" in err.message


def test_invalid_message_names_field_path(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="echo/x",
            messages=[{"role": "user", "content": "hi"}, {"role": "user"}],  # type: ignore[list-item]
        )
    assert exc.value.param is not None and exc.value.param.startswith("messages[1]"), exc.value.param


def test_nugen_path_validation_error_is_422(gateway) -> None:
    r = httpx.post(
        gateway.url + "/api/v3/inference/chat/completions",
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        json={"model": "echo/x", "messages": [{"role": "bogus", "content": "hi"}]},
        timeout=CLIENT_TIMEOUT_S,
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    for item in detail:
        assert item["loc"][0] == "body", item
        assert isinstance(item["msg"], str) and item["msg"]
        assert isinstance(item["type"], str) and item["type"]
    assert detail[0]["loc"][:2] == ["body", "messages"]


def test_nugen_path_valid_request_works(gateway) -> None:
    r = httpx.post(
        gateway.url + "/api/v3/inference/chat/completions",
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        json={"model": "echo/nugen", "messages": [{"role": "user", "content": "via nugen dialect"}]},
        timeout=CLIENT_TIMEOUT_S,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo/nugen"
    assert body["choices"][0]["message"]["content"] == "via nugen dialect"


def test_healthz_needs_no_key(gateway) -> None:
    r = httpx.get(gateway.url + "/healthz", timeout=CLIENT_TIMEOUT_S)
    assert r.status_code == 200
    assert r.headers.get("x-request-id")
