"""All SQL of the orchestrator domain. Functions flush; the caller's unit of work commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from api_service.db.models import (
    ActionPlan,
    ApprovalGate,
    OrchestratorRun,
    RunArtifact,
    TaskState,
    utcnow,
)
from moonmind.workflows.orchestrator import webhooks
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    ArtifactType,
    PlanAuthor,
    Priority,
    RunStatus,
    StepName,
    TaskStateName,
)
from moonmind.workflows.orchestrator.errors import InvalidCursor as InvalidCursor
from moonmind.workflows.orchestrator.plan import Plan, PlanStep, ServiceContext, context_of
from moonmind.workflows.orchestrator.run_list import CURSOR_LENGTH as CURSOR_LENGTH
from moonmind.workflows.orchestrator.run_list import CURSOR_PATTERN as CURSOR_PATTERN
from moonmind.workflows.orchestrator.run_list import RunPage as RunPage
from moonmind.workflows.orchestrator.run_list import decode_cursor as decode_cursor
from moonmind.workflows.orchestrator.run_list import encode_cursor as encode_cursor
from moonmind.workflows.orchestrator.run_list import list_runs as list_runs
from moonmind.workflows.orchestrator.run_list import list_runs_statement as list_runs_statement
from moonmind.workflows.orchestrator.storage import StoredArtifact


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def create_run(session: Session, **fields: Any) -> OrchestratorRun:
    """A pending run with its own snapshot of the plan (the plan row is never shared), in
    ``session`` (``fields``: those of ``new_run``). One flush for both rows."""
    run = new_run(**fields)
    session.add(run)
    session.flush()
    return run


def new_run(
    *,
    instruction: str,
    target_service: str,
    steps: Sequence[PlanStep],
    service_context: ServiceContext,
    artifact_root: str,
    priority: Priority = Priority.NORMAL,
    approval_token: str | None = None,
    requested_patch: str | None = None,
    generated_by: PlanAuthor = PlanAuthor.SYSTEM,
    run_id: uuid.UUID | None = None,
    requested_by: str | None = None,
) -> OrchestratorRun:
    """The rows of a pending run, not yet in any session: the run, with its plan as
    ``run.action_plan`` and both keys set (``action_plan_id`` too)."""
    plan = ActionPlan(
        id=uuid.uuid4(),
        steps=[PlanStep(name=step.name, parameters=step.parameters).to_json() for step in steps],
        service_context=service_context.model_dump(mode="json"),
        generated_by=generated_by,
    )
    run_id = run_id or uuid.uuid4()
    run = OrchestratorRun(
        id=run_id,
        instruction=instruction,
        target_service=target_service,
        status=RunStatus.PENDING,
        priority=priority,
        approval_token=approval_token,
        approval_requirement=approval_requirement_of(service_context),
        requested_patch=requested_patch,
        artifact_root=f"{artifact_root.rstrip('/')}/{run_id}",
        metrics_snapshot={},
        missing_artifacts=[],
        requested_by=requested_by,
        action_plan_id=plan.id,
    )
    run.action_plan = plan
    return run


def approval_requirement_of(service_context: ServiceContext) -> str | None:
    """The gate a protected service's runs wait at (policies.gate_for), kept on the row so
    the run list never decodes the plan."""
    profile = service_context.profile
    return profile.approval_requirement if profile.protected else None


def get_run(
    session: Session, run_id: uuid.UUID, *, for_update: bool = False
) -> OrchestratorRun | None:
    stmt = select(OrchestratorRun).where(OrchestratorRun.id == run_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=OrchestratorRun)
    return session.scalars(stmt).unique().one_or_none()


def approval_gate_row(session: Session, service: str) -> ApprovalGate:
    """The service's approval_gates row, inserted if missing without a race.

    ``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite): concurrent first
    submissions for one service all get the single row, never a unique violation. A
    select-then-insert lost that race (uq_approval_gates_service_name)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(ApprovalGate)
        .values(id=uuid.uuid4(), service_name=service)
        .on_conflict_do_nothing(index_elements=[ApprovalGate.service_name])
    )
    stmt = select(ApprovalGate).where(ApprovalGate.service_name == service)
    return session.scalars(stmt).one()


def lock_service(session: Session, project: str, service: str) -> None:
    """Serialise claims on one compose service until this transaction ends (PostgreSQL).

    SQLite needs nothing here: it admits one writer at a time, and the embedded
    default runs a single worker process."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(f"moonmind:{project}/{service}")))
        )


HOLDING = (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)  # a run that holds its service


def active_runs(
    session: Session, project: str, *, exclude: uuid.UUID, service: str | None = None
) -> list[OrchestratorRun]:
    """The other runs of compose ``project`` that hold a service (only ``service``'s, if
    given), earliest started first. The project is in each run's plan snapshot, not in a
    column, so it is read from the rows."""
    stmt = (
        select(OrchestratorRun)
        .where(OrchestratorRun.status.in_(HOLDING), OrchestratorRun.id != exclude)
        .order_by(OrchestratorRun.started_at)
    )
    if service is not None:
        stmt = stmt.where(OrchestratorRun.target_service == service)
    runs = session.scalars(stmt).unique()
    return [r for r in runs if context_of(r.action_plan).project == project]


def active_run_for_service(
    session: Session, project: str, service: str, *, exclude: uuid.UUID
) -> OrchestratorRun | None:
    """The run that currently holds the service (one active run per compose service)."""
    return next(iter(active_runs(session, project, exclude=exclude, service=service)), None)


def services_held_by_others(session: Session, project: str, *, exclude: uuid.UUID) -> set[str]:
    """The services of ``project`` that other active runs hold (they may recreate them)."""
    return {r.target_service for r in active_runs(session, project, exclude=exclude)}


def transition_run(
    session: Session,
    run_id: uuid.UUID,
    *,
    expected: Sequence[RunStatus],
    new: RunStatus,
    message: str | None = None,
) -> bool:
    """Compare-and-set on the run's status; False when another actor moved it first."""
    now = utcnow()
    values: dict[str, Any] = {"status": new, "heartbeat_at": now}
    if new == RunStatus.RUNNING:
        # Resuming after an approval keeps the time the run first started.
        values["started_at"] = func.coalesce(OrchestratorRun.started_at, now)
    if new in TERMINAL_STATUSES:
        values["completed_at"] = now
    if message is not None:
        values["message"] = message
    result = session.execute(
        update(OrchestratorRun)
        .where(OrchestratorRun.id == run_id, OrchestratorRun.status.in_(list(expected)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return webhooks.emit(session, run_id, values, result)  # a run event for its receivers


def touch_heartbeat(session: Session, run_id: uuid.UUID) -> bool:
    result = session.execute(
        update(OrchestratorRun)
        .where(OrchestratorRun.id == run_id)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel_requested(session: Session, run_id: uuid.UUID) -> bool:
    """Whether someone asked to cancel the run (the worker polls this while a step runs)."""
    stmt = select(OrchestratorRun.cancel_requested_at).where(OrchestratorRun.id == run_id)
    return session.scalar(stmt) is not None


def update_step(session: Session, run: OrchestratorRun, name: StepName, **changes: Any) -> PlanStep:
    """Change one step of the run's plan snapshot (JSON column, so reassign and flag)."""
    plan = Plan.of(run.action_plan)
    current = plan.step(name)
    values = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
    updated = PlanStep.model_validate({**current.to_json(), **values})
    run.action_plan.steps = [
        updated.to_json() if step.name == name else step.to_json() for step in plan.steps
    ]
    flag_modified(run.action_plan, "steps")
    session.flush()
    return updated


def add_artifact(
    session: Session,
    run: OrchestratorRun,
    stored: StoredArtifact,
    *,
    type: ArtifactType,
    kind: str,
    content_type: str = "text/plain",
) -> RunArtifact:
    artifact = RunArtifact(
        run_id=run.id,
        type=type,
        kind=kind,
        path=stored.path,
        checksum=stored.checksum,
        size_bytes=stored.size_bytes,
        content_type=content_type,
    )
    session.add(artifact)
    session.flush()
    return artifact


def list_artifacts(session: Session, run_id: uuid.UUID) -> list[RunArtifact]:
    stmt = (
        select(RunArtifact)
        .where(RunArtifact.run_id == run_id)
        .order_by(RunArtifact.created_at, RunArtifact.id)
    )
    return list(session.scalars(stmt))


def get_artifact(session: Session, run_id: uuid.UUID, artifact_id: uuid.UUID) -> RunArtifact | None:
    stmt = select(RunArtifact).where(RunArtifact.id == artifact_id, RunArtifact.run_id == run_id)
    return session.scalars(stmt).one_or_none()


def record_task_state(
    session: Session,
    run_id: uuid.UUID,
    step: StepName,
    state: TaskStateName,
    *,
    celery_task_id: str | None,
    message: str | None = None,
    artifact_refs: Sequence[str] = (),
    attempt: int = 1,
) -> TaskState:
    """Insert or advance the task-state row of this step attempt."""
    row = session.scalars(
        select(TaskState).where(
            TaskState.run_id == run_id,
            TaskState.plan_step == step,
            TaskState.attempt == attempt,
        )
    ).one_or_none()
    if row is None:
        row = TaskState(run_id=run_id, plan_step=step, attempt=attempt, state=state)
        session.add(row)
    row.state = state
    row.celery_task_id = celery_task_id
    if message is not None:
        row.message = message
    row.artifact_refs = list(artifact_refs)
    row.updated_at = utcnow()
    session.flush()
    return row


def latest_task_state(session: Session, run_id: uuid.UUID, step: StepName) -> TaskState | None:
    stmt = (
        select(TaskState)
        .where(TaskState.run_id == run_id, TaskState.plan_step == step)
        .order_by(TaskState.attempt.desc())
        .limit(1)
    )
    return session.scalars(stmt).one_or_none()


def mark_attempt_lost(session: Session, row: TaskState) -> None:
    """The worker running this attempt is gone; the next delivery gets a new attempt."""
    record_task_state(
        session,
        row.run_id,
        row.plan_step,
        TaskStateName.FAILURE,
        celery_task_id=row.celery_task_id,
        message="the worker was lost during this step; it was delivered again",
        attempt=row.attempt,
    )


def list_task_states(session: Session, run_id: uuid.UUID) -> list[TaskState]:
    stmt = (
        select(TaskState)
        .where(TaskState.run_id == run_id)
        .order_by(TaskState.created_at, TaskState.id)
    )
    return list(session.scalars(stmt))


def set_metrics(session: Session, run: OrchestratorRun, **values: Any) -> None:
    merged = dict(run.metrics_snapshot or {})
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    run.metrics_snapshot = merged
    flag_modified(run, "metrics_snapshot")
    session.flush()


def note_missing_artifact(session: Session, run: OrchestratorRun, name: str) -> None:
    if name not in (run.missing_artifacts or []):
        run.missing_artifacts = [*(run.missing_artifacts or []), name]
        flag_modified(run, "missing_artifacts")
        session.flush()


def service_runs(session: Session, project: str, service: str) -> list[OrchestratorRun]:
    """Every run of one compose service, newest first (rollback tags are pruned by these)."""
    stmt = (
        select(OrchestratorRun)
        .where(OrchestratorRun.target_service == service)
        .order_by(OrchestratorRun.queued_at.desc(), OrchestratorRun.id.desc())
    )
    return [
        run
        for run in session.scalars(stmt).unique()
        if context_of(run.action_plan).project == project
    ]
