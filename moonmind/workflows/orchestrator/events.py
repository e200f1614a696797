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
from moonmind.workflows.orchestrator import audit
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import (
    STEP_ORDER,
    TERMINAL_STATUSES,
    StepName,
    StepStatus,
)
from moonmind.workflows.orchestrator.plan import Plan, PlanStep
from moonmind.workflows.orchestrator.storage import ArtifactStore

# Which log file belongs to which step, in the order they are written.
STEP_LOGS = {
    StepName.ANALYZE: ("analyze.log",),
    StepName.PATCH: ("agent.log",),
    StepName.BUILD: ("build.log",),
    StepName.RESTART: ("restart.log",),
    StepName.VERIFY: ("verify.log",),
    StepName.ROLLBACK: ("rollback.log",),
}


@dataclass(frozen=True)
class Event:
    kind: str  # step | log | status | audit
    data: dict[str, Any]

    def encode(self, event_id: int) -> str:
        return f"id: {event_id}\nevent: {self.kind}\ndata: {json.dumps(self.data)}\n\n"


@dataclass
class RunFollower:
    """Remembers what a client has been sent; each poll yields only what is new."""

    db: Database
    store: ArtifactStore
    run_id: uuid.UUID
    sent_status: dict[StepName, StepStatus] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)
    audit_sent: int = 0
    finished: bool = False

    def poll(self) -> list[Event]:
        with self.db.session() as session:
            run = repo.get_run(session, self.run_id)
            if run is None:
                self.finished = True
                return [Event("status", {"status": "missing", "message": "run not found"})]
            steps = Plan.of(run.action_plan).steps
            status, message = run.status, run.message
            recorded = audit.entries(run)
        events = [Event("audit", entry) for entry in recorded[self.audit_sent :]]
        self.audit_sent = len(recorded)
        for step in sorted(steps, key=lambda s: STEP_ORDER.index(s.name)):
            events.extend(self._step_events(step))
        if status in TERMINAL_STATUSES:
            for step in steps:  # whatever the logs gained after the last transition
                events.extend(self._log_events(step.name))
            events.append(Event("status", {"status": status.value, "message": message}))
            self.finished = True
        return events

    def _step_events(self, step: PlanStep) -> Iterator[Event]:
        name, status = step.name, step.status
        previous = self.sent_status.get(name, StepStatus.PENDING)
        if status != previous:
            self.sent_status[name] = status
            if previous == StepStatus.PENDING and step.started_at:
                # Announce the start even if it also finished between two polls.
                yield Event("step", _step_data(step, StepStatus.IN_PROGRESS))
            if status not in (StepStatus.IN_PROGRESS, StepStatus.SKIPPED):
                yield from self._log_events(name)
                yield Event("step", _step_data(step, status))
            elif status == StepStatus.SKIPPED:
                yield Event("step", _step_data(step, status))
            if status != StepStatus.IN_PROGRESS:
                return
        if status == StepStatus.IN_PROGRESS:
            yield from self._log_events(name)

    def _log_events(self, step: StepName) -> Iterator[Event]:
        for filename in STEP_LOGS.get(step, ()):
            path = self.store.run_dir(self.run_id) / filename
            for line in self._new_lines(path):
                yield Event("log", {"step": step.value, "file": filename, "line": line})

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


def _step_data(step: PlanStep, status: StepStatus) -> dict[str, Any]:
    done = status != StepStatus.IN_PROGRESS
    return {
        "name": step.name.value,
        "status": status.value,
        "started_at": step.started_at,
        "completed_at": step.completed_at if done else None,
        "message": step.message if done else None,
    }
