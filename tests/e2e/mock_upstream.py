"""Loopback mocks of the upstream providers, standard library only.

One ``MockUpstream(dialect)`` serves one provider dialect at that provider's
operation path, answering in that provider's exact shape (``shared/reference/``):

* ``openai`` (``openai-chat-completions.md``) at ``/v1/chat/completions``:
  non-streaming, one ``chat.completion`` object; streaming, ``data: {chunk}``
  events (a role chunk, content chunks, a finish chunk with an empty delta), a
  final usage chunk with ``"choices": []`` when ``stream_options.include_usage``
  is true, then ``data: [DONE]``. Tool-call deltas carry ``index``.
* ``atoma`` (``atoma-chat-completions.md``) at ``/v1/chat/completions``: OpenAI's
  shape plus vLLM's ``stop_reason`` on every choice; like Atoma's proxy, it sends
  the usage chunk on every stream, asked for or not.
* ``nugen`` (``nugen-chat-completions.md``) at ``/api/v3/inference/chat/completions``:
  a FLOAT ``created``; ``confidence_score`` on whole answers; stream chunks have
  no ``object``, the first content chunk carries the role, and the LAST content
  chunk carries ``finish_reason`` and ``usage`` together (no finish chunk, no
  usage-only chunk), as in Nugen's streaming example. Tool-call deltas carry NO
  ``index`` (the gateway must add it). Roles other than system/user/assistant
  are a 422 in Nugen's (FastAPI) shape.
* ``orq`` (``orq-router-chat-completions.md``) at ``/v2/router/chat/completions``:
  OpenAI's shape, but the token counts in ``usage`` are floats (``14.0``).

The answer text is ``REPLY`` (streamed word by word). When the request has
``tools``, the mock calls each function tool offered (in order) instead: see
``tool_calls_for``; each call's arguments JSON is streamed in fragments of
``FRAGMENT_LEN`` characters, ``finish_reason`` is ``tool_calls``. The usage
numbers differ per dialect (``prompt_tokens(dialect)``) so a test can tell whose
usage reached it. ``chunk_delay_s`` makes a stream trickle (a pause before each
event). Every request is recorded (method, path, headers with lower-cased
names, parsed JSON body) in ``MockUpstream.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY_WORDS = ["Hello", " from", " the", " mock", " upstream", "."]
REPLY = "".join(REPLY_WORDS)

TOOL_CALL_ID = "call_mock_weather_1"
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"location": "Paris, France", "unit": "celsius"}
TIME_TOOL_CALL_ID = "call_mock_time_2"
TIME_TOOL_NAME = "get_time"
TIME_TOOL_ARGUMENTS = {"timezone": "Europe/Paris"}
# What the mock answers when it calls a tool: name -> (call id, arguments).
KNOWN_CALLS = {
    TOOL_NAME: (TOOL_CALL_ID, TOOL_ARGUMENTS),
    TIME_TOOL_NAME: (TIME_TOOL_CALL_ID, TIME_TOOL_ARGUMENTS),
}

FRAGMENT_LEN = 7


def _args_json(args: dict[str, Any]) -> str:
    return json.dumps(args, separators=(",", ":"))


def fragments(args: dict[str, Any]) -> list[str]:
    """The arguments JSON split into fragments, as the providers stream them."""
    text = _args_json(args)
    return [text[i : i + FRAGMENT_LEN] for i in range(0, len(text), FRAGMENT_LEN)]


TOOL_ARGUMENT_FRAGMENTS = fragments(TOOL_ARGUMENTS)

DIALECTS = ("openai", "nugen", "atoma", "orq")
# Operation path of each dialect, and what of it the configured base_url already holds
# (the gateway appends openai `/chat/completions` to a base_url ending in /v1, and the
# other kinds' full operation path to the server URL).
PATHS = {
    "openai": "/v1/chat/completions",
    "atoma": "/v1/chat/completions",
    "nugen": "/api/v3/inference/chat/completions",
    "orq": "/v2/router/chat/completions",
}
BASE_PATHS = {"openai": "/v1", "atoma": "", "nugen": "", "orq": ""}
ID_PREFIX = {"openai": "chatcmpl-mock", "atoma": "chatcmpl-atoma", "nugen": "nugen-mock", "orq": "chatcmpl-orq"}
NUGEN_ROLES = ("system", "user", "assistant")
NUGEN_CONFIDENCE = 89.5454

_PROMPT_TOKENS = {"openai": 9, "nugen": 11, "atoma": 13, "orq": 14}
PROMPT_TOKENS = _PROMPT_TOKENS["openai"]
COMPLETION_TOKENS = len(REPLY_WORDS)
TOOL_COMPLETION_TOKENS = len(TOOL_ARGUMENT_FRAGMENTS)
SYSTEM_FINGERPRINT = "fp_mock0001"


def prompt_tokens(dialect: str) -> int:
    return _PROMPT_TOKENS[dialect]


def tool_calls_for(tool_names: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, arguments) of the calls the mock makes when offered these tools."""
    calls = []
    for i, name in enumerate(tool_names):
        call_id, args = KNOWN_CALLS.get(name, (f"call_mock_{i + 1}", {}))
        calls.append((call_id, name, args))
    return calls


def completion_tokens(tool_names: list[str]) -> int:
    """What the mock reports as completion tokens for an answer to these tools (none: text)."""
    if not tool_names:
        return COMPLETION_TOKENS
    return sum(len(fragments(args)) for _, _, args in tool_calls_for(tool_names))


def usage(dialect: str, completion: int) -> dict[str, Any]:
    """The usage object in ``dialect``'s shape."""
    prompt = prompt_tokens(dialect)
    if dialect == "nugen":
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if dialect == "atoma":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": None,
        }
    if dialect == "orq":  # orq's schema types every count as `number`, and it sends floats
        return {
            "prompt_tokens": float(prompt),
            "completion_tokens": float(completion),
            "total_tokens": float(prompt + completion),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0.0, "accepted_prediction_tokens": 0.0, "rejected_prediction_tokens": 0.0},
        }
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _error(message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep quiet
        pass

    @property
    def dialect(self) -> str:
        return self.server.owner.dialect

    # ----------------------------------------------------------------- helpers
    def _send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return b""

    # ---------------------------------------------------------------- routing
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        raw = self._read_body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        self._rec = self.server.owner._record(self.command, self.path, dict(self.headers.items()), body)

        if self.path.rstrip("/") != PATHS[self.dialect]:
            self._send_json(404, _error(f"no route {self.path}"))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, _error("messages is required", "messages"))
            return
        if self.dialect == "nugen":
            detail = self._nugen_validation(body)
            if detail:
                self._send_json(422, {"detail": detail})
                return

        model = body.get("model", "unknown")
        tool_names = [
            t["function"]["name"]
            for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
        ]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, tool_names, include_usage)
        else:
            answer = self._completion(model, tool_names)
            self.server.owner._record_sent(self._rec, answer)
            self._send_json(200, answer)

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner._record(self.command, self.path, dict(self.headers.items()), None)
        self._send_json(404, _error("not found"))

    def _nugen_validation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Nugen's request schema on messages, as its FastAPI server reports it."""
        detail = []
        if not isinstance(body.get("model"), str):
            detail.append({"loc": ["body", "model"], "msg": "Field required", "type": "missing"})
        for i, msg in enumerate(body["messages"]):
            if not isinstance(msg, dict):
                detail.append({"loc": ["body", "messages", i], "msg": "Input should be an object", "type": "model_type"})
                continue
            if msg.get("role") not in NUGEN_ROLES:
                detail.append(
                    {
                        "loc": ["body", "messages", i, "role"],
                        "msg": "Input should be 'system', 'user' or 'assistant'",
                        "type": "enum",
                    }
                )
            if "content" not in msg:
                detail.append({"loc": ["body", "messages", i, "content"], "msg": "Field required", "type": "missing"})
        return detail

    # ------------------------------------------------------------- responses
    def _created(self) -> int | float:
        now = int(time.time())
        return float(now) if self.dialect == "nugen" else now

    def _completion(self, model: str, tool_names: list[str]) -> dict[str, Any]:
        d = self.dialect
        if tool_names:
            calls = []
            for call_id, name, args in tool_calls_for(tool_names):
                calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": _args_json(args)}})
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": REPLY}
            finish = "stop"
        if d in ("openai", "orq"):
            message.update({"refusal": None, "annotations": []})
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if d != "nugen":
            choice["logprobs"] = None
        if d == "atoma":
            choice["stop_reason"] = None
        answer: dict[str, Any] = {
            "id": ID_PREFIX[d] + str(self.server.owner._next_id()),
            "object": "chat.completion",
            "created": self._created(),
            "model": model,
            "choices": [choice],
            "usage": usage(d, completion_tokens(tool_names)),
        }
        if d == "nugen":
            answer["confidence_score"] = NUGEN_CONFIDENCE
        else:
            answer["system_fingerprint"] = SYSTEM_FINGERPRINT
        if d == "openai":
            answer["service_tier"] = "default"
        return answer

    def _stream(self, model: str, tool_names: list[str], include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        d = self.dialect
        chunks = self._nugen_chunks(model, tool_names) if d == "nugen" else self._openai_chunks(model, tool_names, include_usage)
        self.server.owner._record_sent(self._rec, chunks)
        try:
            for c in chunks:
                time.sleep(self.server.owner.chunk_delay_s)
                self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _openai_chunks(self, model: str, tool_names: list[str], include_usage: bool) -> list[dict[str, Any]]:
        """openai, atoma and orq: role chunk, deltas, a finish chunk, then the usage chunk."""
        d = self.dialect
        base: dict[str, Any] = {
            "id": ID_PREFIX[d] + str(self.server.owner._next_id()),
            "object": "chat.completion.chunk",
            "created": self._created(),
            "model": model,
        }
        if d == "openai":
            base.update({"service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT})
        # Atoma's proxy asks its nodes for usage on every stream and passes it on.
        send_usage = include_usage or d == "atoma"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = dict(base)
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            if d == "atoma":
                choice["stop_reason"] = None
            c["choices"] = [choice]
            if send_usage:
                c["usage"] = None
            return c

        chunks: list[dict[str, Any]] = []
        if tool_names:
            for n, (call_id, name, args) in enumerate(tool_calls_for(tool_names)):
                first = {"index": n, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                if n == 0:
                    chunks.append(chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}))
                else:
                    chunks.append(chunk({"tool_calls": [first]}))
                for frag in fragments(args):
                    chunks.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": frag}}]}))
            chunks.append(chunk({}, "tool_calls"))
        else:
            chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            for word in REPLY_WORDS:
                chunks.append(chunk({"content": word}))
            chunks.append(chunk({}, "stop"))
        if send_usage:
            last = dict(base)
            last["choices"] = []
            last["usage"] = usage(d, completion_tokens(tool_names))
            chunks.append(last)
        return chunks

    def _nugen_chunks(self, model: str, tool_names: list[str]) -> list[dict[str, Any]]:
        """Nugen: no `object`, float `created`, role on the first content chunk, and
        finish_reason + usage on the last content chunk; tool-call deltas without index."""
        base: dict[str, Any] = {"id": ID_PREFIX["nugen"] + str(self.server.owner._next_id()), "created": self._created(), "model": model}

        def chunk(delta: dict[str, Any]) -> dict[str, Any]:
            c = dict(base)
            c["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
            return c

        chunks: list[dict[str, Any]] = []
        if tool_names:
            for n, (call_id, name, args) in enumerate(tool_calls_for(tool_names)):
                first: dict[str, Any] = {"tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}
                if n == 0:
                    first["role"] = "assistant"
                chunks.append(chunk(first))
                for frag in fragments(args):
                    chunks.append(chunk({"tool_calls": [{"function": {"arguments": frag}}]}))
            finish = "tool_calls"
        else:
            chunks.append(chunk({"role": "assistant", "content": REPLY_WORDS[0]}))
            for word in REPLY_WORDS[1:]:
                chunks.append(chunk({"content": word}))
            finish = "stop"
        chunks[-1]["choices"][0]["finish_reason"] = finish
        chunks[-1]["usage"] = usage("nugen", completion_tokens(tool_names))
        return chunks


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "MockUpstream"


class MockUpstream:
    """One provider dialect on a loopback port. Start with ``start()``.

    ``base_url`` is what the gateway's config takes as that provider's ``base_url``
    (``http://127.0.0.1:PORT/v1`` for openai, ``http://127.0.0.1:PORT`` for the others).
    """

    def __init__(self, dialect: str = "openai", chunk_delay_s: float = 0.0) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = dialect
        self.chunk_delay_s = chunk_delay_s  # a stream waits this long before each event: a slow model
        self._lock = threading.Lock()
        self._counter = 0
        self.requests: list[dict[str, Any]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + BASE_PATHS[self.dialect]

    @property
    def path(self) -> str:
        """The operation path the gateway must call."""
        return PATHS[self.dialect]

    def start(self) -> "MockUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
        record = {
            "dialect": self.dialect,
            "method": method,
            "path": path,
            # header names are case-insensitive: keep them lower-cased
            "headers": {k.lower(): v for k, v in headers.items()},
            "body": body,
            "sent": None,  # what the mock answered: the JSON object, or the list of stream chunks
        }
        with self._lock:
            self.requests.append(record)
        return record

    def _record_sent(self, record: dict[str, Any], answer: Any) -> None:
        with self._lock:
            record["sent"] = json.loads(json.dumps(answer))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def find(self, marker: str) -> list[dict[str, Any]]:
        """Requests whose JSON body contains ``marker`` anywhere."""
        return [r for r in self.snapshot() if marker in json.dumps(r["body"])]


if __name__ == "__main__":  # manual use: python mock_upstream.py [dialect ...]
    import sys

    mocks = [MockUpstream(d).start() for d in (sys.argv[1:] or DIALECTS)]
    for m in mocks:
        print(m.dialect, m.base_url, "->", m.path, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for m in mocks:
            m.stop()
