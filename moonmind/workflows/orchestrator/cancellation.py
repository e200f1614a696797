"""Cancelling a run: what the API records, database only (the worker does the stopping).

A run nobody is working on ends at once, unless a patch of it is still on disk (a run
parked at a pre-verify gate, or a pending retry of a failed rollback): then its rollback
is queued first. A running run gets ``cancel_requested_at``; the worker watching it
kills the step's build or agent process, and ``transitions`` routes the run to its
rollback (if files changed) or straight to ``cancelled``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api_service.db.models import OrchestratorRun
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, new_task_id, queue_of
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.errors import CancelConflict
from moonmind.workflows.orchestrator.plan import Plan

IDLE = (RunStatus.PENDING, RunStatus.AWAITING_APPROVAL)


def needs_rollback(plan: Plan) -> bool:
    """Files of this run may still be changed: the patch went in and no rollback finished."""
    return (
        plan.has(StepName.ROLLBACK)
        and plan.succeeded(StepName.PATCH)
        and not plan.succeeded(StepName.ROLLBACK)
    )


def request_cancel(
    session: Session, run: OrchestratorRun, *, by: str | None = None
) -> QueuedStep | None:
    """Record the cancel; the rollback to publish after the commit, if one is needed."""
    if run.status in TERMINAL_STATUSES:
        raise CancelConflict(f"run is {run.status.value}; it has already ended")
    now = datetime.now(UTC)
    run.cancel_requested_at = now
    repo.set_metrics(session, run, cancel_requested={"at": now.isoformat(), "by": by})
    if run.status not in IDLE:
        return None  # running: the worker stops at the next safe point
    plan = Plan.of(run.action_plan)
    if needs_rollback(plan):
        if not repo.transition_run(
            session,
            run.id,
            expected=list(IDLE),
            new=RunStatus.RUNNING,
            message=f"cancelled while {run.status.value}; rolling back the patch",
        ):
            return None  # a worker took it meanwhile; it will see the request
        queued = QueuedStep(run.id, StepName.ROLLBACK, run.priority, new_task_id(), queue_of(run))
        latest = repo.latest_task_state(session, run.id, StepName.ROLLBACK)
        repo.record_task_state(
            session,
            run.id,
            StepName.ROLLBACK,
            TaskStateName.PENDING,
            celery_task_id=queued.task_id,
            attempt=(latest.attempt + 1) if latest else 1,
        )
        return queued
    if repo.transition_run(
        session,
        run.id,
        expected=list(IDLE),
        new=RunStatus.CANCELLED,
        message=f"cancelled while {run.status.value}; nothing had been changed",
    ):
        for step in plan.steps:
            if step.status == StepStatus.PENDING:
                repo.update_step(session, run, step.name, status=StepStatus.SKIPPED)
    return None
