"""Request and response models of the orchestrator API (see specs/ for the contract)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from moonmind.workflows.orchestrator.enums import (
    ArtifactType,
    PlanAuthor,
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)

ApprovalStatus = Literal["not_required", "awaiting", "granted", "expired"]


# Text the database stores as is: PostgreSQL text cannot hold a NUL character.
NO_NUL = r"^[^\x00]*$"


class RunCreate(BaseModel):
    """CreateRunRequest, plus an optional operator-supplied unified diff."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=1, max_length=4000, pattern=NO_NUL)
    target_service: str = Field(min_length=1, max_length=255)
    approval_token: str | None = Field(default=None, max_length=4096, pattern=NO_NUL)
    priority: Priority = Priority.NORMAL
    patch: str | None = Field(default=None, max_length=1_000_000, pattern=NO_NUL)
    requested_by: str | None = Field(default=None, min_length=1, max_length=255)
    # "diagnose": analyze and explain only; nothing is patched, built or restarted.
    mode: Literal["fix", "diagnose"] = "fix"
    # Analyze and derive the patch in a scratch copy; nothing is written, built or restarted.
    dry_run: bool = False

    @field_validator("instruction", "target_service")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class Approver(BaseModel):
    id: str = Field(min_length=1, max_length=255)
    role: str = Field(min_length=1, max_length=255)


class ApprovalRequest(BaseModel):
    """The contract's ApprovalRequest; diff_sha256 binds a pre-verify approval to one diff."""

    model_config = ConfigDict(extra="forbid")

    approver: Approver
    token: str = Field(min_length=1, max_length=4096)
    expires_at: datetime | None = None
    diff_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resume_from_step: Literal["patch", "build", "restart", "verify", "rollback"] | None = None
    reason: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ApprovalRecord(BaseModel):
    """What was approved: never the token itself, only its sha256."""

    approver_id: str
    role: str
    approved_at: datetime
    expires_at: datetime
    token_sha256: str
    diff_sha256: str | None = None


class RunSummary(BaseModel):
    run_id: uuid.UUID
    status: RunStatus
    target_service: str
    instruction: str
    priority: Priority = Priority.NORMAL
    queued_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    approval_required: bool = False
    approval_status: ApprovalStatus = "not_required"
    approval_requirement: str | None = None
    approval: ApprovalRecord | None = None
    requested_by: str | None = None
    message: str | None = None
    missing_artifacts: list[str] = Field(default_factory=list)
    dry_run: bool = False


class PlanStepDefinition(BaseModel):
    name: StepName
    parameters: dict[str, Any] = Field(default_factory=dict)


class ActionPlanModel(BaseModel):
    plan_id: uuid.UUID
    generated_at: datetime
    generated_by: PlanAuthor
    steps: list[PlanStepDefinition]


class PlanStepState(BaseModel):
    name: StepName
    status: StepStatus
    started_at: datetime | None = None
    completed_at: datetime | None = None
    celery_task_id: str | None = None
    message: str | None = None
    artifact_refs: list[uuid.UUID] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The contract types these as plain strings: absent until the step has run.
        data: dict[str, Any] = handler(self)
        for key in ("celery_task_id", "message"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class RunArtifactModel(BaseModel):
    artifact_id: uuid.UUID
    type: ArtifactType
    kind: str
    path: str
    checksum: str
    size_bytes: int
    content_type: str
    created_at: datetime


class TaskStateModel(BaseModel):
    """One Celery delivery of one step, as kept in spec_workflow_task_states."""

    plan_step: StepName
    attempt: int
    state: TaskStateName
    celery_task_id: str | None = None
    message: str | None = None
    artifact_refs: list[uuid.UUID] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class SuggestedRun(BaseModel):
    """A run for the service a diagnosis points at: submit it as is."""

    target_service: str
    instruction: str


class RunDiagnosis(BaseModel):
    """The analyze step's primary diagnosis: what failed, about what, and what to do."""

    kind: str
    subject: str
    outcome: str
    remediation: str
    evidence: str
    also: list[str] = Field(default_factory=list)  # further kinds seen (context)
    suggested_run: SuggestedRun | None = None


class WebhookDeliveryModel(BaseModel):
    """One run event posted to one ``[[orchestrator.webhooks]]`` receiver."""

    delivery_id: uuid.UUID
    event: str
    url: str  # without user info or query string
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    response_status: int | None = None
    last_error: str | None = None
    created_at: datetime
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class RunDetail(RunSummary):
    diagnosis: RunDiagnosis | None = None  # first: why the service fails
    action_plan: ActionPlanModel
    steps: list[PlanStepState]
    artifacts: list[RunArtifactModel]
    metrics_snapshot: dict[str, Any] = Field(default_factory=dict)
    task_states: list[TaskStateModel] = Field(default_factory=list)
    webhook_deliveries: list[WebhookDeliveryModel] = Field(default_factory=list)


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = None

    @model_serializer(mode="wrap")
    def _drop_empty_cursor(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("next_cursor") is None:
            data.pop("next_cursor", None)
        return data


class ArtifactList(BaseModel):
    artifacts: list[RunArtifactModel]


class ErrorResponse(BaseModel):
    error: str
    detail: str | None = None
    remediation: str | None = None
    # The X-Request-ID of the request, also in the API server's log line about it.
    request_id: str | None = None
