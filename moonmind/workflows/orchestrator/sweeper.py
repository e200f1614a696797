"""Find runs whose worker vanished and deliver their step again (or give up).

A step's task keeps the run's heartbeat fresh while it works. When a run stays
`running` with a stale heartbeat, nobody is working on it: a worker died and the
broker did not (or could not, as with the filesystem transport) deliver it again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.config import Settings
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, enqueue, new_task_id, queue_of
from moonmind.workflows.orchestrator.enums import (
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.plan import Plan

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Redelivery:
    run_id: uuid.UUID
    step: StepName
    priority: Priority
    task_id: str | None  # None: gave up, the run was closed
    queue: str | None = None  # the run's Docker host's queue


def find_stale(
    db: Database, *, stale_after_s: float, now: datetime | None = None
) -> list[Redelivery]:
    """Claim every stale run (by touching its heartbeat) and say which step to send again."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after_s)
    found: list[Redelivery] = []
    with db.session() as session:
        stale = session.scalars(
            select(OrchestratorRun.id).where(
                OrchestratorRun.status == RunStatus.RUNNING,
                OrchestratorRun.heartbeat_at < cutoff,
            )
        ).all()
    for run_id in stale:
        with db.session() as session:
            run = repo.get_run(session, run_id, for_update=True)
            heartbeat = repo.as_utc(run.heartbeat_at) if run is not None else None
            if run is None or run.status != RunStatus.RUNNING or heartbeat is None:
                continue
            if heartbeat >= cutoff:  # someone else got there first
                continue
            found.append(_redeliver(session, run))
    return found


def _redeliver(session: Session, run: OrchestratorRun) -> Redelivery:
    plan = Plan.of(run.action_plan)
    # In progress, or else lost between two steps: the next one never arrived.
    current = plan.first(StepStatus.IN_PROGRESS) or plan.first(StepStatus.PENDING)
    assert current is not None  # a running run always has a step left
    step = current.name
    latest = repo.latest_task_state(session, run.id, step)
    repo.touch_heartbeat(session, run.id)
    if latest is not None and latest.state == TaskStateName.PENDING:
        log.warning("run %s: %s never arrived; sending it again", run.id, step.value)
        return Redelivery(run.id, step, run.priority, latest.celery_task_id, queue_of(run))
    attempts = latest.attempt if latest is not None else 0
    if latest is not None:
        repo.mark_attempt_lost(session, latest)
    if attempts >= MAX_ATTEMPTS:
        message = f"{step.value} was lost {attempts} times with its worker; giving up"
        repo.update_step(session, run, step, status=StepStatus.FAILED, message=message)
        repo.transition_run(
            session, run.id, expected=[RunStatus.RUNNING], new=RunStatus.FAILED, message=message
        )
        return Redelivery(run.id, step, run.priority, None, queue_of(run))
    task_id = new_task_id()
    repo.record_task_state(
        session, run.id, step, TaskStateName.PENDING, celery_task_id=task_id, attempt=attempts + 1
    )
    log.warning("run %s: %s lost with its worker; delivering it again", run.id, step.value)
    return Redelivery(run.id, step, run.priority, task_id, queue_of(run))


def sweep_once(db: Database, settings: Settings) -> int:
    """Deliver again the steps that dead workers left behind; the number re-sent."""
    found = find_stale(db, stale_after_s=settings.stale_after_seconds)
    for item in found:
        if item.task_id is None:
            log_event(item.run_id, item.step.value, "run_abandoned")
            continue
        log_event(item.run_id, item.step.value, "step_redelivered", celery_task_id=item.task_id)
        queued = QueuedStep(item.run_id, item.step, item.priority, item.task_id, item.queue)
        enqueue(settings, queued)
    return sum(1 for item in found if item.task_id)


class SweeperThread(threading.Thread):
    """Runs inside a worker: every `interval_s`, re-deliver what dead workers left behind."""

    def __init__(self, sweep: Callable[[], object], interval_s: float) -> None:
        super().__init__(name="orchestrator-sweeper", daemon=True)
        self._sweep = sweep
        self._interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                self._sweep()
            except Exception:  # the next round tries again
                log.exception("sweep failed")

    def stop(self) -> None:
        self._stop_event.set()
