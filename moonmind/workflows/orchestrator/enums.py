"""Vocabulary shared by the database, the API and the worker."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED}
)


class StepName(StrEnum):
    ANALYZE = "analyze"
    PATCH = "patch"
    BUILD = "build"
    RESTART = "restart"
    VERIFY = "verify"
    ROLLBACK = "rollback"


STEP_ORDER = tuple(StepName)


class StepStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class TaskStateName(StrEnum):
    """Celery's own state names, as kept in spec_workflow_task_states."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


class ArtifactType(StrEnum):
    """What an artifact file is (the contract's enum); ``kind`` on the row refines it."""

    ANALYSIS = "analysis"  # analysis.json
    ANALYZE_LOG = "analyze_log"  # analyze.log
    AGENT_LOG = "agent_log"  # agent.log
    PRE_IMAGE = "pre_image"  # pre-images/<path> and pre-images/manifest.json
    PATCH_DIFF = "patch_diff"  # patch.diff
    BUILD_LOG = "build_log"  # build.log
    RESTART_LOG = "restart_log"  # restart.log
    VERIFY_LOG = "verify_log"  # verify.log
    ROLLBACK_LOG = "rollback_log"  # rollback.log
    METRICS = "metrics"
    PLAN_SNAPSHOT = "plan_snapshot"


class PlanAuthor(StrEnum):
    OPERATOR = "operator"
    SYSTEM = "system"


class ApprovalRequirement(StrEnum):
    NONE = "none"
    PRE_RUN = "pre-run"
    PRE_VERIFY = "pre-verify"


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"
