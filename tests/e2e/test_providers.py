"""The official ``openai`` SDK against every HTTP provider kind, end to end.

Each test runs once per kind (``openai``, ``nugen``, ``atoma``, ``orq``): the gateway
routes ``"<provider>/<upstream model>"`` to a ``MockUpstream`` speaking that kind's
dialect (``mock_upstream.py``), and the client must see the same normalized OpenAI
shape whatever the dialect (``shared/design/interface.md``, "Normalized output").
The mocks record what they received, so each test also checks the request the
provider got: its operation path, the provider key, the upstream model name and the
dialect's translations.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

import mock_upstream as mu
from conftest import GATEWAY_KEY, PROVIDERS, Provider
from mock_upstream import MockUpstream
from sdk_helpers import (
    TIME_TOOL,
    WEATHER_TOOL,
    accumulate_tool_calls,
    assert_chunk_envelope,
    assert_gateway_headers,
    collect_choice,
    marker,
)

KINDS = list(PROVIDERS)
SESSION_ID = "s-1"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def provider(kind: str) -> Provider:
    return PROVIDERS[kind]


# ----------------------------------------------------------------------- helpers


def upstream_request(upstreams: dict[str, MockUpstream], provider: Provider, tag: str) -> dict[str, Any]:
    """The one request this test's call made, at the provider's mock; checks what every
    upstream request must be: the operation path, the provider's key, the upstream model."""
    for kind, mock in upstreams.items():
        if kind != provider.kind:
            assert mock.find(tag) == [], f"the {kind} mock got a request meant for {provider.name}"
    mock = upstreams[provider.kind]
    reqs = mock.find(tag)
    assert len(reqs) == 1, f"the {provider.kind} mock got {len(reqs)} requests for this call"
    req = reqs[0]
    assert req["method"] == "POST"
    assert req["path"] == mock.path, f"{provider.kind}: called {req['path']}, expected {mock.path}"
    assert req["headers"].get("authorization") == f"Bearer {provider.api_key}"
    assert req["body"]["model"] == provider.upstream_model
    return req


def assert_usage(usage: Any, kind: str, completion_tokens: int) -> None:
    """Integer counts (orq sends floats), the numbers the kind's mock reported."""
    assert usage is not None
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert all(type(n) is int for n in counts), f"usage counts must be integers: {counts!r}"
    prompt = mu.prompt_tokens(kind)
    assert counts == (prompt, completion_tokens, prompt + completion_tokens)


def sent_usage(req: dict[str, Any]) -> dict[str, Any]:
    """The usage the mock put on its stream (there is exactly one)."""
    with_usage = [c["usage"] for c in req["sent"] if c.get("usage")]
    assert len(with_usage) == 1, req["sent"]
    return with_usage[0]


def assert_recent(created: int) -> None:
    assert abs(created - time.time()) < 3600, f"created {created} is not Unix seconds of now"


# ---------------------------------------------------------------- non-streaming


def test_non_stream(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    raw = client.chat.completions.with_raw_response.create(
        model=provider.model, messages=[{"role": "user", "content": f"hello {tag}"}], temperature=0.2
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert_gateway_headers(raw.headers, provider=provider.name, model=provider.upstream_model)
    body = raw.http_response.json()
    resp = raw.parse()

    assert resp.object == "chat.completion"
    assert resp.id
    assert resp.model == provider.model
    assert type(body["created"]) is int, f"created must be an integer: {body['created']!r}"
    assert_recent(resp.created)
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == mu.REPLY
    assert choice.finish_reason == "stop"
    assert_usage(resp.usage, provider.kind, mu.COMPLETION_TOKENS)
    # provider extras are kept as they came
    if provider.kind == "nugen":
        assert body.get("confidence_score") == mu.NUGEN_CONFIDENCE, body
    else:
        assert resp.system_fingerprint == mu.SYSTEM_FINGERPRINT

    req = upstream_request(upstreams, provider, tag)
    assert req["body"]["messages"] == [{"role": "user", "content": f"hello {tag}"}]
    assert req["body"]["temperature"] == 0.2
    assert not req["body"].get("stream")
    if provider.kind == "nugen":
        assert type(req["sent"]["created"]) is float  # what the gateway had to make an integer
        assert resp.created == int(req["sent"]["created"])


def test_non_stream_tool_call(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    resp = client.chat.completions.create(
        model=provider.model, messages=[{"role": "user", "content": f"weather? {tag}"}], tools=[WEATHER_TOOL]
    )
    assert resp.model == provider.model
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == mu.TOOL_CALL_ID
    assert call.type == "function"
    assert call.function.name == mu.TOOL_NAME
    assert json.loads(call.function.arguments) == mu.TOOL_ARGUMENTS
    assert_usage(resp.usage, provider.kind, mu.TOOL_COMPLETION_TOKENS)

    req = upstream_request(upstreams, provider, tag)
    assert req["body"]["tools"][0]["function"]["name"] == mu.TOOL_NAME


# -------------------------------------------------------------------- streaming


def test_stream(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    raw = client.chat.completions.with_raw_response.create(
        model=provider.model, messages=[{"role": "user", "content": tag}], stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_gateway_headers(raw.headers, provider=provider.name, model=provider.upstream_model)
    chunks = list(raw.parse())

    assert_chunk_envelope(chunks, provider.model)
    assert_recent(chunks[0].created)
    deltas, content, finishes = collect_choice(chunks)
    assert content == mu.REPLY
    assert deltas[0].role == "assistant"
    assert all(d.role in (None, "assistant") for d in deltas)
    assert sum(1 for d in deltas if d.content) == len(mu.REPLY_WORDS), "the content arrives in pieces"
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1]), finishes
    # the client did not ask for usage: none may reach it (every mock sent one)
    assert all(c.usage is None for c in chunks), "a chunk carries usage without include_usage"
    assert all(c.choices for c in chunks), "a usage-only chunk without include_usage"

    req = upstream_request(upstreams, provider, tag)
    assert req["body"]["stream"] is True
    # the gateway asks every provider for usage, for itself
    assert (req["body"].get("stream_options") or {}).get("include_usage") is True, req["body"]
    assert sent_usage(req)


def test_stream_include_usage(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    chunks = list(
        client.chat.completions.create(
            model=provider.model,
            messages=[{"role": "user", "content": f"usage please {tag}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert_chunk_envelope(chunks, provider.model)
    deltas, content, finishes = collect_choice(chunks)
    assert content == mu.REPLY
    assert deltas[0].role == "assistant"
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1]), finishes

    with_usage = [i for i, c in enumerate(chunks) if c.usage is not None]
    assert with_usage == [len(chunks) - 1], f"usage on chunks {with_usage}, expected only the last"
    assert [i for i, c in enumerate(chunks) if not c.choices] == [len(chunks) - 1], "exactly one choices:[] chunk, last"
    last = chunks[-1]
    assert last.choices == []
    assert_usage(last.usage, provider.kind, mu.COMPLETION_TOKENS)

    req = upstream_request(upstreams, provider, tag)
    sent = sent_usage(req)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        int(sent["prompt_tokens"]),
        int(sent["completion_tokens"]),
        int(sent["total_tokens"]),
    )
    if provider.kind == "nugen":
        # the mock put usage on its last content chunk, together with finish_reason
        final = req["sent"][-1]
        assert final["choices"] and final["choices"][0]["finish_reason"] == "stop" and final["usage"] == sent
        assert final["choices"][0]["delta"]["content"] == mu.REPLY_WORDS[-1]


# ------------------------------------------------------------ streamed tool calls


def test_streamed_tool_call_with_sdk_helper(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    chunks = []
    arg_done_events = []
    with client.chat.completions.stream(
        model=provider.model,
        messages=[{"role": "user", "content": f"What is the weather in Paris? {tag}"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        for event in stream:
            if event.type == "chunk":
                chunks.append(event.chunk)
            elif event.type == "tool_calls.function.arguments.done":
                arg_done_events.append(event)
        final = stream.get_final_completion()

    assert_chunk_envelope(chunks, provider.model)
    assert final.model == provider.model
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
    upstream_request(upstreams, provider, tag)


def test_streamed_tool_call_deltas(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    tag = marker()
    chunks = list(
        client.chat.completions.create(
            model=provider.model,
            messages=[{"role": "user", "content": f"weather? {tag}"}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            stream=True,
        )
    )
    assert_chunk_envelope(chunks, provider.model)
    deltas, _, finishes = collect_choice(chunks)
    assert deltas[0].role == "assistant"
    assert finishes[-1] == "tool_calls"
    assert all(f is None for f in finishes[:-1]), finishes
    assert all(c.usage is None for c in chunks)

    tc_deltas = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(tc_deltas) >= 2, "the tool call should arrive over several deltas"
    assert all(tc.index is not None for tc in tc_deltas), "every tool-call delta must carry index"
    first = tc_deltas[0]
    assert first.id == mu.TOOL_CALL_ID
    assert first.type == "function"
    assert first.function is not None and first.function.name == mu.TOOL_NAME

    calls = accumulate_tool_calls(deltas)
    assert list(calls) == [0]
    assert calls[0]["id"] == mu.TOOL_CALL_ID
    assert calls[0]["name"] == mu.TOOL_NAME
    assert json.loads(calls[0]["arguments"]) == mu.TOOL_ARGUMENTS

    req = upstream_request(upstreams, provider, tag)
    sent_tools = req["body"].get("tools")
    assert sent_tools and sent_tools[0]["function"]["name"] == mu.TOOL_NAME
    assert req["body"].get("tool_choice") == "auto"
    sent_calls = [tc for c in req["sent"] for ch in c.get("choices", []) for tc in ch["delta"].get("tool_calls") or []]
    if provider.kind == "nugen":
        assert sent_calls and all("index" not in tc for tc in sent_calls), "the nugen mock must send no index"
    else:
        assert sent_calls and all("index" in tc for tc in sent_calls)


def test_streamed_two_tool_calls_with_usage(client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider) -> None:
    """Two calls in one answer: each keeps its own index (for Nugen, which sends none, the
    gateway counts them by their ids), and usage still comes last."""
    tag = marker()
    chunks = list(
        client.chat.completions.create(
            model=provider.model,
            messages=[{"role": "user", "content": f"weather and time in Paris? {tag}"}],
            tools=[WEATHER_TOOL, TIME_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert_chunk_envelope(chunks, provider.model)
    deltas, _, finishes = collect_choice(chunks)
    assert deltas[0].role == "assistant"
    assert finishes[-1] == "tool_calls"
    assert all(f is None for f in finishes[:-1]), finishes

    calls = accumulate_tool_calls(deltas)
    assert sorted(calls) == [0, 1], calls
    expected = {0: (mu.TOOL_CALL_ID, mu.TOOL_NAME, mu.TOOL_ARGUMENTS), 1: (mu.TIME_TOOL_CALL_ID, mu.TIME_TOOL_NAME, mu.TIME_TOOL_ARGUMENTS)}
    for index, (call_id, name, args) in expected.items():
        assert calls[index]["id"] == call_id
        assert calls[index]["type"] == "function"
        assert calls[index]["name"] == name
        assert json.loads(calls[index]["arguments"]) == args, f"call {index}: {calls[index]['arguments']!r}"
    # a call's first delta carries its id, type and name
    for index in (0, 1):
        first = next(tc for d in deltas for tc in (d.tool_calls or []) if tc.index == index)
        assert first.id and first.type == "function" and first.function and first.function.name

    assert [i for i, c in enumerate(chunks) if c.usage is not None] == [len(chunks) - 1]
    assert chunks[-1].choices == []
    assert_usage(chunks[-1].usage, provider.kind, mu.completion_tokens([mu.TOOL_NAME, mu.TIME_TOOL_NAME]))
    upstream_request(upstreams, provider, tag)


# ------------------------------------------------------------- what upstreams get


def test_upstream_gets_provider_key_never_gateway_key(
    client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider
) -> None:
    tag = marker()
    client.chat.completions.create(model=provider.model, messages=[{"role": "user", "content": tag}])
    list(client.chat.completions.create(model=provider.model, messages=[{"role": "user", "content": tag}], stream=True))
    mock = upstreams[provider.kind]
    reqs = mock.find(tag)
    assert len(reqs) == 2
    for req in reqs:
        assert req["headers"].get("authorization") == f"Bearer {provider.api_key}"
        for name, value in req["headers"].items():
            assert GATEWAY_KEY not in value, f"the gateway key leaked upstream in header {name}"
        assert GATEWAY_KEY not in json.dumps(req["body"])
    # and over the whole session, no request to this upstream ever carried it
    for req in mock.snapshot():
        assert all(GATEWAY_KEY not in v for v in req["headers"].values())


def test_max_completion_tokens_and_developer_role(
    client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider
) -> None:
    """Nugen reads ``max_tokens`` and knows no ``developer`` role: the gateway translates
    (the Nugen mock answers 422, as Nugen does, to a role it does not know)."""
    tag = marker()
    resp = client.chat.completions.create(
        model=provider.model,
        messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": tag}],
        max_completion_tokens=50,
    )
    assert resp.model == provider.model
    assert resp.choices[0].message.content == mu.REPLY

    body = upstream_request(upstreams, provider, tag)["body"]
    assert [m["content"] for m in body["messages"]] == ["be brief", tag]
    if provider.kind == "nugen":
        assert body.get("max_tokens") == 50, body
        assert "max_completion_tokens" not in body, body
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
    else:
        assert body.get("max_completion_tokens") == 50, body
        assert "max_tokens" not in body, body
        assert body["messages"][0]["role"] in ("developer", "system")


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("kind", ["nugen", "orq"])
def test_session_id_reaches_nugen_and_orq(
    client: openai.OpenAI, upstreams: dict[str, MockUpstream], provider: Provider, stream: bool
) -> None:
    tag = marker()
    resp = client.chat.completions.create(
        model=provider.model,
        messages=[{"role": "user", "content": tag}],
        extra_headers={"X-Session-ID": SESSION_ID},
        stream=stream,
    )
    if stream:
        _, content, _ = collect_choice(list(resp))
    else:
        content = resp.choices[0].message.content
    assert content == mu.REPLY

    req = upstream_request(upstreams, provider, tag)
    if provider.kind == "nugen":
        assert req["headers"].get("x-session-id") == SESSION_ID, req["headers"]
        assert "orq" not in req["body"]
    else:
        assert (req["body"].get("orq") or {}).get("thread", {}).get("id") == SESSION_ID, req["body"]
