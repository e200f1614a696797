"""A StepContext built the way the worker builds one: from a real plan snapshot."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from moonmind.utils.redaction import Redactor, default_redactor
from moonmind.workflows.orchestrator.action_plan import build_plan
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.plan import Plan, ServiceContext
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile
from moonmind.workflows.orchestrator.steps import StepContext
from moonmind.workflows.orchestrator.storage import ArtifactStore


def service_context(
    root: Path, *, project: str = "p", service: str = "app", **profile: Any
) -> ServiceContext:
    fields: dict[str, Any] = {
        "build_context": "app",
        "dockerfile": "app/Dockerfile",
        "image": None,
        "health_url": None,
        "allow": ("app/Dockerfile", "app/requirements*.txt"),
        **profile,
    }
    return ServiceContext(
        workspace=str(root),
        compose_file=str(root / "docker-compose.yaml"),
        compose_command=["docker-compose"],
        project=project,
        image=f"{project}_{service}",
        profile=ServiceProfile(name=service, **fields),
    )


def make_context(
    root: Path,
    *,
    service: ServiceContext | None = None,
    parameters: dict[StepName, dict[str, Any]] | None = None,
    requested_patch: str | None = None,
    agent_template: str = "",
    redactor: Redactor | None = None,
    artifacts: Path | None = None,
) -> StepContext:
    """The plan is the one a submission would store, with ``parameters`` merged in."""
    service = service or service_context(root)
    steps, _ = build_plan(service, has_operator_patch=requested_patch is not None)
    for step in steps:
        step.parameters.update((parameters or {}).get(step.name, {}))
    return StepContext(
        run_id=uuid.uuid4(),
        instruction="fix",
        service=service,
        plan=Plan(steps=steps),
        store=ArtifactStore(artifacts or root / "artifacts"),
        requested_patch=requested_patch,
        agent_template=agent_template,
        redactor=redactor or default_redactor(),
    )
