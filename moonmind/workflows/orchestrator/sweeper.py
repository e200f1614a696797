"""Find runs that nobody works on and deliver their step again (or roll back, or give up).

A step's task keeps the run's heartbeat fresh while it works, and a run waiting for its
service's lock refreshes it at each delivery. When a `running` or `pending` run's
heartbeat goes stale, nobody is on it: a worker died, or a message was lost (the
filesystem transport loses the delayed re-delivery a dead worker held; a message may
never have been published after its commit). Every recovery is noted on the run
(``metrics_snapshot.audit``, action ``recovered`` with its reason) and in the event log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun, TaskState
from moonmind.config import Settings
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import audit
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, enqueue, new_task_id, queue_of
from moonmind.workflows.orchestrator.enums import (
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.plan import Plan, context_of

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Redelivery:
    run_id: uuid.UUID
    step: StepName
    priority: Priority
    task_id: str | None  # None: gave up, the run was closed
    queue: str | None = None  # the run's Docker host's queue
    reason: str = ""


def find_stale(
    db: Database, *, stale_after_s: float, now: datetime | None = None
) -> list[Redelivery]:
    """Claim every stuck run (by touching its heartbeat) and say which step to send again.

    Stuck: `running` with a heartbeat older than the bound (its worker died in any step,
    or the next step's message was lost), or `pending` with no sign of life for as long
    and nobody holding its service (its first message was never published, or the
    re-delivery a waiting run keeps in a worker was lost with that worker)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after_s)
    found: list[Redelivery] = []
    with db.session() as session:
        candidates = session.scalars(
            select(OrchestratorRun.id).where(
                OrchestratorRun.status.in_([RunStatus.RUNNING, RunStatus.PENDING]),
                or_(OrchestratorRun.heartbeat_at.is_(None), OrchestratorRun.heartbeat_at < cutoff),
                OrchestratorRun.queued_at < cutoff,
            )
        ).all()
    for run_id in candidates:
        with db.session() as session:
            run = repo.get_run(session, run_id, for_update=True)
            if run is None or _alive(session, run, cutoff):
                continue
            if run.status == RunStatus.RUNNING:
                found.append(_redeliver(session, run))
            elif run.status == RunStatus.PENDING:
                item = _redeliver_pending(session, run)
                if item is not None:
                    found.append(item)
    return found


def _alive(session: Session, run: OrchestratorRun, cutoff: datetime) -> bool:
    """Whether the run showed a sign of life since ``cutoff`` (someone got there first)."""
    if run.status not in (RunStatus.RUNNING, RunStatus.PENDING):
        return True
    signs = [repo.as_utc(run.heartbeat_at), repo.as_utc(run.queued_at)]
    if run.status == RunStatus.PENDING:
        signs += [repo.as_utc(row.updated_at) for row in repo.list_task_states(session, run.id)]
    return any(sign is not None and sign >= cutoff for sign in signs)


def _step_to_resend(session: Session, run: OrchestratorRun) -> tuple[StepName, TaskState | None]:
    """The step whose message is in flight: the newest PENDING/STARTED task-state row.

    A rollback queued after a failed build is such a row: it is sent again as a rollback,
    never as the plan's next forward step."""
    newest: dict[StepName, TaskState] = {}
    for row in repo.list_task_states(session, run.id):
        if row.plan_step not in newest or row.attempt > newest[row.plan_step].attempt:
            newest[row.plan_step] = row
    open_rows = [
        r for r in newest.values() if r.state in (TaskStateName.PENDING, TaskStateName.STARTED)
    ]
    if open_rows:
        row = max(open_rows, key=lambda r: (repo.as_utc(r.updated_at), r.attempt))
        return row.plan_step, row
    plan = Plan.of(run.action_plan)
    current = plan.first(StepStatus.IN_PROGRESS) or plan.first(StepStatus.PENDING)
    assert current is not None  # an active run always has a step left
    return current.name, newest.get(current.name)


def _resend(
    session: Session, run: OrchestratorRun, step: StepName, attempt: int, reason: str
) -> Redelivery:
    """Record the step PENDING under a fresh task id (an older message, should it still
    arrive, is then a duplicate) and say why, on the run and in the worker's event log."""
    task_id = new_task_id()
    repo.record_task_state(
        session, run.id, step, TaskStateName.PENDING, celery_task_id=task_id, attempt=attempt
    )
    repo.touch_heartbeat(session, run.id)
    audit.note(session, run, "recovered", None, plan_step=step.value, reason=reason)
    log.warning("run %s: %s; sending %s again", run.id, reason, step.value)
    return Redelivery(run.id, step, run.priority, task_id, queue_of(run), reason)


def _redeliver_pending(session: Session, run: OrchestratorRun) -> Redelivery | None:
    project = context_of(run.action_plan).project
    if repo.active_run_for_service(session, project, run.target_service, exclude=run.id):
        return None  # it waits for a holder; when the holder ends it is looked at again
    step, latest = _step_to_resend(session, run)
    reason = f"pending with no live message for {step.value}"
    return _resend(session, run, step, latest.attempt if latest else 1, reason)


def _redeliver(session: Session, run: OrchestratorRun) -> Redelivery:
    step, latest = _step_to_resend(session, run)
    if latest is not None and latest.state == TaskStateName.PENDING:
        return _resend(session, run, step, latest.attempt, f"{step.value} never arrived")
    attempts = latest.attempt if latest is not None else 0
    if latest is not None:
        repo.mark_attempt_lost(session, latest)
    if attempts < MAX_ATTEMPTS:
        reason = f"heartbeat stopped during {step.value} (attempt {attempts})"
        return _resend(session, run, step, attempts + 1, reason)
    message = f"{step.value} was lost {attempts} times with its worker; giving up"
    repo.update_step(session, run, step, status=StepStatus.FAILED, message=message)
    plan = Plan.of(run.action_plan)
    patched = plan.succeeded(StepName.PATCH) or step == StepName.PATCH
    if step != StepName.ROLLBACK and plan.has(StepName.ROLLBACK) and patched:
        run.message = message
        session.flush()
        return _resend(session, run, StepName.ROLLBACK, 1, f"{message}; rolling back")
    repo.transition_run(
        session, run.id, expected=[RunStatus.RUNNING], new=RunStatus.FAILED, message=message
    )
    audit.note(session, run, "abandoned", None, plan_step=step.value, reason=message)
    return Redelivery(run.id, step, run.priority, None, queue_of(run), message)


def sweep_once(db: Database, settings: Settings) -> int:
    """Deliver again the steps that dead workers left behind; the number re-sent."""
    found = find_stale(db, stale_after_s=settings.stale_after_seconds)
    for item in found:
        if item.task_id is None:
            log_event(item.run_id, item.step.value, "run_abandoned", reason=item.reason)
            continue
        log_event(
            item.run_id,
            item.step.value,
            "step_redelivered",
            celery_task_id=item.task_id,
            reason=item.reason,
        )
        queued = QueuedStep(item.run_id, item.step, item.priority, item.task_id, item.queue)
        enqueue(settings, queued)
    return sum(1 for item in found if item.task_id)


def database_answers(db: Database) -> None:
    """Raise unless the database answers a trivial query."""
    with db.session() as session:
        session.execute(select(1))


class SweeperThread(threading.Thread):
    """Runs inside a worker: every `interval_s`, re-deliver what dead workers left behind.

    After a sweep fails (the database is unreachable, so no heartbeat could be written
    either), it only ``probe``s each round; once the database answers again, ``grace_s``
    pass before the next sweep, so the heartbeats of live steps are fresh when judged."""

    def __init__(
        self,
        sweep: Callable[[], object],
        interval_s: float,
        grace_s: float = 0.0,
        probe: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name="orchestrator-sweeper", daemon=True)
        self._sweep = sweep
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._probe = probe
        self._blind = False  # the last sweep failed: wait until the database answers
        self._resume_at = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                self._tick()
            except Exception:  # the next round tries again
                log.exception("sweep failed")
                self._blind = self._probe is not None
                self._resume_at = time.monotonic() + self._grace_s

    def _tick(self) -> None:
        if self._blind and self._probe is not None:
            self._probe()  # raises while the database is still away
            self._blind = False
            self._resume_at = time.monotonic() + self._grace_s
        if time.monotonic() >= self._resume_at:
            self._sweep()

    def stop(self) -> None:
        self._stop_event.set()
