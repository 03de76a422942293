"""The two-replica deployment in ``docker-compose.yml``: Debian's ``docker-compose`` (1.29,
no engine needed) accepts the file, its resolved form has two llmgate replicas running the
same mounted config with one shared Redis and a load balancer in front, and the real gateway
accepts that config (``llmgate check``) with the environment compose gives it.

``docker-compose`` comes from Debian's ``docker-compose`` package, which ``scripts/test``
installs when it is missing. No container is started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT, _binary

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CONFIG_TARGET = "/etc/llmgate/llmgate.toml"
# Variables the compose file reads; unset here so its demo defaults are what is checked.
COMPOSE_VARS = ("LLMGATE_KEY_TEAM_A", "LLMGATE_ADMIN_KEY", "OPENAI_API_KEY", "RUST_LOG")


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose not found: install Debian's `docker-compose` package (scripts/test does)")
    return path


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """``docker-compose config`` output: the file as compose resolves it (variables, anchors)."""
    out = _compose("config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def _mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """target -> (source, read-only) of a service's bind mounts (1.29 prints `src:dst[:mode]`)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):  # long syntax
            if volume.get("type") == "bind":
                mounts[volume["target"]] = (Path(volume["source"]), bool(volume.get("read_only")))
            continue
        parts = volume.split(":")
        if len(parts) >= 2 and parts[0].startswith("/"):
            mounts[parts[1]] = (Path(parts[0]), len(parts) > 2 and "ro" in parts[2].split(","))
    return mounts


def _llmgate_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in resolved["services"].items() if s.get("image") == "llmgate"}


def _gateway_config(service: dict[str, Any]) -> Path:
    source, read_only = _mounts(service)[CONFIG_TARGET]
    assert read_only, f"{CONFIG_TARGET} must be mounted read-only"
    return source


def test_docker_compose_accepts_the_file() -> None:
    out = _compose("config", "-q")
    assert out.returncode == 0, out.stderr


def test_two_replicas_share_one_redis_through_their_mounted_config(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    replicas = _llmgate_services(resolved)
    assert len(replicas) == 2, sorted(services)
    for name, service in replicas.items():
        assert Path(service["build"]["context"]).resolve() == REPO_ROOT.resolve(), name
        assert service["command"][-2:] == ["--config", CONFIG_TARGET], name
        assert "redis" in service["depends_on"], name

    configs = {name: _gateway_config(s) for name, s in replicas.items()}
    assert len(set(configs.values())) == 1, configs  # one file for both
    config_path = next(iter(configs.values()))
    assert config_path == REPO_ROOT / "deploy" / "compose" / "llmgate.toml"
    state = tomllib.loads(config_path.read_text())["state"]
    assert state["backend"] == "redis"
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", state["url"])
    assert match, state["url"]
    host, port = match.group(1), int(match.group(2))
    assert host in services, f"{state['url']} names no compose service"
    assert services[host]["image"].startswith("redis:7"), services[host]["image"]
    assert port == 6379
    assert services[host]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name, service in replicas.items():
        assert service["depends_on"][host]["condition"] == "service_healthy", name


def test_every_variable_the_config_reads_is_set_by_compose(resolved: dict[str, Any]) -> None:
    """An unset `${VAR}` stops llmgate at start, so compose must pass each one (with a default)."""
    for name, service in _llmgate_services(resolved).items():
        text = "\n".join(
            line.split("#", 1)[0] for line in _gateway_config(service).read_text().splitlines()
        )
        wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
        assert wanted, "the config takes its keys from the environment"
        missing = wanted - set(service.get("environment", {}))
        assert not missing, f"{name}: not passed by docker-compose.yml: {sorted(missing)}"
        assert all(service["environment"][var] for var in wanted), f"{name}: an empty default"


def test_a_load_balancer_on_8080_spreads_over_both_replicas(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    replicas = _llmgate_services(resolved)
    lbs = {name: s for name, s in services.items() if s.get("image", "").startswith("nginx:")}
    assert len(lbs) == 1, sorted(services)
    name, lb = next(iter(lbs.items()))
    assert any(p.get("published") in (8080, "8080") for p in lb["ports"]), lb["ports"]
    assert set(replicas) <= set(lb["depends_on"]), lb["depends_on"]
    source, read_only = _mounts(lb)["/etc/nginx/nginx.conf"]
    assert read_only
    conf = source.read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.S)
    assert upstream, "no upstream block"
    servers = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(2), re.M))
    assert servers == {(r, "8080") for r in replicas}, servers
    assert "keepalive" in upstream.group(2)
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in conf, directive
    read_timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", conf)
    assert read_timeout and int(read_timeout.group(1)) >= 600, "streams and long completions need long reads"


def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    assert nginx is not None, "nginx is not installed: scripts/test installs Debian's `nginx` package"
    conf = (REPO_ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    # The compose service names do not resolve here: point them at loopback ports.
    conf = re.sub(r"llmgate-(\d+):8080", lambda m: f"127.0.0.1:{18080 + int(m.group(1))}", conf)
    (tmp_path / "nginx.conf").write_text(conf)
    out = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_the_gateway_accepts_the_compose_config(resolved: dict[str, Any]) -> None:
    """`llmgate check` on the mounted config with exactly the environment compose passes."""
    replicas = _llmgate_services(resolved)
    service = next(iter(replicas.values()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGATE_") and k != "OPENAI_API_KEY"}
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    out = subprocess.run(
        [str(_binary()), "check", "--config", str(_gateway_config(service))],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for secret in (service["environment"]["LLMGATE_KEY_TEAM_A"], service["environment"]["LLMGATE_ADMIN_KEY"]):
        assert secret not in out.stdout + out.stderr, "check printed a key"
