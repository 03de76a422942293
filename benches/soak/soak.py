"""Chaos soak: many concurrent mixed clients against llmgate while the upstream misbehaves.

Starts a fault-injecting mock upstream (OpenAI shape, standard library only) and the gateway
binary on loopback, runs CLIENTS concurrent clients for DURATION seconds (streams and whole
answers, aliases with retries, fallbacks and hedging, cached and uncached), then checks:

* every client request ended with a complete answer or a clean error (an OpenAI error
  envelope, or a stream that ends with one `data: {"error": ...}` event);
* the gateway's log has no panic;
* file descriptors and RSS come back to their baseline once the load stops.

Usage: python soak.py --bin target/release/llmgate [--duration 60] [--clients 200]
       [--report benches/soak/results/STAMP.md]
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAULTS = {
    # name: weight
    "ok": 60,
    "status_500": 10,
    "status_429": 8,
    "hang": 4,
    "drop_mid_stream": 8,
    "malformed": 6,
    "slow": 4,
}


class Mock:
    """An OpenAI-shaped upstream that injects a random fault per request."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.faults = collections.Counter()
        self.requests = 0

    def pick(self) -> str:
        names, weights = zip(*FAULTS.items())
        fault = self.rng.choices(names, weights)[0]
        self.faults[fault] += 1
        return fault

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                if not await self.answer(body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                asyncio.CancelledError):
            pass  # the peer left, or the soak is over
        finally:
            writer.close()

    async def answer(self, body: dict, writer: asyncio.StreamWriter) -> bool:
        """Answers one request; False when the connection must close."""
        fault = self.pick()
        stream = bool(body.get("stream"))
        if fault == "status_500":
            return await send(writer, 500, {"error": {"message": "injected failure", "type": "server_error"}})
        if fault == "status_429":
            return await send(writer, 429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
                              extra="retry-after: 0\r\n")
        if fault == "hang":
            await asyncio.sleep(3600)
            return False
        if fault == "malformed" and not stream:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"choices")
            await writer.drain()
            return True
        words = ["soak", " test", " answer", " words", " here", "."]
        if not stream:
            if fault == "slow":
                await asyncio.sleep(0.5)
            return await send(writer, 200, completion("".join(words)))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": w}, None) for w in words]
        events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}})
        for i, event in enumerate(events):
            if fault == "drop_mid_stream" and i == 3:
                return False
            if fault == "malformed" and i == 2:
                write_chunk(writer, b"data: {\"choices\": [\n\n")
                continue
            if fault == "slow":
                await asyncio.sleep(0.05)
            write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
            await writer.drain()
        write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def chunk(delta: dict, finish: str | None) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def completion(text: str) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}}


def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def send(writer: asyncio.StreamWriter, status: int, obj: dict, extra: str = "") -> bool:
    data = json.dumps(obj).encode()
    writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n".encode() + data)
    await writer.drain()
    return True


CONFIG = """
[server]
listen = "127.0.0.1:{port}"
stream_idle_timeout_secs = 3
circuit_failures = 5
circuit_cooldown_ms = 2000
max_retry_wait_ms = 1000

[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:{mock}/a/v1"
timeout_ms = 2000

[providers.b]
kind = "openai"
base_url = "http://127.0.0.1:{mock}/b/v1"
timeout_ms = 2000

[providers.echo]
kind = "echo"

[models.retried]
targets = [{{ provider = "a", model = "m1", weight = 2 }}, {{ provider = "b", model = "m2", weight = 1 }}]
fallbacks = ["b/m3"]
retry = {{ attempts = 2, backoff_ms = 10 }}
timeout_ms = 8000

[models.hedged]
targets = [{{ provider = "a", model = "h1" }}, {{ provider = "b", model = "h2" }}]
hedge_after_ms = 300
timeout_ms = 8000

[models.cached]
targets = [{{ provider = "a", model = "c1" }}]
fallbacks = ["echo/fallback"]
cache_ttl_secs = 5
"""


class Outcomes:
    def __init__(self) -> None:
        self.counts = collections.Counter()
        self.unclean: list[str] = []

    def add(self, kind: str, detail: str | None = None) -> None:
        self.counts[kind] += 1
        if kind == "unclean" and len(self.unclean) < 20:
            self.unclean.append(detail or "")


async def http_request(port: int, body: dict, timeout: float) -> tuple[int, bytes]:
    """One POST on its own connection; returns status and the whole (de-chunked) body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = json.dumps(body).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        rest = dechunk(rest)
    return status, rest


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


def judge(status: int, body: bytes, stream: bool) -> tuple[str, str]:
    """(outcome, detail): `ok`, `clean_error` or `unclean`."""
    if status != 200:
        try:
            error = json.loads(body)["error"]
            assert error["message"] and error["code"]
            return "clean_error", ""
        except Exception:  # noqa: BLE001 - any failure to read it is the finding
            return "unclean", f"status {status} without an envelope: {body[:200]!r}"
    if not stream:
        try:
            answer = json.loads(body)
            assert answer["choices"][0]["message"]["content"]
            return "ok", ""
        except Exception:  # noqa: BLE001
            return "unclean", f"200 without a whole answer: {body[:200]!r}"
    events = [e[len("data: "):] for e in body.decode("utf-8", "replace").split("\n\n") if e.startswith("data: ")]
    if events and events[-1] == "[DONE]":
        try:
            chunks = [json.loads(e) for e in events[:-1]]
            text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
            assert text
            return "ok", ""
        except Exception:  # noqa: BLE001
            return "unclean", f"stream ended with [DONE] but chunks are not whole: {body[:300]!r}"
    try:
        error = json.loads(events[-1])["error"]
        assert error["message"]
        return "clean_error", ""
    except Exception:  # noqa: BLE001
        return "unclean", f"stream ended without [DONE] or an error event: {body[-300:]!r}"


async def client(port: int, deadline: float, rng: random.Random, outcomes: Outcomes) -> None:
    while time.monotonic() < deadline:
        model = rng.choice(["retried", "retried", "hedged", "cached", "a/direct", "echo/plain"])
        stream = rng.random() < 0.5
        body = {"model": model, "messages": [{"role": "user", "content": f"question {rng.randrange(20)}"}]}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": rng.random() < 0.5}
        if rng.random() < 0.2:
            body["cache"] = {"type": "exact_match", "ttl": 5}
        try:
            status, data = await http_request(port, body, timeout=30)
        except Exception as error:  # noqa: BLE001
            outcomes.add("unclean", f"transport: {error!r}")
            continue
        outcomes.add(*judge(status, data, stream))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pooled_upstream(mock_port: int) -> int:
    """Open connections to the mock (the gateway's pooled upstream connections, which stay
    idle for the pool's 90 s and are not a leak)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == mock_port and fields[3] == "01":
            count += 1
    return count


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def healthy(port: int) -> bool:
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read(-1)
            writer.close()
            if data.startswith(b"HTTP/1.1 200"):
                return True
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return False


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report")
    args = parser.parse_args()

    mock = Mock(args.seed)
    server = await asyncio.start_server(mock.handle, "127.0.0.1", 0, limit=1 << 20)
    mock_port = server.sockets[0].getsockname()[1]
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="llmgate-soak-"))
    config = workdir / "soak.toml"
    config.write_text(CONFIG.format(port=port, mock=mock_port))
    log_path = workdir / "gateway.log"
    log = log_path.open("wb")
    gateway = subprocess.Popen([args.bin, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "RUST_LOG": "warn", "LLMGATE_LOG_FORMAT": "text"})
    try:
        if not await healthy(port):
            print("the gateway did not come up; log:", log_path.read_text()[-2000:])
            return 1
        # Warm up (pools, caches, allocator), then take the baseline.
        warm = Outcomes()
        await asyncio.gather(*(client(port, time.monotonic() + 3, random.Random(i), warm) for i in range(10)))
        await asyncio.sleep(4)
        base_rss, base_fds = rss_kb(gateway.pid), fds(gateway.pid)
        base_pooled = pooled_upstream(mock_port)
        faults_before = collections.Counter(mock.faults)

        outcomes = Outcomes()
        peak_rss, peak_fds = base_rss, base_fds
        deadline = time.monotonic() + args.duration

        async def sample() -> None:
            nonlocal peak_rss, peak_fds
            while time.monotonic() < deadline:
                peak_rss, peak_fds = max(peak_rss, rss_kb(gateway.pid)), max(peak_fds, fds(gateway.pid))
                await asyncio.sleep(0.5)

        started = time.monotonic()
        await asyncio.gather(sample(), *(client(port, deadline, random.Random(args.seed * 1000 + i), outcomes)
                                         for i in range(args.clients)))
        elapsed = time.monotonic() - started
        # Hung upstream calls end at their timeouts; idle connections close.
        await asyncio.sleep(6)
        after_rss, after_fds = rss_kb(gateway.pid), fds(gateway.pid)
        after_pooled = pooled_upstream(mock_port)
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=40)
        except subprocess.TimeoutExpired:
            gateway.kill()
        log.close()
        server.close()

    text = log_path.read_text(errors="replace")
    panics = text.count("panicked")
    total = sum(outcomes.counts.values())
    injected = collections.Counter(mock.faults)
    injected.subtract(faults_before)
    answered = sum(injected.values())
    checks = {
        "every client got a complete answer or a clean error": outcomes.counts["unclean"] == 0,
        "no panic in the gateway log": panics == 0,
        "file descriptors back to baseline (+5), idle pooled upstream connections aside":
            after_fds - after_pooled <= base_fds - base_pooled + 5,
        "RSS back near baseline (+32 MB)": after_rss <= base_rss + 32 * 1024,
        "the gateway exited cleanly on SIGTERM": gateway.returncode == 0,
    }
    lines = [
        f"# Chaos soak: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{args.clients} concurrent clients for {elapsed:.0f} s against a fault-injecting mock upstream "
        f"(seed {args.seed}); gateway `{args.bin}`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| client requests | {total} ({total / elapsed:.0f}/s) |",
        f"| complete answers | {outcomes.counts['ok']} |",
        f"| clean errors | {outcomes.counts['clean_error']} |",
        f"| unclean endings | {outcomes.counts['unclean']} |",
        f"| upstream requests | {mock.requests} |",
        f"| faults injected | {answered - injected['ok']} of {answered} upstream answers |",
        f"| answers by kind | {', '.join(f'{k} {v}' for k, v in sorted(injected.items()))} |",
        f"| RSS baseline / peak / after | {base_rss / 1024:.1f} / {peak_rss / 1024:.1f} / {after_rss / 1024:.1f} MB |",
        f"| file descriptors baseline / peak / after | {base_fds} / {peak_fds} / {after_fds} |",
        f"| of which idle pooled upstream connections | {base_pooled} / - / {after_pooled} |",
        f"| panics in the log | {panics} |",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()],
    ]
    if outcomes.unclean:
        lines += ["", "Unclean endings (first 20):", "", *[f"- `{u}`" for u in outcomes.unclean]]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
