"""Helpers shared by the e2e test modules: tools offered, markers, envelope checks."""

from __future__ import annotations

import uuid

import httpx

import mock_upstream as mu

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

TIME_TOOL = {
    "type": "function",
    "function": {
        "name": mu.TIME_TOOL_NAME,
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
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
    assert all(type(c.created) is int and c.created > 0 for c in chunks), [c.created for c in chunks]
    assert all(c.object == "chat.completion.chunk" for c in chunks), [c.object for c in chunks]
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


def accumulate_tool_calls(deltas: list) -> dict[int, dict]:
    """Tool-call deltas joined by ``index``, as clients do: {index: {id, type, name, arguments}}."""
    calls: dict[int, dict] = {}
    for d in deltas:
        for tc in d.tool_calls or []:
            assert tc.index is not None, f"a tool-call delta without index: {tc}"
            acc = calls.setdefault(tc.index, {"id": None, "type": None, "name": None, "arguments": ""})
            if tc.id:
                acc["id"] = tc.id
            if tc.type:
                acc["type"] = tc.type
            if tc.function and tc.function.name:
                acc["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                acc["arguments"] += tc.function.arguments
    return calls
