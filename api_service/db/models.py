"""Orchestrator tables. Enums are stored as checked strings so SQLite and PostgreSQL agree."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api_service.db.base import Base
from moonmind.workflows.orchestrator.enums import (
    ApprovalRequirement,
    ArtifactType,
    PlanAuthor,
    Priority,
    RunStatus,
    StepName,
    TaskStateName,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(enum_cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class ActionPlan(Base):
    __tablename__ = "orchestrator_action_plans"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    service_context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    generated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    generated_by: Mapped[PlanAuthor] = mapped_column(
        _enum(PlanAuthor, "plan_author"), default=PlanAuthor.SYSTEM
    )


class ApprovalGate(Base):
    __tablename__ = "approval_gates"
    __table_args__ = (CheckConstraint("valid_for_minutes >= 5", name="valid_for_minutes_min"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    service_name: Mapped[str] = mapped_column(String(255), unique=True)
    requirement: Mapped[ApprovalRequirement] = mapped_column(
        _enum(ApprovalRequirement, "approval_requirement"), default=ApprovalRequirement.NONE
    )
    approver_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    valid_for_minutes: Mapped[int] = mapped_column(Integer, default=60)
    last_updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class OrchestratorRun(Base):
    __tablename__ = "orchestrator_runs"
    __table_args__ = (
        CheckConstraint(
            "completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at",
            name="completed_after_started",
        ),
        # Keyset pagination, newest first: one index per filter of GET /orchestrator/runs.
        Index("ix_orchestrator_runs_queued_at_id", "queued_at", "id"),
        Index("ix_orchestrator_runs_status_queued_at_id", "status", "queued_at", "id"),
        Index(
            "ix_orchestrator_runs_target_service_queued_at_id", "target_service", "queued_at", "id"
        ),
        Index("ix_orchestrator_runs_target_service_status", "target_service", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    instruction: Mapped[str] = mapped_column(Text)
    target_service: Mapped[str] = mapped_column(String(255))
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.PENDING
    )
    priority: Mapped[Priority] = mapped_column(
        _enum(Priority, "run_priority"), default=Priority.NORMAL
    )
    action_plan_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orchestrator_action_plans.id", ondelete="RESTRICT")
    )
    approval_gate_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("approval_gates.id", ondelete="SET NULL"), nullable=True
    )
    # The protected service's gate ("pre-run" / "pre-verify") as submitted, None when
    # unprotected: the run summary reads it here, never from the plan's JSON.
    approval_requirement: Mapped[str | None] = mapped_column(String(32), nullable=True)
    approval_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who approved, in which role, when, until when, and for which diff (sha256).
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    requested_patch: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A dry run derives its patch in a scratch copy and ends after it (steps/dry_run.py).
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Set by POST .../cancel on a running run; its worker stops at the next safe point.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    missing_artifacts: Mapped[list[str]] = mapped_column(JSON, default=list)
    artifact_root: Mapped[str] = mapped_column(Text)

    action_plan: Mapped[ActionPlan] = relationship(lazy="joined")
    artifacts: Mapped[list[RunArtifact]] = relationship(
        back_populates="run", order_by="RunArtifact.created_at", cascade="all, delete-orphan"
    )


class RunArtifact(Base):
    __tablename__ = "orchestrator_run_artifacts"
    __table_args__ = (Index("ix_orchestrator_run_artifacts_run_id", "run_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orchestrator_runs.id", ondelete="CASCADE")
    )
    type: Mapped[ArtifactType] = mapped_column(_enum(ArtifactType, "artifact_type"))
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(128), default="text/plain")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[OrchestratorRun] = relationship(back_populates="artifacts")


class TaskState(Base):
    __tablename__ = "spec_workflow_task_states"
    __table_args__ = (
        CheckConstraint("state <> 'FAILURE' OR message IS NOT NULL", name="failure_has_message"),
        Index("ix_spec_workflow_task_states_run_id", "run_id"),
        Index(
            "uq_spec_workflow_task_states_attempt", "run_id", "plan_step", "attempt", unique=True
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orchestrator_runs.id", ondelete="CASCADE")
    )
    plan_step: Mapped[StepName] = mapped_column(_enum(StepName, "plan_step"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    celery_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[TaskStateName] = mapped_column(_enum(TaskStateName, "task_state"))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifact_refs: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class WebhookDelivery(Base):
    """One run event for one ``[[orchestrator.webhooks]]`` receiver, and how its delivery went.

    Written in the transaction that changes the run's status (an outbox); a worker thread
    posts it. ``body`` holds the exact bytes that are signed, so every attempt sends the
    same ones. The receiver's secret is never stored."""

    __tablename__ = "orchestrator_webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name="webhook_delivery_status"
        ),
        Index("ix_orchestrator_webhook_deliveries_run_id", "run_id"),
        Index("ix_orchestrator_webhook_deliveries_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orchestrator_runs.id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When a worker may take it next (also a lease: taking it pushes this forward).
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
