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
from moonmind.workflows.orchestrator.dispatch import QueuedStep, next_message
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.errors import CancelConflict
from moonmind.workflows.orchestrator.plan import Plan, context_of

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
        return _roll_back_when_free(session, run)
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


def _roll_back_when_free(session: Session, run: OrchestratorRun) -> QueuedStep | None:
    """An idle run's patch is rolled back by its service's holder only: at once when no
    other run holds the service, else once it is released (the rollback must not touch
    files or containers another run is changing). A pending run already has a step in the
    queue, which the worker turns into the rollback when it gets the service."""
    project = context_of(run.action_plan).project
    repo.lock_service(session, project, run.target_service)
    holder = repo.active_run_for_service(session, project, run.target_service, exclude=run.id)
    waits = f"; it waits for run {holder.id}, which holds {run.target_service}" if holder else ""
    if holder is not None and run.status == RunStatus.PENDING:
        run.message = f"cancelled while pending; the patch is rolled back first{waits}"
        return None
    if not repo.transition_run(
        session,
        run.id,
        expected=list(IDLE),
        new=RunStatus.RUNNING if holder is None else RunStatus.PENDING,
        message=f"cancelled while {run.status.value}; rolling back the patch{waits}",
    ):
        return None  # a worker took it meanwhile; it will see the request
    queued = next_message(run, StepName.ROLLBACK)
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
