"""Follow one run to its end through the API's server-sent events.

`moonmind orchestrator submit --follow` and `make demo` print a run's progress with this
one loop, so both show the same lines: one per step transition, optionally the log
lines, and the final status.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "rolled_back", "cancelled")
# The API sends a keep-alive comment at least this often, so a silent stream is a dead one.
READ_TIMEOUT_S = 60.0

LineSink = Callable[[str], None]


class FollowTimeout(Exception):
    """The run did not finish within the time the caller allowed."""


def _print(line: str) -> None:
    print(line, flush=True)


def iter_events(
    client: httpx.Client,
    api: str,
    run_id: str,
    *,
    deadline: float | None = None,
    idle_timeout: float | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event kind, data) as the API sends them; FollowTimeout once ``deadline`` passes;
    httpx.ReadTimeout after ``idle_timeout`` seconds without a byte (`moonmind runs logs`
    without --follow: what exists so far, then stop)."""
    url = f"{api}/orchestrator/runs/{run_id}/events"
    timeout = None if deadline is None else httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    if idle_timeout is not None:
        timeout = httpx.Timeout(10.0, read=idle_timeout)
    kind = ""
    with client.stream("GET", url, timeout=timeout) as events:
        for line in events.iter_lines():
            if deadline is not None and time.monotonic() > deadline:
                raise FollowTimeout(f"run {run_id} did not finish in time")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))


def step_line(data: dict[str, Any]) -> str:
    """``analyze  succeeded — message``: the step, its new status and why."""
    note = f" — {data['message']}" if data.get("message") else ""
    return f"{data['name']:<8} {data['status']}{note}"


def diagnosis_lines(diagnosis: dict[str, Any] | None) -> list[str]:
    """The run detail's diagnosis as an operator reads it, the pointer run's command last."""
    if not diagnosis:
        return []
    lines = [
        f"diagnosis: {diagnosis['kind']} ({diagnosis['subject']}) [{diagnosis['outcome']}]",
        f"  what to do: {diagnosis['remediation']}",
        f"  evidence:   {diagnosis['evidence']}",
    ]
    if diagnosis.get("also"):
        lines.append(f"  also seen:  {', '.join(diagnosis['also'])}")
    pointer = diagnosis.get("suggested_run")
    if pointer:
        other, instruction = pointer["target_service"], pointer["instruction"]
        lines.append(
            f"  fix {other} first: moonmind orchestrator submit --service "
            f"{shlex.quote(other)} --follow {shlex.quote(instruction)}"
        )
    return lines


def _diagnosis(client: httpx.Client, api: str, run_id: str) -> list[str]:
    try:
        response = client.get(f"{api}/orchestrator/runs/{run_id}")
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    return diagnosis_lines(response.json().get("diagnosis"))


def follow_run(
    client: httpx.Client,
    api: str,
    run_id: str,
    *,
    out: LineSink = _print,
    show_logs: bool = False,
    show_status: bool = True,
    timeout: float | None = None,
    idle_timeout: float | None = None,
) -> str:
    """Print the run's events as they arrive until it ends; its final status.

    "unknown" when the stream ended without one (the API went away).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    status = "unknown"
    events = iter_events(client, api, run_id, deadline=deadline, idle_timeout=idle_timeout)
    for kind, data in events:
        if kind == "step":
            out(step_line(data))
        elif kind == "log" and show_logs:
            out(f"  {data['step']}| {data['line']}")
        elif kind == "status":
            status = str(data["status"])
            if status in TERMINAL and status != "cancelled":  # why, before how it ended
                for line in _diagnosis(client, api, run_id):
                    out(line)
            if show_status:
                note = f" ({data['message']})" if data.get("message") else ""
                out(f"run {status}{note}")
    return status
