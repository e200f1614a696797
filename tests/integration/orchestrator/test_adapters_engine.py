"""Compose CLI + engine adapters against a real Docker engine and a throwaway project.

Images are built FROM scratch with a static busybox so no registry is needed; services use
host networking and listen on free 127.0.0.1 ports.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
    image_name,
)
from moonmind.workflows.orchestrator.adapters.docker_engine import Engine, EngineUnavailable
from moonmind.workflows.orchestrator.adapters.probe import probe_http, wait_container_stable

pytestmark = pytest.mark.docker

BUSYBOX = Path("/bin/busybox")
SERVICES = ("alpha", "beta")


@dataclass(frozen=True)
class Stack:
    """The throwaway compose project plus where each service listens."""

    compose: Compose
    ports: dict[str, int]

    def context(self, service: str) -> Path:
        return self.compose.workspace / service

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/"

    def image(self, service: str) -> str:
        return image_name(self.compose.project, service, {}, self.compose.command)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_context(root: Path, service: str, port: int) -> None:
    ctx = root / service
    (ctx / "www").mkdir(parents=True)
    shutil.copy2(BUSYBOX, ctx / "busybox")
    (ctx / "www" / "index.html").write_text(f"{service} v1\n")
    script = f"echo hello-from-{service}; exec /busybox httpd -f -p 127.0.0.1:{port} -h /www"
    cmd = ["/busybox", "sh", "-c", script]
    dockerfile = f"FROM scratch\nCOPY busybox /busybox\nCOPY www /www\nCMD {json.dumps(cmd)}\n"
    (ctx / "Dockerfile").write_text(dockerfile)


def _service(name: str, port: int) -> dict[str, object]:
    service: dict[str, object] = {
        "build": f"./{name}",
        "network_mode": "host",
        "stop_signal": "SIGKILL",
    }
    if name == "alpha":
        url = f"http://127.0.0.1:{port}/"
        service["healthcheck"] = {
            "test": ["CMD", "/busybox", "wget", "-q", "-O", "/dev/null", url],
            "interval": "1s",
            "timeout": "1s",
            "retries": 3,
        }
    return service


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        eng = Engine.connect()
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    with eng:
        yield eng


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[Stack]:
    if not BUSYBOX.exists():
        pytest.skip("static busybox not installed")
    try:
        command = tuple(detect_compose_command())
    except ComposeError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("compose-project")
    ports = {name: _free_port() for name in SERVICES}
    for name in SERVICES:
        _write_context(root, name, ports[name])
    compose_file = root / "docker-compose.yml"
    spec = {"version": "2.4", "services": {n: _service(n, ports[n]) for n in SERVICES}}
    compose_file.write_text(yaml.safe_dump(spec))
    project = f"mmtest{uuid.uuid4().hex[:10]}"
    compose = Compose(command, project, compose_file, root)
    lines: list[str] = []
    try:
        yield Stack(compose, ports)
    finally:
        compose.run(["down", "-v", "--rmi", "local", "--remove-orphans"], lines.append)
        engine.remove_image(f"{project}-rollback:previous", force=True)


def _collect(stack: Stack, args: list[str]) -> tuple[int, list[str]]:
    lines: list[str] = []
    return stack.compose.run(args, lines.append), lines


def test_config_and_services(stack: Stack) -> None:
    config = stack.compose.config()
    assert stack.compose.services() == ["alpha", "beta"]
    context = config["services"]["alpha"]["build"]["context"]
    assert Path(context).resolve() == stack.context("alpha").resolve()


def test_config_error_carries_stderr(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text("services: [not, a, mapping\n")
    compose = Compose(stack.compose.command, "mmbroken", bad, tmp_path)
    with pytest.raises(ComposeError, match="config failed"):
        compose.config()


def test_run_streams_lines_as_they_come(tmp_path: Path) -> None:
    """A fake 'compose' command proves lines reach the callback before the process ends."""
    script = "echo first; sleep 1.5; echo second"
    fake = Compose(("/bin/sh", "-c", script, "sh"), "p", tmp_path / "x.yml", tmp_path)
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    code = fake.run([], lambda line: arrivals.append((time.monotonic() - started, line)))
    finished = time.monotonic() - started
    assert code == 0
    assert [line for _, line in arrivals] == ["first", "second"]
    assert finished - arrivals[0][0] >= 1.0


def test_run_timeout_kills(tmp_path: Path) -> None:
    fake = Compose(("/bin/sh", "-c", "sleep 30", "sh"), "p", tmp_path / "x.yml", tmp_path)
    started = time.monotonic()
    with pytest.raises(ComposeError, match="timed out"):
        fake.run([], lambda _line: None, timeout_s=0.5)
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def running(stack: Stack, engine: Engine) -> dict[str, list[str]]:
    """Build both services (keeping the streamed lines) and start the whole stack."""
    build_lines: dict[str, list[str]] = {}
    for name in SERVICES:
        lines = build_lines.setdefault(name, [])
        assert stack.compose.build(name, lines.append) == 0, "\n".join(lines)
    code, lines = _collect(stack, ["up", "-d"])
    assert code == 0, "\n".join(lines)
    _assert_stable(engine, stack.compose.project, "alpha", require_healthy=True)
    _assert_stable(engine, stack.compose.project, "beta", require_healthy=False)
    return build_lines


def test_build_streams_lines(running: dict[str, list[str]]) -> None:
    for lines in running.values():
        assert any("COPY" in line for line in lines), lines
        assert all("\n" not in line for line in lines)


def test_services_answer_http(stack: Stack, running: dict[str, list[str]]) -> None:
    for name in SERVICES:
        result = probe_http(stack.url(name), deadline_s=15)
        assert result.ok, result.attempts


def test_up_no_deps_recreates_only_that_service(
    stack: Stack, engine: Engine, running: dict[str, list[str]]
) -> None:
    project = stack.compose.project
    before = engine.services_snapshot(project)
    assert set(before) == {"alpha", "beta"}
    old_image = engine.image_id(stack.image("alpha"))
    assert old_image is not None
    rollback = f"{project}-rollback"
    engine.tag_image(old_image, rollback, "previous")
    assert engine.image_id(f"{rollback}:previous") == old_image
    (stack.context("alpha") / "www" / "index.html").write_text("alpha v2\n")
    lines: list[str] = []
    assert stack.compose.build("alpha", lines.append) == 0, "\n".join(lines)
    assert stack.compose.up_no_deps("alpha", lines.append) == 0, "\n".join(lines)
    after = engine.services_snapshot(project)

    assert after["beta"] == before["beta"]
    assert after["alpha"][0] != before["alpha"][0]
    _assert_stable(engine, project, "alpha", require_healthy=True)
    assert probe_http(stack.url("alpha"), deadline_s=15).ok
    assert httpx.get(stack.url("alpha"), timeout=5).text == "alpha v2\n"
    assert engine.image_id(stack.image("alpha")) != old_image
    assert engine.image_id(f"{rollback}:previous") == old_image


def _assert_stable(engine: Engine, project: str, service: str, *, require_healthy: bool) -> None:
    checks: list[str] = []
    ok, reason = wait_container_stable(
        lambda: engine.container_for(project, service),
        require_healthy=require_healthy,
        deadline_s=60,
        stable_for_s=1.0,
        poll_s=0.25,
        on_check=checks.append,
    )
    assert ok, f"{reason}\n" + "\n".join(checks)


def test_container_info_logs_and_images(
    stack: Stack, engine: Engine, running: dict[str, list[str]]
) -> None:
    project = stack.compose.project
    info = engine.container_for(project, "alpha")
    assert info is not None
    assert info.status == "running"
    assert info.health in {"starting", "healthy"}
    assert info.exit_code == 0
    assert not info.oom_killed
    assert info.started_at
    assert info.name.startswith(project)
    assert "hello-from-alpha" in engine.logs(info.id, tail=50)

    assert engine.image_id(stack.image("alpha")) == info.image_id


def test_missing_things_are_none(stack: Stack, engine: Engine) -> None:
    assert engine.container_for(stack.compose.project, "nope") is None
    assert engine.container_for(f"{stack.compose.project}x", "alpha") is None
    assert engine.image_id(f"{stack.compose.project}-missing:latest") is None
    assert engine.services_snapshot(f"{stack.compose.project}x") == {}


def test_connect_to_missing_socket_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="DOCKER_HOST=unix:///nonexistent.sock"):
        Engine.connect(timeout=2)
    assert time.monotonic() - started < 5


def test_image_for_matches_what_compose_built(
    stack: Stack, engine: Engine, running: dict[str, list[str]]
) -> None:
    for name in SERVICES:
        assert stack.compose.image_for(name) == stack.image(name)
        assert engine.image_id(stack.compose.image_for(name)) is not None


def test_image_name_flavours() -> None:
    v1, v2 = ["docker-compose"], ["docker", "compose"]
    assert image_name("My.Proj", "web", {}, v1) == "myproj_web"
    assert image_name("My.Proj", "web", {}, ["/usr/bin/docker-compose"]) == "myproj_web"
    assert image_name("My.Proj", "web", {}, v2) == "myproj-web"
    assert image_name("p", "web", {"image": "acme/web:1"}, v1) == "acme/web:1"


def test_detect_compose_command() -> None:
    assert detect_compose_command("podman compose --podman-run-args '-q x'") == [
        "podman",
        "compose",
        "--podman-run-args",
        "-q x",
    ]
    detected = detect_compose_command()
    assert detected in (["docker", "compose"], ["docker-compose"])
