"""Turn a validated request into the run's ActionPlan: concrete steps and their parameters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moonmind.config import Settings
from moonmind.workflows.orchestrator.adapters.compose import Compose, image_name
from moonmind.workflows.orchestrator.enums import PlanAuthor, StepName
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile

LOG_TAIL_LINES = 300
PROBE_INITIAL_DELAY_S = 0.25
PROBE_FACTOR = 2.0
PROBE_MAX_DELAY_S = 5.0


@dataclass(frozen=True)
class ServiceContext:
    """What every step needs to reach the target; snapshotted on the plan at submission."""

    workspace: str
    compose_file: str
    compose_command: list[str]
    project: str
    image: str
    profile: ServiceProfile

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profile"]["allow"] = list(self.profile.allow)
        data["profile"]["approver_roles"] = list(self.profile.approver_roles)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceContext:
        profile = dict(data["profile"])
        profile["allow"] = tuple(profile.get("allow") or ())
        profile["approver_roles"] = tuple(profile.get("approver_roles") or ("operator",))
        return cls(
            workspace=data["workspace"],
            compose_file=data["compose_file"],
            compose_command=list(data["compose_command"]),
            project=data["project"],
            image=data["image"],
            profile=ServiceProfile(**profile),
        )

    def compose(self) -> Compose:
        return Compose(
            command=tuple(self.compose_command),
            project=self.project,
            compose_file=Path(self.compose_file),
            workspace=Path(self.workspace),
        )


def service_context(
    settings: Settings,
    compose: Compose,
    profile: ServiceProfile,
    compose_config: dict[str, Any],
) -> ServiceContext:
    services = compose_config.get("services") or {}
    return ServiceContext(
        workspace=str(settings.workspace_path),
        compose_file=str(settings.compose_path),
        compose_command=list(compose.command),
        project=compose.project,
        image=image_name(
            compose.project, profile.name, services.get(profile.name) or {}, compose.command
        ),
        profile=profile,
    )


def build_plan(
    ctx: ServiceContext, *, has_operator_patch: bool, agent_configured: bool
) -> tuple[list[dict[str, Any]], PlanAuthor]:
    """The six canonical steps, in order, each with the parameters it will use."""
    compose = ctx.compose()
    service = ctx.profile.name
    sources = ["operator_patch"] if has_operator_patch else ["rules"]
    if not has_operator_patch and agent_configured:
        sources.append("agent")
    steps: list[dict[str, Any]] = [
        {
            "name": StepName.ANALYZE.value,
            "parameters": {
                "service": service,
                "log_tail_lines": LOG_TAIL_LINES,
                "health_url": ctx.profile.health_url,
            },
        },
        {
            "name": StepName.PATCH.value,
            "parameters": {"sources": sources, "allow": list(ctx.profile.allow)},
        },
        {
            "name": StepName.BUILD.value,
            "parameters": {"argv": compose.argv("build", service), "image": ctx.image},
        },
        {
            "name": StepName.RESTART.value,
            "parameters": {"argv": compose.argv("up", "-d", "--no-deps", service)},
        },
        {
            "name": StepName.VERIFY.value,
            "parameters": {
                "health_url": ctx.profile.health_url,
                "expected_status": ctx.profile.health_expected_status,
                "timeout_seconds": ctx.profile.health_timeout_seconds,
                "require_docker_health": ctx.profile.has_healthcheck,
                "backoff": {
                    "initial_delay_seconds": PROBE_INITIAL_DELAY_S,
                    "factor": PROBE_FACTOR,
                    "max_delay_seconds": PROBE_MAX_DELAY_S,
                },
            },
        },
        {
            "name": StepName.ROLLBACK.value,
            "parameters": {"strategies": ["restore_preimages", "image_swap"], "when": "on_failure"},
        },
    ]
    author = PlanAuthor.OPERATOR if has_operator_patch else PlanAuthor.SYSTEM
    return steps, author
