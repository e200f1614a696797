"""An out-of-memory kill is recognised from the engine's "oom" event, not only from the
exit's OOMKilled flag (which can miss the kill when it races the exit)."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo, Engine

pytestmark = pytest.mark.docker

PYTHON = "moonmind/python-base:bookworm"


def _exited(*args: str) -> str:
    cid = subprocess.run(
        ["docker", "run", "-d", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    subprocess.run(["docker", "wait", cid], capture_output=True, check=True, timeout=60)
    return cid


def _info(engine: Engine, cid: str) -> ContainerInfo:
    return ContainerInfo.from_attrs(engine._client.api.inspect_container(cid))


def test_an_oom_event_marks_a_sigkill_as_out_of_memory(engine: Engine) -> None:
    cid = _exited(
        "--memory", "8m", "--memory-swap", "8m",
        PYTHON, "python3", "-c", "chunks = [bytearray(1 << 20) for _ in range(256)]",
    )  # fmt: skip
    try:
        info = _info(engine, cid)
        assert info.signal == 9
        missed = dataclasses.replace(info, oom_killed=False)  # as when the flag lost the race
        assert engine.with_oom_event(missed).oom_killed is True
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


@contextmanager
def _sigkilled(engine: Engine, *limits: str, through_engine: bool) -> Iterator[ContainerInfo]:
    """A container ended by SIGKILL (exit 137) with no OOMKilled flag, removed afterwards:
    sent by `docker kill` (the engine records a "kill" event), or by a process inside it to
    a child whose status PID 1 passes on (PID 1 itself ignores the signal; no event)."""
    inside = ["sh", "-c", 'sh -c "kill -9 \\$\\$"; exit $?']
    cid = subprocess.run(
        ["docker", "run", "-d", *limits, PYTHON, *(["sleep", "300"] if through_engine else inside)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    try:
        if through_engine:
            subprocess.run(["docker", "kill", "-s", "KILL", cid], capture_output=True, check=True)
        subprocess.run(["docker", "wait", cid], capture_output=True, check=True, timeout=60)
        info = _info(engine, cid)
        assert info.signal == 9
        assert info.oom_killed is False
        yield info
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_a_plain_sigkill_stays_a_signal(engine: Engine) -> None:
    with _sigkilled(engine, "--memory", "64m", through_engine=True) as info:
        assert engine.with_oom_event(info).oom_killed is False


@pytest.mark.parametrize(("memory", "oom"), [(["--memory", "64m"], True), ([], False)])
def test_a_sigkill_no_one_sent_through_the_engine(
    engine: Engine, memory: list[str], oom: bool
) -> None:
    """Neither the flag nor an "oom" event (both can lose the race with a process that
    dies at once), no "kill" event either: in a memory-limited container that SIGKILL is
    the kernel's OOM killer; without a limit it stays a signal."""
    with _sigkilled(engine, *memory, through_engine=False) as info:
        assert engine.with_oom_event(info).oom_killed is oom
