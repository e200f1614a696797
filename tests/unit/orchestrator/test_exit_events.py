"""Reading a container's "die", "oom" and "kill" events into its exit evidence, including
one query's events read over two windows (docker_engine.Engine.with_exit_evidence)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.exit_events import (
    epoch,
    oom_window,
    signal_of,
    with_died,
    with_oom_verdict,
)
from tests.support.containers import container_info

STARTED = "2026-01-01T00:01:40.5Z"
BEGAN = 1767225700  # STARTED in whole seconds
KILLED = container_info(
    status="exited", exit_code=137, started_at=STARTED, signal=9, memory_limit=64 << 20
)


def event(kind: str, at: int, exit_code: str | None = None) -> dict[str, Any]:
    attributes = {} if exit_code is None else {"exitCode": exit_code}
    return {"Action": kind, "time": at, "Actor": {"Attributes": attributes}}


@pytest.mark.parametrize(
    ("code", "signal"),
    [(137, 9), (143, 15), (129, 1), (0, None), (1, None), (128, None), (255, None)],
)
def test_signal_of_an_exit_code(code: int, signal: int | None) -> None:
    assert signal_of(code) == signal
    attrs = {"State": {"ExitCode": code}}
    assert ContainerInfo.from_attrs(attrs).signal == signal  # the inspect reads it the same way


def test_the_last_die_in_the_window_gives_the_exit_code() -> None:
    running = replace(KILLED, status="running", exit_code=0, signal=None, restart_count=2)
    events = [
        event("die", 90, "3"),  # before the window
        event("die", 100, "137"),
        event("oom", 101),
        event("die", 102, "143"),
        event("kill", 103),
    ]
    last = with_died(running, events, since=100)
    assert (last.exit_code, last.signal) == (143, 15)
    assert with_died(running, events[:1], since=100) == running  # none in the window


@pytest.mark.parametrize(
    ("events", "memory_limit", "oom"),
    [
        ([event("oom", BEGAN)], 0, True),
        ([], 64 << 20, True),  # memory-limited, no one sent the SIGKILL through the engine
        ([event("kill", BEGAN + 1)], 64 << 20, False),
        ([event("kill", BEGAN - 1)], 64 << 20, True),  # a kill of an earlier run
        ([event("oom", BEGAN - 1)], 0, False),
        ([event("die", BEGAN + 1, "137")], 0, False),
    ],
)
def test_an_oom_kill_from_the_events_of_this_run(
    events: list[dict[str, Any]], memory_limit: int, oom: bool
) -> None:
    info = replace(KILLED, memory_limit=memory_limit)
    since = oom_window(info)
    assert since == BEGAN
    assert with_oom_verdict(info, events, since).oom_killed is oom


def test_only_an_unexplained_sigkill_with_a_start_time_is_asked_about() -> None:
    assert oom_window(replace(KILLED, oom_killed=True)) is None
    assert oom_window(replace(KILLED, exit_code=143, signal=15)) is None
    assert oom_window(replace(KILLED, started_at="")) is None
    assert epoch(STARTED) == BEGAN  # the fraction dropped, as the engine's since= wants
