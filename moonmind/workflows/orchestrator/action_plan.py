"""Turn a validated request into the run's plan: its target and six concrete steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from moonmind.config import Settings
from moonmind.workflows.orchestrator.adapters.compose import Compose, image_name
from moonmind.workflows.orchestrator.enums import PlanAuthor
from moonmind.workflows.orchestrator.plan import (
    AnalyzeParameters,
    Backoff,
    BuildParameters,
    Dependent,
    PatchParameters,
    PlanStep,
    RestartParameters,
    RollbackParameters,
    ServiceContext,
    StepParameters,
    VerifyParameters,
)
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile

# The values a new plan gets; the steps read them back from the plan, never from here.
LOG_TAIL_LINES = 300
ANALYZE_PROBE_DEADLINE_S = 1.0  # one attempt, only when the container runs
PROBE_BACKOFF = Backoff(
    fast_interval_seconds=0.02,
    fast_for_seconds=3.0,
    initial_delay_seconds=0.2,
    factor=2.0,
    max_delay_seconds=5.0,
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
        host=profile.host,
        queue=settings.host_queue(profile.host),
    )


def dependents_of(
    compose_config: Mapping[str, Any], profiles: Mapping[str, ServiceProfile], target: str
) -> list[Dependent]:
    """The services whose `depends_on` (list or mapping form) names ``target``."""
    found = []
    for name, service in sorted((compose_config.get("services") or {}).items()):
        depends = (service or {}).get("depends_on") or ()
        if name == target or target not in depends:
            continue
        profile = profiles.get(name)
        found.append(
            Dependent(
                name=name,
                health_url=profile.health_url if profile else None,
                expected_status=profile.health_expected_status if profile else 200,
            )
        )
    return found


def _step(parameters: StepParameters) -> PlanStep:
    return PlanStep(name=parameters.step, parameters=parameters.model_dump(mode="json"))


def build_plan(
    ctx: ServiceContext,
    *,
    has_operator_patch: bool,
    mode: Literal["fix", "diagnose", "dry_run"] = "fix",
    signatures: Sequence[Mapping[str, str]] = (),
    dependents: Sequence[Dependent] = (),
    docker_build: list[str] | None = None,
) -> tuple[list[PlanStep], PlanAuthor]:
    """The six canonical steps, in order, each with the parameters it will use.

    Without an operator's patch, the rules come first and then the agent, which is the
    worker's setting (ORCHESTRATOR_PATCH_AGENT): a worker without one skips it. A
    diagnose run has the analyze step only: it explains and touches nothing. A dry run
    stops after a patch derived in a scratch copy (steps/dry_run.py). ``docker_build`` is
    the `docker build` docker-compose v1 would run for the service (adapters/native_build)."""
    compose = ctx.compose()
    profile = ctx.profile
    sources = ["operator_patch"] if has_operator_patch else ["rules", "agent"]
    analyze = AnalyzeParameters(
        service=profile.name,
        log_tail_lines=LOG_TAIL_LINES,
        health_url=profile.health_url,
        probe_deadline_seconds=ANALYZE_PROBE_DEADLINE_S,
        signatures=[dict(sig) for sig in signatures],
    )
    if mode == "diagnose":
        return [_step(analyze)], PlanAuthor.SYSTEM
    if mode == "dry_run":
        dry = PatchParameters(sources=sources, allow=list(profile.allow), dry_run=True)
        author = PlanAuthor.OPERATOR if has_operator_patch else PlanAuthor.SYSTEM
        return [_step(analyze), _step(dry)], author
    steps = [
        analyze,
        PatchParameters(sources=sources, allow=list(profile.allow)),
        BuildParameters(
            argv=compose.argv("build", profile.name), image=ctx.image, docker_argv=docker_build
        ),
        RestartParameters(argv=compose.argv("up", "-d", "--no-deps", profile.name)),
        VerifyParameters(
            health_url=profile.health_url,
            expected_status=profile.health_expected_status,
            timeout_seconds=profile.health_timeout_seconds,
            require_docker_health=profile.has_healthcheck,
            stable_seconds=profile.stable_seconds,
            backoff=PROBE_BACKOFF,
            dependents=list(dependents),
        ),
        RollbackParameters(),
    ]
    author = PlanAuthor.OPERATOR if has_operator_patch else PlanAuthor.SYSTEM
    return [_step(parameters) for parameters in steps], author
