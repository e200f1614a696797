"""Retry: replay a failed or rolled-back run from a step that is safe to repeat."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.auth import Principal
from moonmind.config import Settings
from moonmind.schemas.workflow_models import RetryRequest
from moonmind.workflows.orchestrator import audit, policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, enqueue
from moonmind.workflows.orchestrator.enums import (
    STEP_ORDER,
    ApprovalRequirement,
    RunStatus,
    StepName,
    StepStatus,
)
from moonmind.workflows.orchestrator.errors import RetryConflict, RunNotFound
from moonmind.workflows.orchestrator.plan import Plan, context_of
from moonmind.workflows.orchestrator.service import _queue, _reload


def retry_run(
    settings: Settings,
    db: Database,
    run_id: uuid.UUID,
    request: RetryRequest,
    principal: Principal,
) -> OrchestratorRun:
    """Replay a failed or rolled-back run from a step that is safe to repeat.

    A retry voids an earlier approval: a protected run resumed at its gated step, or after
    it, waits for a new one; it is refused while another run holds its service."""
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            raise RunNotFound(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.ROLLED_BACK):
            raise RetryConflict(
                f"run is {run.status.value}; only failed or rolled_back runs can be retried"
            )
        plan = Plan.of(run.action_plan)
        step = _resume_step(run.status, plan, request.resume_from_step)
        _refuse_if_held(session, run, step)
        for name in _steps_to_reset(plan, step):
            repo.update_step(
                session,
                run,
                name,
                status=StepStatus.PENDING,
                started_at=None,
                completed_at=None,
                celery_task_id=None,
                message=None,
                artifact_refs=[],
                result={},
            )
        latest = repo.latest_task_state(session, run.id, step)
        queued: QueuedStep | None = _queue(
            session, run, step, attempt=(latest.attempt + 1) if latest else 1
        )
        note = f"retry from {step.value}" + (f": {request.reason}" if request.reason else "")
        snapshot = run.metrics_snapshot or {}
        retries = [*snapshot.get("retries", []), note]
        retried_by = [*snapshot.get("retried_by", []), principal.id]
        repo.set_metrics(session, run, retries=retries, retried_by=retried_by)
        audit.note(session, run, "retry", principal.id, note=note)
        run.approval = None
        run.status = RunStatus.PENDING
        run.completed_at = None
        run.message = note
        gated = _gate_message(run, step)
        if gated is not None:  # the approval it had is void: it waits at its gate again
            run.status, run.message, queued = RunStatus.AWAITING_APPROVAL, f"{note}; {gated}", None
            repo.set_metrics(session, run, approval_requested_at=policies.utcnow().isoformat())
        session.flush()
    if queued is not None:
        enqueue(settings, queued)
    return _reload(db, run_id)


def _gate_message(run: OrchestratorRun, step: StepName) -> str | None:
    """Why a retry must wait for a new approval: it voided the run's approval and resumes
    at its service's gated step or after it (an approval then continues it at ``step``)."""
    gate = policies.gate_reached(run, step, patched=_patched(step))
    if gate is None:
        return None
    diff = Plan.of(run.action_plan).result(StepName.PATCH).get("diff_sha256")
    of_diff = diff and gate.requirement == ApprovalRequirement.PRE_VERIFY
    what = f" of the diff {diff}" if of_diff else ""
    then = f"; then it resumes at {step.value}" if step != gate.step else ""
    return (
        f"awaiting approval{what} by one of: {', '.join(gate.roles)} "
        f"(POST /orchestrator/runs/{run.id}/approvals){then}"
    )


def _patched(step: StepName) -> bool:
    """A retry resumed after the patch step keeps the run's diff."""
    return STEP_ORDER.index(step) > STEP_ORDER.index(StepName.PATCH)


def _refuse_if_held(session: Session, run: OrchestratorRun, step: StepName) -> None:
    """A retry that will wait at its gate holds the service from then on (repositories.
    HOLDING), so it takes the service's lock as a worker's claim does, and is refused while
    another run holds the service. A retry that goes pending waits for it in its claim."""
    if policies.gate_reached(run, step, patched=_patched(step)) is None:
        return
    project, service = context_of(run.action_plan).project, run.target_service
    repo.lock_service(session, project, service)
    holder = repo.active_run_for_service(session, project, service, exclude=run.id)
    if holder is not None:
        raise RetryConflict(
            f"run {holder.id} holds {service} ({holder.status.value}); this retry would wait "
            f"at its approval gate holding {service} too, and one run at a time may hold it",
            remediation=(
                f"Retry once run {holder.id} has ended (GET /orchestrator/runs/{holder.id}), "
                f"or cancel it (POST /orchestrator/runs/{holder.id}/cancel)."
            ),
        )


def _steps_to_reset(plan: Plan, step: StepName) -> list[StepName]:
    """The resumed step and every later one (a resumed rollback resets only itself)."""
    if step == StepName.ROLLBACK:
        wanted = [StepName.ROLLBACK]
    else:
        wanted = [name for name in STEP_ORDER if STEP_ORDER.index(name) >= STEP_ORDER.index(step)]
    return [name for name in wanted if plan.has(name)]


def _resume_step(status: RunStatus, plan: Plan, asked: str | None) -> StepName:
    failed = next(
        (
            s.name
            for s in plan.steps
            if s.status == StepStatus.FAILED and s.name != StepName.ROLLBACK
        ),
        None,
    )
    rollback_failed = plan.has(StepName.ROLLBACK) and (
        plan.step(StepName.ROLLBACK).status == StepStatus.FAILED
    )
    if status == RunStatus.ROLLED_BACK:
        # The rollback put the files and the image back: everything after analyze is undone.
        default = StepName.PATCH
    elif rollback_failed:
        default = StepName.ROLLBACK
    else:
        default = failed or StepName.ANALYZE
    if asked is None:
        return default
    step = StepName(asked)
    if step == StepName.ROLLBACK:
        if not rollback_failed:
            raise RetryConflict("only a failed rollback can be resumed from rollback")
        return step
    if STEP_ORDER.index(step) > STEP_ORDER.index(default):
        raise RetryConflict(
            f"resuming from {step.value} would skip {default.value}, which did not complete; "
            f"resume from {default.value} or earlier"
        )
    return step
