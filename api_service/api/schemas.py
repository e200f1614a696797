"""The API's view of the shared orchestrator models."""

from moonmind.schemas.workflow_models import (
    ActionPlanModel,
    ArtifactList,
    ErrorResponse,
    PlanStepState,
    RunArtifactModel,
    RunCreate,
    RunDetail,
    RunList,
    RunSummary,
)

__all__ = [
    "ActionPlanModel",
    "ArtifactList",
    "ErrorResponse",
    "PlanStepState",
    "RunArtifactModel",
    "RunCreate",
    "RunDetail",
    "RunList",
    "RunSummary",
]
