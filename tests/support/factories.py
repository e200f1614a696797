"""Typed builders of orchestrator rows for tests, going through the real repository code.

Every factory flushes through ``repositories`` (never raw INSERTs) so the rows look exactly
like the ones the API and the worker write; the caller's session decides when to commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from api_service.db.models import OrchestratorRun, RunArtifact
from moonmind.workflows.orchestrator import repositories
from moonmind.workflows.orchestrator.enums import (
    ArtifactType,
    PlanAuthor,
    Priority,
    RunStatus,
    StepName,
    StepStatus,
)
from moonmind.workflows.orchestrator.plan import PlanStep
from moonmind.workflows.orchestrator.storage import ArtifactStore
from tests.support.steps import service_context

ALL_STEPS: tuple[StepName, ...] = (
    StepName.ANALYZE,
    StepName.PATCH,
    StepName.BUILD,
    StepName.RESTART,
    StepName.VERIFY,
)


def create_run(
    session: Session,
    *,
    service: str = "app",
    status: RunStatus = RunStatus.PENDING,
    instruction: str = "fix the missing dependency",
    steps: Sequence[StepName] = ALL_STEPS,
    queued_at: datetime | None = None,
    started_at: datetime | None = None,
    completed_at: datetime | None = None,
    priority: Priority = Priority.NORMAL,
    generated_by: PlanAuthor = PlanAuthor.SYSTEM,
    message: str | None = None,
    artifact_root: str = "var/artifacts/spec_workflows",
    run_id: uuid.UUID | None = None,
    protected: dict[str, Any] | None = None,
) -> OrchestratorRun:
    """A run with its plan snapshot; status and timestamps set as given, then flushed.

    ``protected`` makes the service protected with these approval settings
    (approval_requirement, approver_roles, approval_valid_minutes)."""
    run = repositories.create_run(
        session,
        instruction=instruction,
        target_service=service,
        steps=[PlanStep(name=step, parameters={"step": step.value}) for step in steps],
        service_context=service_context(
            Path("/srv/stack"),
            service=service,
            **({"protected": True, **protected} if protected is not None else {}),
        ),
        artifact_root=artifact_root,
        priority=priority,
        generated_by=generated_by,
        run_id=run_id,
    )
    run.status = status
    if queued_at is not None:
        run.queued_at = queued_at
    run.started_at = started_at
    run.completed_at = completed_at
    run.message = message
    session.flush()
    return run


def finish_step(
    session: Session,
    run: OrchestratorRun,
    name: StepName,
    *,
    status: StepStatus = StepStatus.SUCCEEDED,
    started_at: datetime,
    completed_at: datetime,
    celery_task_id: str | None = None,
    message: str = "done",
    artifact_refs: Sequence[uuid.UUID] = (),
) -> PlanStep:
    """Record one step as the worker would once it ran."""
    return repositories.update_step(
        session,
        run,
        name,
        status=status.value,
        started_at=started_at,
        completed_at=completed_at,
        celery_task_id=celery_task_id or str(uuid.uuid4()),
        message=message,
        artifact_refs=[str(ref) for ref in artifact_refs],
    )


def add_artifact(
    session: Session,
    store: ArtifactStore,
    run: OrchestratorRun,
    *,
    relpath: str,
    data: bytes,
    type: ArtifactType,
    kind: str,
    content_type: str = "text/plain",
) -> RunArtifact:
    """Write the file atomically under the run folder and record its row."""
    stored = store.write(run.id, relpath, data)
    return repositories.add_artifact(
        session, run, stored, type=type, kind=kind, content_type=content_type
    )
