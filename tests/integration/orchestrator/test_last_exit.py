"""A crash-looping container caught while it runs again still shows how its last run ended:
the engine's "die" events keep the exit code its State has already reset to 0."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo, Engine

pytestmark = pytest.mark.docker

BUSYBOX = "moonmind/busybox:1"


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine.connect()
    yield engine
    engine.close()


def _running_again(engine: Engine, cid: str) -> ContainerInfo:
    """The container inspected while it runs after at least one restart."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = ContainerInfo.from_attrs(engine._client.api.inspect_container(cid))
        if info.restart_count >= 1 and info.status == "running":
            return info
        time.sleep(0.05)
    raise AssertionError(f"{cid} never ran again after a restart")


def test_a_restarted_container_shows_its_last_runs_exit_code(engine: Engine) -> None:
    cid = subprocess.run(
        ["docker", "run", "-d", "--restart", "always", "--network", "none", BUSYBOX,
         "/bin/busybox", "sh", "-c", "sleep 2; exit 2"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    try:
        info = _running_again(engine, cid)
        assert info.exit_code == 0  # what State says of the run in progress
        assert engine.with_last_exit(info).exit_code == 2
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_a_container_that_never_restarted_is_left_as_it_is(engine: Engine) -> None:
    cid = subprocess.run(
        ["docker", "run", "-d", "--network", "none", BUSYBOX, "/bin/busybox", "sleep", "30"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    try:
        info = ContainerInfo.from_attrs(engine._client.api.inspect_container(cid))
        assert engine.with_last_exit(info) == info
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
