"""The steps of a run, one module each. Each takes a StepContext, calls adapters, and
returns a StepResult or raises StepFailed; none touches the database."""

from __future__ import annotations

from collections.abc import Callable

from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps.analyze import analyze
from moonmind.workflows.orchestrator.steps.build import build
from moonmind.workflows.orchestrator.steps.context import (
    ProducedArtifact,
    StepContext,
    StepFailed,
    StepOutcome,
    StepResult,
)
from moonmind.workflows.orchestrator.steps.dry_run import patch_step
from moonmind.workflows.orchestrator.steps.restart import restart
from moonmind.workflows.orchestrator.steps.rollback import rollback
from moonmind.workflows.orchestrator.steps.verify import verify

STEP_FUNCTIONS: dict[StepName, Callable[[StepContext], StepResult]] = {
    StepName.ANALYZE: analyze,
    StepName.PATCH: patch_step,  # steps.patch.patch, or its dry run in a scratch copy
    StepName.BUILD: build,
    StepName.RESTART: restart,
    StepName.VERIFY: verify,
    StepName.ROLLBACK: rollback,
}

__all__ = [
    "STEP_FUNCTIONS",
    "ProducedArtifact",
    "StepContext",
    "StepFailed",
    "StepOutcome",
    "StepResult",
]
