"""Verify: HTTP health and container stability (counted from its start), side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moonmind.workflows.orchestrator.adapters.docker_engine import Engine
from moonmind.workflows.orchestrator.adapters.readiness import Schedule, Target, watch_ready
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import VerifyParameters
from moonmind.workflows.orchestrator.steps.analyze import describe_container
from moonmind.workflows.orchestrator.steps.context import (
    StepContext,
    StepFailed,
    StepResult,
    connect,
)
from moonmind.workflows.orchestrator.steps.dependents import check_dependents


def service_checks(
    ctx: StepContext, engine: Engine, params: VerifyParameters, out: Callable[[str], None]
) -> tuple[bool, str, dict[str, Any]]:
    """(ready, why, evidence): every probe attempt, how long the container stayed up and
    the container as the last look saw it."""
    svc = ctx.service
    backoff = params.backoff
    out(
        f"checking {svc.service}: {params.health_url or 'no health URL'}, up "
        f">= {params.stable_seconds:g}s since its start, within {params.timeout_seconds:g}s"
    )
    readiness = watch_ready(
        lambda: engine.container_for(svc.project, svc.service),
        Target(
            health_url=params.health_url,
            expected_status=params.expected_status,
            require_healthy=params.require_docker_health,
            stable_s=params.stable_seconds,
            deadline_s=params.timeout_seconds,
        ),
        Schedule(
            fast_s=backoff.fast_interval_seconds,
            fast_for_s=backoff.fast_for_seconds,
            initial_s=backoff.initial_delay_seconds,
            factor=backoff.factor,
            max_s=backoff.max_delay_seconds,
        ),
        out,
    )
    evidence = {**readiness.evidence(), "container": describe_container(readiness.info)}
    return readiness.ok, readiness.reason, evidence


def verify(ctx: StepContext) -> StepResult:
    svc = ctx.service
    params = ctx.params(VerifyParameters)
    engine = connect()
    try:
        with ctx.log(StepName.VERIFY, "verify.log", type=ArtifactType.VERIFY_LOG) as out:
            ok, reason, evidence = service_checks(ctx, engine, params, out)
            if ok:  # the services that depend_on it must still be healthy
                ok, reason = check_dependents(ctx, engine, out, reason)
        if not ok:  # a healthy verdict keeps the container its last look saw
            evidence["container"] = describe_container(
                engine.container_for(svc.project, svc.service)
            )
    finally:
        engine.close()
    result = {"healthy": ok, "reason": reason, **evidence}
    if not ok:
        raise StepFailed(f"verification failed: {reason}", result=result)
    return StepResult(f"healthy: {reason}", result)
