"""``GET /metrics`` of the real binary after mixed traffic (ok, 4xx, upstream 5xx with a retry,
streams, cache hits): ``promtool check metrics`` accepts the scrape, and every counter moved by
exactly the number of requests sent.

The gateway here is this module's own process (not the session one), so no other test's
traffic is in its counters. ``promtool`` comes from Debian's ``prometheus`` package, which
``scripts/test`` installs when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from conftest import GATEWAY_KEY, PROVIDERS, _binary, _free_port, _stop, _wait_healthy
from mock_upstream import MockUpstream

MOCK = PROVIDERS["openai"]  # provider `mock`, kind openai


class _Failing(BaseHTTPRequestHandler):
    """An upstream that answers every request with 500."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def failing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def gateway_url(upstream: MockUpstream, failing: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("metrics")
    config = workdir / "llmgate.toml"
    config.write_text(
        f"""\
[server]
circuit_failures = 4

[providers.echo]
kind = "echo"

[providers.{MOCK.name}]
kind = "openai"
base_url = "{upstream.base_url}"
api_key = "{MOCK.api_key}"

[providers.bad]
kind = "openai"
base_url = "{failing}"
api_key = "sk-bad"

[models.flaky]
targets = [{{ provider = "bad", model = "m" }}]
retry = {{ attempts = 2, on_status = [500], backoff_ms = 1 }}

[auth]
keys = [{{ name = "e2e", key = "{GATEWAY_KEY}", models = ["*"] }}]
"""
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "llmgate.log", "wb") as log:
        proc = subprocess.Popen(
            [str(_binary()), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _wait_healthy(proc, url, time.monotonic() + 20), (workdir / "llmgate.log").read_text()
        yield url
    finally:
        _stop(proc)


def _post(url: str, body: dict, key: str | None = GATEWAY_KEY) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line."""
    out = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def _ask(model: str, text: str = "hello metrics", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _send_mixed_traffic(url: str) -> None:
    for _ in range(3):
        assert _post(url, _ask("echo/echo"))[0] == 200
    for _ in range(2):
        status, body = _post(url, _ask(MOCK.model, stream=True, stream_options={"include_usage": True}))
        assert status == 200 and body.endswith(b"data: [DONE]\n\n"), body
    for _ in range(2):
        assert _post(url, _ask("no-such-model"))[0] == 404
    assert _post(url, _ask("echo/echo"), key=None)[0] == 401
    for _ in range(2):
        assert _post(url, _ask("flaky"))[0] == 502
    cached = _ask("echo/echo", "cache me please", cache={"type": "exact_match", "ttl": 60})
    for _ in range(3):
        assert _post(url, cached)[0] == 200


def _expected_deltas() -> dict[str, float]:
    ok = 'llmgate_requests_total{ingress="openai",model="%s",provider="%s",key="%s",code="%s"}'
    return {
        # 3 plain + the cache miss; the 2 hits have no upstream: provider none.
        ok % ("echo/*", "echo", "e2e", "200"): 4,
        ok % ("echo/*", "none", "e2e", "200"): 2,
        ok % ("mock/*", "mock", "e2e", "200"): 2,
        ok % ("unknown", "none", "e2e", "404"): 2,
        ok % ("unknown", "none", "none", "401"): 1,
        ok % ("flaky", "bad", "e2e", "502"): 2,
        'llmgate_upstream_requests_total{provider="echo",outcome="ok"}': 4,
        'llmgate_upstream_requests_total{provider="mock",outcome="ok"}': 2,
        'llmgate_upstream_requests_total{provider="bad",outcome="error"}': 4,
        'llmgate_retries_total{model="flaky"}': 2,
        'llmgate_cache_lookups_total{result="hit"}': 2,
        'llmgate_cache_lookups_total{result="miss"}': 1,
        'llmgate_time_to_first_token_seconds_count{model="mock/*",provider="mock"}': 2,
        'llmgate_request_duration_seconds_count{ingress="openai",model="flaky",provider="bad"}': 2,
        'llmgate_overhead_seconds_count{ingress="openai"}': 13,
    }


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (scripts/test does)")
    return path


def test_a_scrape_after_mixed_traffic_passes_promtool_and_counts_exactly(gateway_url: str, tmp_path: Path) -> None:
    promtool = _promtool()
    before = _samples(_scrape(gateway_url))
    _send_mixed_traffic(gateway_url)
    expected = _expected_deltas()
    # A request is recorded when its response body is dropped, a moment after the client
    # has read it: poll briefly.
    deadline = time.monotonic() + 5
    while True:
        text = _scrape(gateway_url)
        after = _samples(text)
        deltas = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in expected}
        if deltas == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert deltas == expected, text
    assert after['llmgate_active_requests{ingress="openai"}'] == 0
    assert after["llmgate_active_streams"] == 0
    assert after['llmgate_build_info{version="0.1.0"}'] == 1
    assert after["llmgate_state_backend_up"] == 1
    assert after['llmgate_spend_usd_total{key="e2e"}'] == 0
    # Two requests of two failing tries each: the fourth failure ejected the target.
    assert after['llmgate_target_ejected{target="bad/m"}'] == 1

    scrape = tmp_path / "scrape.txt"
    scrape.write_text(text)
    with open(scrape, "rb") as stdin:
        checked = subprocess.run([promtool, "check", "metrics"], stdin=stdin, capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode() + "\n" + text


def test_the_example_scrape_config_is_valid() -> None:
    config = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
    checked = subprocess.run([_promtool(), "check", "config", str(config)], capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
