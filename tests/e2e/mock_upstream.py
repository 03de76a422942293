"""A loopback mock of an OpenAI-compatible upstream, standard library only.

It answers ``POST /v1/chat/completions`` the way the OpenAI API does
(``shared/reference/openai-chat-completions.md``):

* non-streaming: one ``chat.completion`` object;
* streaming: ``text/event-stream`` with ``data: {chunk}\\n\\n`` events, a final
  usage chunk with ``"choices": []`` when ``stream_options.include_usage`` is
  true, then ``data: [DONE]\\n\\n``;
* when the request has ``tools``: a tool call (streamed as OpenAI does: the
  first delta carries index, id, type, function.name and empty arguments, the
  following deltas carry argument fragments), ``finish_reason: "tool_calls"``.

The answer text is ``MockUpstream.REPLY``; every request is recorded (method,
path, headers, parsed JSON body) in ``MockUpstream.requests``.
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
# The arguments JSON split into fragments, as OpenAI streams them.
_ARGS_JSON = json.dumps(TOOL_ARGUMENTS, separators=(",", ":"))
TOOL_ARGUMENT_FRAGMENTS = [_ARGS_JSON[i : i + 7] for i in range(0, len(_ARGS_JSON), 7)]

PROMPT_TOKENS = 9
COMPLETION_TOKENS = len(REPLY_WORDS)
TOOL_COMPLETION_TOKENS = len(TOOL_ARGUMENT_FRAGMENTS)
SYSTEM_FINGERPRINT = "fp_mock0001"


def _usage(completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep quiet
        pass

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
        self.server.owner._record(self.command, self.path, dict(self.headers.items()), body)

        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error", "param": None, "code": None}})
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_json(400, {"error": {"message": "messages is required", "type": "invalid_request_error", "param": "messages", "code": None}})
            return

        model = body.get("model", "unknown")
        tools = bool(body.get("tools"))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, tools, include_usage)
        else:
            self._send_json(200, self._completion(model, tools))

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner._record(self.command, self.path, dict(self.headers.items()), None)
        self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}})

    # ------------------------------------------------------------- responses
    def _completion(self, model: str, tools: bool) -> dict[str, Any]:
        if tools:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": _ARGS_JSON},
                    }
                ],
                "refusal": None,
                "annotations": [],
            }
            finish, completion_tokens = "tool_calls", TOOL_COMPLETION_TOKENS
        else:
            message = {"role": "assistant", "content": REPLY, "refusal": None, "annotations": []}
            finish, completion_tokens = "stop", COMPLETION_TOKENS
        return {
            "id": "chatcmpl-mock" + str(self.server.owner._next_id()),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(completion_tokens),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _stream(self, model: str, tools: bool, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        base = {
            "id": "chatcmpl-mock" + str(self.server.owner._next_id()),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = dict(base)
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if include_usage:
                c["usage"] = None
            return c

        chunks: list[dict[str, Any]] = []
        if tools:
            chunks.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": TOOL_CALL_ID,
                                "type": "function",
                                "function": {"name": TOOL_NAME, "arguments": ""},
                            }
                        ],
                        "refusal": None,
                    }
                )
            )
            for frag in TOOL_ARGUMENT_FRAGMENTS:
                chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}))
            chunks.append(chunk({}, "tool_calls"))
            completion_tokens = TOOL_COMPLETION_TOKENS
        else:
            chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            for word in REPLY_WORDS:
                chunks.append(chunk({"content": word}))
            chunks.append(chunk({}, "stop"))
            completion_tokens = COMPLETION_TOKENS
        if include_usage:
            last = dict(base)
            last["choices"] = []
            last["usage"] = _usage(completion_tokens)
            chunks.append(last)

        try:
            for c in chunks:
                self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "MockUpstream"


class MockUpstream:
    """Start with ``start()``; ``base_url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(self) -> None:
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
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

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

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    # header names are case-insensitive: keep them lower-cased
                    "headers": {k.lower(): v for k, v in headers.items()},
                    "body": body,
                }
            )

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def find(self, marker: str) -> list[dict[str, Any]]:
        """Requests whose JSON body contains ``marker`` anywhere."""
        return [r for r in self.snapshot() if marker in json.dumps(r["body"])]


if __name__ == "__main__":  # manual use: python mock_upstream.py
    m = MockUpstream().start()
    print(m.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        m.stop()
