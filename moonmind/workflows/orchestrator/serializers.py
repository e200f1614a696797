"""Database rows → API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from api_service.db.models import OrchestratorRun, RunArtifact, TaskState, WebhookDelivery
from moonmind.schemas.workflow_models import (
    ActionPlanModel,
    PlanStepDefinition,
    PlanStepState,
    RunArtifactModel,
    RunDetail,
    RunDiagnosis,
    RunSummary,
    TaskStateModel,
    WebhookDeliveryModel,
)
from moonmind.webhook_settings import display_url
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.plan import Plan
from moonmind.workflows.orchestrator.repositories import as_utc


def run_summary(run: OrchestratorRun | Row[Any]) -> RunSummary:
    """From a run or a list page's row (the same names)."""
    return RunSummary(**_summary_fields(run))


def _summary_fields(run: OrchestratorRun | Row[Any]) -> dict[str, Any]:
    queued_at = as_utc(run.queued_at)
    assert queued_at is not None
    requirement = run.approval_requirement  # on the row: a list page decodes no plan
    return {
        "run_id": run.id,
        "status": run.status,
        "target_service": run.target_service,
        "instruction": run.instruction,
        "priority": run.priority,
        "queued_at": queued_at,
        "started_at": as_utc(run.started_at),
        "completed_at": as_utc(run.completed_at),
        "approval_required": requirement is not None,
        "approval_status": policies.approval_status(run, requirement, policies.utcnow()),
        "approval_requirement": requirement,
        "approval": run.approval,
        "requested_by": run.requested_by,
        "message": run.message,
        "missing_artifacts": list(run.missing_artifacts or []),
        "dry_run": bool(run.dry_run),
    }


def artifact_model(artifact: RunArtifact) -> RunArtifactModel:
    created = as_utc(artifact.created_at)
    assert created is not None
    return RunArtifactModel(
        artifact_id=artifact.id,
        type=artifact.type,
        kind=artifact.kind,
        path=artifact.path,
        checksum=artifact.checksum,
        size_bytes=artifact.size_bytes,
        content_type=artifact.content_type,
        created_at=created,
    )


def _when(value: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(value)) if value else None


def task_state_model(row: TaskState) -> TaskStateModel:
    created, updated = as_utc(row.created_at), as_utc(row.updated_at)
    assert created is not None
    assert updated is not None
    return TaskStateModel(
        plan_step=row.plan_step,
        attempt=row.attempt,
        state=row.state,
        celery_task_id=row.celery_task_id,
        message=row.message,
        artifact_refs=[uuid.UUID(ref) for ref in row.artifact_refs or []],
        created_at=created,
        updated_at=updated,
    )


def diagnosis_of(plan: Plan) -> RunDiagnosis | None:
    """The primary diagnosis the analyze step recorded, with its pointer run if any."""
    analysis = plan.result(StepName.ANALYZE).get("analysis") or {}
    found = analysis.get("diagnosis") or []
    if not found:
        return None
    first = found[0]
    return RunDiagnosis(
        kind=first["kind"],
        subject=first["subject"],
        outcome=first.get("outcome") or "explain",
        remediation=first["remediation"],
        evidence=first["evidence"],
        also=[d["kind"] for d in found[1:]],
        suggested_run=analysis.get("suggested_run"),
    )


def webhook_delivery_model(row: WebhookDelivery) -> WebhookDeliveryModel:
    created = as_utc(row.created_at)
    assert created is not None
    return WebhookDeliveryModel(
        delivery_id=row.id,
        event=row.event,
        url=display_url(row.url),
        status=row.status,  # type: ignore[arg-type]  # CHECK-constrained to the literal
        attempts=row.attempts,
        response_status=row.response_status,
        last_error=row.last_error,
        created_at=created,
        last_attempt_at=as_utc(row.last_attempt_at),
        delivered_at=as_utc(row.delivered_at),
    )


def run_detail(
    run: OrchestratorRun,
    artifacts: list[RunArtifact],
    task_states: list[TaskState] | None = None,
    deliveries: list[WebhookDelivery] | None = None,
) -> RunDetail:
    row = run.action_plan
    plan = Plan.of(row)
    generated = as_utc(row.generated_at)
    assert generated is not None
    return RunDetail(
        **_summary_fields(run),
        diagnosis=diagnosis_of(plan),
        action_plan=ActionPlanModel(
            plan_id=row.id,
            generated_at=generated,
            generated_by=row.generated_by,
            steps=[
                PlanStepDefinition(name=step.name, parameters=step.parameters)
                for step in plan.steps
            ],
        ),
        steps=[
            PlanStepState(
                name=step.name,
                status=step.status,
                started_at=_when(step.started_at),
                completed_at=_when(step.completed_at),
                celery_task_id=step.celery_task_id,
                message=step.message,
                artifact_refs=[uuid.UUID(ref) for ref in step.artifact_refs],
            )
            for step in plan.steps
        ],
        artifacts=[artifact_model(a) for a in artifacts],
        metrics_snapshot=run.metrics_snapshot or {},
        task_states=[task_state_model(row) for row in task_states or []],
        webhook_deliveries=[webhook_delivery_model(row) for row in deliveries or []],
    )
