"""Server-sent events for one run, rebuilt from the database and the growing log files.

The worker already records every step transition and streams its logs to disk, so
the API needs no message bus: a follower polls both, remembers what it has sent, and
a client that connects late first receives everything that already happened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api_service.db.base import Database
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import STEP_ORDER, TERMINAL_STATUSES, StepStatus
from moonmind.workflows.orchestrator.storage import ArtifactStore

# Which log file belongs to which step, in the order they are written.
STEP_LOGS = {
    "analyze": ("analyze.log",),
    "patch": ("agent.log",),
    "build": ("build.log",),
    "restart": ("restart.log",),
    "verify": ("verify.log",),
    "rollback": ("rollback.log",),
}


@dataclass(frozen=True)
class Event:
    kind: str  # step | log | status
    data: dict[str, Any]

    def encode(self, event_id: int) -> str:
        return f"id: {event_id}\nevent: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


@dataclass
class RunFollower:
    """Remembers what a client has been sent; each poll yields only what is new."""

    db: Database
    store: ArtifactStore
    run_id: uuid.UUID
    sent_status: dict[str, str] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    def poll(self) -> list[Event]:
        with self.db.session() as session:
            run = repo.get_run(session, self.run_id)
            if run is None:
                self.finished = True
                return [Event("status", {"status": "missing", "message": "run not found"})]
            steps = [dict(step) for step in run.action_plan.steps]
            status, message = run.status.value, run.message
        order = {name.value: index for index, name in enumerate(STEP_ORDER)}
        events: list[Event] = []
        for step in sorted(steps, key=lambda s: order[s["name"]]):
            events.extend(self._step_events(step))
        if status in {s.value for s in TERMINAL_STATUSES}:
            for step in steps:  # whatever the logs gained after the last transition
                events.extend(self._log_events(step["name"]))
            events.append(Event("status", {"status": status, "message": message}))
            self.finished = True
        return events

    def _step_events(self, step: dict[str, Any]) -> Iterator[Event]:
        name, status = step["name"], step["status"]
        previous = self.sent_status.get(name, StepStatus.PENDING.value)
        if status != previous:
            self.sent_status[name] = status
            if previous == StepStatus.PENDING.value and step.get("started_at"):
                # Announce the start even if it also finished between two polls.
                yield Event("step", _step_data(step, StepStatus.IN_PROGRESS.value))
            if status not in (StepStatus.IN_PROGRESS.value, StepStatus.SKIPPED.value):
                yield from self._log_events(name)
                yield Event("step", _step_data(step, status))
            elif status == StepStatus.SKIPPED.value:
                yield Event("step", _step_data(step, status))
            if status != StepStatus.IN_PROGRESS.value:
                return
        if status == StepStatus.IN_PROGRESS.value:
            yield from self._log_events(name)

    def _log_events(self, step: str) -> Iterator[Event]:
        for filename in STEP_LOGS.get(step, ()):
            path = self.store.run_dir(self.run_id) / filename
            for line in self._new_lines(path):
                yield Event("log", {"step": step, "file": filename, "line": line})

    def _new_lines(self, path: Path) -> list[str]:
        offset = self.log_offsets.get(path.name, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except OSError:
            return []
        complete = chunk.rfind(b"\n") + 1  # a partial last line waits for the next poll
        self.log_offsets[path.name] = offset + complete
        return chunk[:complete].decode("utf-8", "replace").splitlines()


def _step_data(step: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "name": step["name"],
        "status": status,
        "started_at": step.get("started_at"),
        "completed_at": step.get("completed_at") if status != "in_progress" else None,
        "message": step.get("message") if status != "in_progress" else None,
    }
