"""End-to-end tests: the official ``openai`` Python SDK against the running gateway.

This module covers the built-in ``echo`` provider and the gateway's own errors and
endpoints; ``test_providers.py`` runs the SDK tests against every HTTP provider
kind through the mock upstreams. See ``shared/design/interface.md``.
"""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from conftest import CLIENT_TIMEOUT_S, GATEWAY_KEY
from sdk_helpers import assert_chunk_envelope, assert_gateway_headers, collect_choice, words

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
