"""Verify's readiness watch against a real container that starts answering late."""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
)
from moonmind.workflows.orchestrator.adapters.docker_engine import Engine, EngineUnavailable
from moonmind.workflows.orchestrator.adapters.readiness import Schedule, Target, watch_ready

pytestmark = pytest.mark.docker

BUSYBOX = Path("/bin/busybox")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def late_service(tmp_path: Path) -> Iterator[tuple[Compose, int]]:
    """A busybox httpd that waits 1 s after its start before it listens."""
    if not BUSYBOX.exists():
        pytest.skip("static busybox not installed")
    try:
        command = tuple(detect_compose_command())
        Engine.connect().close()
    except (ComposeError, EngineUnavailable) as exc:
        pytest.skip(str(exc))
    port = _free_port()
    ctx = tmp_path / "late"
    (ctx / "www").mkdir(parents=True)
    shutil.copy2(BUSYBOX, ctx / "busybox")
    (ctx / "www" / "index.html").write_text("late\n")
    script = f"sleep 1; exec /busybox httpd -f -p 127.0.0.1:{port} -h /www"
    cmd = json.dumps(["/busybox", "sh", "-c", script])
    (ctx / "Dockerfile").write_text(
        f"FROM scratch\nCOPY busybox /busybox\nCOPY www /www\nCMD {cmd}\n"
    )
    spec = {
        "services": {"late": {"build": "./late", "network_mode": "host", "stop_signal": "SIGKILL"}}
    }
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(yaml.safe_dump(spec))
    compose = Compose(command, f"mmlate{uuid.uuid4().hex[:10]}", compose_file, tmp_path)
    lines: list[str] = []
    assert compose.run(["build", "late"], lines.append) == 0, lines
    try:
        yield compose, port
    finally:
        compose.run(["down", "-v", "--rmi", "local", "--remove-orphans"], lines.append)


def test_healthy_on_the_first_probe_after_the_service_answers(
    late_service: tuple[Compose, int],
) -> None:
    compose, port = late_service
    lines: list[str] = []
    assert compose.run(["up", "-d", "late"], lines.append) == 0, lines
    with Engine.connect() as engine:
        log: list[str] = []
        result = watch_ready(
            lambda: engine.container_for(compose.project, "late"),
            Target(health_url=f"http://127.0.0.1:{port}/", stable_s=0.0, deadline_s=30),
            Schedule(),
            log.append,
        )
        info = engine.container_for(compose.project, "late")
    assert result.ok, (result.reason, log)
    outcomes = [attempt.ok for attempt in result.attempts]
    assert outcomes[-1] is True
    assert len(outcomes) > 1  # it answered late ...
    assert not any(outcomes[:-1])  # ... and no answer was missed
    assert info is not None
    assert result.stability["container_id"] == info.id
    assert result.stability["started_at"] == info.started_at
    assert sum(line.startswith("probe #") for line in log) == len(outcomes)
