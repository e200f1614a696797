"""A crash-looping container caught while it runs again still shows how its last run ended:
the engine's "die" events keep the exit code its State has already reset to 0."""

from __future__ import annotations

import subprocess
import time

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo, Engine

pytestmark = pytest.mark.docker

BUSYBOX = "moonmind/busybox:1"


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


def test_one_events_query_gives_the_last_exit_and_reads_its_sigkill(engine: Engine) -> None:
    """What analyze asks: the last run's exit code and whether its SIGKILL was the OOM
    killer's, from one events query, the same as the two separate queries say."""
    # Each run SIGKILLs a child from inside (no "kill" event) in a memory-limited container.
    script = 'sleep 2; /bin/busybox sh -c "kill -9 \\$\\$"; exit $?'
    cid = subprocess.run(
        ["docker", "run", "-d", "--restart", "always", "--memory", "64m", "--network", "none",
         BUSYBOX, "/bin/busybox", "sh", "-c", script],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    try:
        info = _running_again(engine, cid)
        assert (info.exit_code, info.oom_killed) == (0, False)
        combined = engine.with_exit_evidence(info)
        assert (combined.exit_code, combined.signal, combined.oom_killed) == (137, 9, True)
        assert combined == engine.with_oom_event(engine.with_last_exit(info))
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
