"""What the engine's container events add to an inspect of a container that ended badly.

Two gaps in ``State`` are filled from events: a restarted container that runs again has
reset its exit code to 0 (its "die" events keep the earlier runs' codes), and the OOMKilled
flag can miss a kill the kernel did ("oom" and "kill" events tell). These functions only
read events the engine adapter fetched (docker_engine.Engine); they ask the engine nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo

LAST_EXIT_LOOKBACK_S = 3600  # how far back a restarted container's last "die" is looked for

Event = Mapping[str, Any]


def signal_of(exit_code: int) -> int | None:
    """The signal that ended the process, for an exit code of 128 + a signal number."""
    return exit_code - 128 if 128 < exit_code < 160 else None


def epoch(timestamp: str) -> float | None:
    """Seconds since the epoch of docker's RFC3339Nano timestamp (None if unset)."""
    base = timestamp.rstrip("Z").partition(".")[0]
    try:
        return datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def ran_again(info: ContainerInfo) -> bool:
    """It runs after at least one restart: its State no longer says how the last run ended."""
    return info.restart_count > 0 and info.status == "running"


def oom_window(info: ContainerInfo) -> int | None:
    """From when (whole seconds) "oom" and "kill" events decide whether a SIGKILL was the
    kernel's OOM killer; None when there is nothing to decide (no SIGKILL, already known,
    no start time)."""
    if info.oom_killed or info.signal != 9:
        return None
    began = epoch(info.started_at)
    return None if began is None else int(began)


def _kind(event: Event) -> str:
    return str(event.get("status") or event.get("Action") or "")


def _since(event: Event, since: int) -> bool:
    """The event happened at ``since`` or later (the engine's ``since`` filter, in seconds)."""
    at = event.get("time")
    return at is None or int(at) >= since


def with_died(info: ContainerInfo, events: Iterable[Event], since: int) -> ContainerInfo:
    """``info`` with the exit code of the last "die" event at or after ``since``."""
    died = [
        (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
        for event in events
        if _kind(event) == "die" and _since(event, since)
    ]
    codes = [int(code) for code in died if str(code or "").isdigit()]
    if not codes:
        return info
    code = codes[-1]
    return dataclasses.replace(info, exit_code=code, signal=signal_of(code))


def with_oom_verdict(info: ContainerInfo, events: Iterable[Event], since: int) -> ContainerInfo:
    """``info``, OOM-killed if an "oom" event came at or after ``since``, or if it is
    memory-limited and no "kill" event did (nobody sent the SIGKILL through the engine)."""
    kinds = {_kind(event) for event in events if _since(event, since)}
    oom = "oom" in kinds or (info.memory_limit > 0 and "kill" not in kinds)
    return dataclasses.replace(info, oom_killed=True) if oom else info
