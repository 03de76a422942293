"""Session fixtures: one mock upstream per provider dialect and a running llmgate binary.

The gateway's config has the built-in ``echo`` provider and one provider of each
HTTP kind (``PROVIDERS``), each pointed at a ``MockUpstream`` speaking its dialect.

The binary is not built here: ``scripts/test`` runs ``cargo build`` first.
``LLMGATE_BIN`` overrides its path (default ``target/debug/llmgate`` under the
repository root). All traffic stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import openai
import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from mock_upstream import DIALECTS, MockUpstream  # noqa: E402

GATEWAY_KEY = "sk-gateway"
UPSTREAM_KEY = "sk-upstream"


@dataclass(frozen=True)
class Provider:
    """One configured provider of an HTTP kind, pointed at the mock of its dialect."""

    name: str  # the table key in the config, and what clients put before the first `/`
    kind: str  # also the mock's dialect
    api_key: str  # the provider key the gateway must send upstream
    upstream_model: str

    @property
    def model(self) -> str:
        """The name a client sends (only the first `/` splits)."""
        return f"{self.name}/{self.upstream_model}"


PROVIDERS = {
    "openai": Provider("mock", "openai", UPSTREAM_KEY, "gpt-4o-mini"),
    "nugen": Provider("nugen", "nugen", "sk-nugen-upstream", "nugen-flash-instruct"),
    "atoma": Provider("atoma", "atoma", "sk-atoma-upstream", "meta-llama/Llama-3.3-70B-Instruct"),
    "orq": Provider("orq", "orq", "sk-orq-upstream", "openai/gpt-4o"),
}
assert set(PROVIDERS) == set(DIALECTS)

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 20.0

_gateway_log: list[Path] = []  # for the failure report below


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:PORT
    log_path: Path
    config_path: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _binary() -> Path:
    raw = os.environ.get("LLMGATE_BIN", "target/debug/llmgate")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.exit(f"llmgate binary not found at {path}: run `cargo build` or set LLMGATE_BIN", returncode=2)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(upstreams: dict[str, MockUpstream]) -> str:
    providers = "".join(
        f"""
[providers.{p.name}]
kind = "{p.kind}"
base_url = "{upstreams[kind].base_url}"
api_key = "{p.api_key}"
timeout_ms = 10000
"""
        for kind, p in PROVIDERS.items()
    )
    return f"""\
[server]
listen = "127.0.0.1:0"

[providers.echo]
kind = "echo"
{providers}
[auth]
keys = [{{ name = "e2e", key = "{GATEWAY_KEY}", models = ["*"] }}]
"""


def _wait_healthy(proc: subprocess.Popen, url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1.0) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, MockUpstream]]:
    """The mock upstreams by provider kind (= dialect)."""
    mocks: dict[str, MockUpstream] = {}
    try:
        for kind in PROVIDERS:
            mocks[kind] = MockUpstream(kind).start()
        yield mocks
    finally:
        for mock in mocks.values():
            mock.stop()


@pytest.fixture(scope="session")
def upstream(upstreams: dict[str, MockUpstream]) -> MockUpstream:
    """The mock behind provider ``mock`` (kind openai)."""
    return upstreams["openai"]


@pytest.fixture(scope="session")
def gateway(upstreams: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    binary = _binary()
    workdir = tmp_path_factory.mktemp("llmgate")
    config_path = workdir / "llmgate.toml"
    config_path.write_text(_config(upstreams))
    log_path = workdir / "llmgate.log"
    _gateway_log.append(log_path)

    env = dict(os.environ)
    # Neither the environment nor a stray config may change what we test.
    for var in ("LLMGATE_CONFIG", "LLMGATE_LISTEN", "LLMGATE_LOG_FORMAT"):
        env.pop(var, None)
    env["NO_COLOR"] = "1"
    env.setdefault("RUST_LOG", "info")

    last_error = ""
    for _attempt in range(3):  # a chosen free port can be taken in between: retry
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(binary), "serve", "--config", str(config_path), "--listen", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(workdir),
            )
        if _wait_healthy(proc, url, time.monotonic() + STARTUP_TIMEOUT_S):
            gw = Gateway(url=url, log_path=log_path, config_path=config_path)
            try:
                yield gw
            finally:
                _stop(proc)
            return
        _stop(proc)
        last_error = log_path.read_text(errors="replace")
    pytest.fail(f"llmgate did not become healthy; its log:\n{last_error}")


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=gateway.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT_S, max_retries=0)
    try:
        yield c
    finally:
        c.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """On failure, show the tail of the gateway's log to help find the cause."""
    if exitstatus == 0 or not _gateway_log:
        return
    try:
        lines = _gateway_log[-1].read_text(errors="replace").splitlines()
    except OSError:
        return
    terminalreporter.section("llmgate log (last 60 lines)")
    for line in lines[-60:]:
        terminalreporter.write_line(line)
