"""The status page (``GET /ui``) in a real headless Chromium, driven by selenium.

This module runs its own gateway with an admin key, two gateway keys with limits, and three
aliases: ``chat`` (the echo provider), ``gpt`` (a loopback upstream answering after 20-200 ms)
and ``flaky`` (a loopback upstream answering every request with 500; two failures eject it).
Traffic goes through the official openai SDK. The page must load with no console error, show
the forced-ejected target as ejected, draw key usage bars and the per-model charts, and refuse
a wrong admin key with a clear message. A screenshot goes to ``tests/e2e/output/ui.png``.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``scripts/test``
installs them when missing); selenium is told where both are, so it fetches nothing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import openai
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from conftest import GATEWAY_KEY, _binary, _free_port, _stop, _wait_healthy

ADMIN_KEY = "sk-ui-admin-secret"
BATCH_KEY = "sk-ui-batch"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OUTPUT = Path(__file__).resolve().parent / "output"
WAIT_S = 10
# Seconds of traffic shown before the screenshot; more fill the 60 s charts (the README's
# picture is taken with LLMGATE_UI_DEMO_SECS=50).
DEMO_S = min(55.0, max(0.0, float(os.environ.get("LLMGATE_UI_DEMO_SECS", "8"))))
TRAFFIC_LIMIT_S = DEMO_S + 30  # the background traffic stops by itself after this long at most


class _Upstream(BaseHTTPRequestHandler):
    """``/v1/chat/completions``: 500 on the ``fail`` server, else a small answer after a pause."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.server.fail:  # type: ignore[attr-defined]
            status, body = 500, {"error": {"message": "boom", "type": "server_error"}}
        else:
            time.sleep(random.choice([0.02, 0.03, 0.05, 0.08, 0.2]))
            status, body = 200, {
                "id": "chatcmpl-ui",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100},
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(fail: bool) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.fail = fail  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _config(slow: str, failing: str) -> str:
    return f"""\
[server]
circuit_failures = 2
circuit_cooldown_ms = 120000

[providers.echo]
kind = "echo"

[providers.slow]
kind = "openai"
base_url = "{slow}"
api_key = "sk-up"
prices = {{ "*" = {{ input = 40.0, output = 100.0 }} }}

[providers.bad]
kind = "openai"
base_url = "{failing}"
api_key = "sk-up"

[models.chat]
targets = [{{ provider = "echo", model = "echo" }}]

[models.gpt]
targets = [{{ provider = "slow", model = "m" }}]

[models.flaky]
targets = [{{ provider = "bad", model = "m" }}]
retry = {{ attempts = 1 }}

[auth]
admin_keys = ["{ADMIN_KEY}"]
keys = [
  {{ name = "team-a", key = "{GATEWAY_KEY}", models = ["*"], rpm = 600, tpm = 50000, max_concurrent = 8, budget_usd = 2.0, budget_window = "day" }},
  {{ name = "batch", key = "{BATCH_KEY}", models = ["chat"], rpm = 150 }},
]
"""


@pytest.fixture(scope="module")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    slow, failing = _serve(fail=False), _serve(fail=True)
    workdir = tmp_path_factory.mktemp("ui")
    config = workdir / "llmgate.toml"
    config.write_text(
        _config(f"http://127.0.0.1:{slow.server_address[1]}/v1", f"http://127.0.0.1:{failing.server_address[1]}/v1")
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "llmgate.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(_binary()), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _wait_healthy(proc, url, time.monotonic() + 20), log_path.read_text()
        yield url
    finally:
        _stop(proc)
        slow.shutdown()
        failing.shutdown()
        log = log_path.read_text(errors="replace")
        assert ADMIN_KEY not in log, "the admin key is never logged"


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=20, max_retries=0)


def _force_ejection(url: str) -> None:
    """Two failures in a row eject target ``bad/m``."""
    with _client(url, GATEWAY_KEY) as client:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "hi"}])
            assert raised.value.status_code == 502


class _Traffic:
    """Steady traffic through the SDK in the background, until stopped (or TRAFFIC_LIMIT_S)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_LIMIT_S
        with _client(self.url, GATEWAY_KEY) as team, _client(self.url, BATCH_KEY) as batch:
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                n += 1
                try:
                    team.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": "hello status page " * (n % 5 + 1)}]
                    )
                    team.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
                    if n % 2 == 0:
                        stream = batch.chat.completions.create(
                            model="chat", messages=[{"role": "user", "content": "one two three"}], stream=True
                        )
                        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                except openai.APIError as error:  # a limit reached is fine; anything else is not
                    if getattr(error, "status_code", None) != 429:
                        self.errors.append(error)
                self.stop.wait(0.05 + (n % 7) * 0.03)

    def __enter__(self) -> "_Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=TRAFFIC_LIMIT_S)


@pytest.fixture
def driver() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            pytest.fail(f"{path} not found: install Debian's chromium and chromium-driver (scripts/test does)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,768",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


def _severe(chrome: webdriver.Chrome) -> list[dict]:
    return [entry for entry in chrome.get_log("browser") if entry.get("level") == "SEVERE"]


def _log_in(chrome: webdriver.Chrome, url: str, key: str) -> None:
    chrome.get(url + "/ui")
    field = WebDriverWait(chrome, WAIT_S).until(ec.visibility_of_element_located((By.ID, "admin-key")))
    field.send_keys(key)
    chrome.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def _wait_for(chrome: webdriver.Chrome, css: str, what: str):
    try:
        return WebDriverWait(chrome, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))
    except Exception as error:  # noqa: BLE001 - say what was missing, with the page's text
        raise AssertionError(f"{what}: no {css!r} within {WAIT_S} s; page:\n{chrome.find_element(By.TAG_NAME, 'body').text}") from error


def test_the_status_page_shows_an_ejected_target_usage_and_charts(ui_gateway: str, driver: webdriver.Chrome) -> None:
    with _Traffic(ui_gateway) as traffic:
        _force_ejection(ui_gateway)
        _log_in(driver, ui_gateway, ADMIN_KEY)
        row = _wait_for(driver, 'tr[data-circuit="ejected"]', "the forced-ejected target")
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[0] == "bad/m" and cells[1] == "ejected", cells
        assert cells[2] == "2", cells
        assert cells[3].startswith("in "), cells
        healthy = driver.find_elements(By.CSS_SELECTOR, 'tr[data-circuit="closed"] td.target')
        assert {"echo/echo", "slow/m"} <= {td.text for td in healthy}

        team = _wait_for(driver, '.key[data-key="team-a"]', "key usage")
        assert "requests/min" in team.text and "/ 600" in team.text and "$" in team.text, team.text
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '.key[data-key="team-a"] .bar .fill'), "usage bars"
        )
        _wait_for(driver, '.model[data-model="chat"] svg rect.rps', "the chat model's requests chart")
        _wait_for(driver, '.model[data-model="gpt"] svg polyline.p50', "the gpt model's latency chart")
        assert driver.find_element(By.ID, "config-hash").text not in ("", "–")
        assert "memory" in driver.find_element(By.ID, "backend").text
        assert ADMIN_KEY not in driver.current_url
        assert driver.execute_script("return sessionStorage.getItem('llmgate.adminKey')") == ADMIN_KEY
        # More seconds of traffic fill the charts for the screenshot.
        time.sleep(DEMO_S)
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-circuit="ejected"]'), "still ejected"
        OUTPUT.mkdir(exist_ok=True)
        shot = OUTPUT / "ui.png"
        assert driver.save_screenshot(str(shot)), shot
        print(f"status page screenshot: {shot}")
    assert not traffic.errors, traffic.errors
    severe = _severe(driver)
    assert not severe, f"console errors: {severe}"


def test_a_wrong_admin_key_is_refused_with_a_message_and_forgotten(ui_gateway: str, driver: webdriver.Chrome) -> None:
    _log_in(driver, ui_gateway, GATEWAY_KEY)  # a gateway key, not an admin key
    message = WebDriverWait(driver, WAIT_S).until(ec.visibility_of_element_located((By.ID, "message")))
    WebDriverWait(driver, WAIT_S).until(lambda d: "refused" in message.text, "the refusal message")
    assert "not an admin key" in message.text, message.text
    assert driver.find_element(By.ID, "login").is_displayed()
    assert not driver.find_element(By.ID, "dashboard").is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('llmgate.adminKey')") is None
    # The only console errors are the refused requests themselves.
    others = [e for e in _severe(driver) if "403" not in e.get("message", "")]
    assert not others, others


def test_forget_key_returns_to_the_login(ui_gateway: str, driver: webdriver.Chrome) -> None:
    _log_in(driver, ui_gateway, ADMIN_KEY)
    forget = WebDriverWait(driver, WAIT_S).until(ec.element_to_be_clickable((By.ID, "forget")))
    forget.click()
    WebDriverWait(driver, WAIT_S).until(ec.visibility_of_element_located((By.ID, "admin-key")))
    assert driver.execute_script("return sessionStorage.getItem('llmgate.adminKey')") is None
    assert not _severe(driver)
