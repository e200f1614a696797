"""Verify: the container stays up (and healthy, if it has a healthcheck), then HTTP health."""

from __future__ import annotations

import time
from collections.abc import Callable

from moonmind.workflows.orchestrator.adapters.docker_engine import Engine
from moonmind.workflows.orchestrator.adapters.probe import (
    Attempt,
    probe_http,
    wait_container_stable,
)
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import VerifyParameters
from moonmind.workflows.orchestrator.steps.analyze import describe_container
from moonmind.workflows.orchestrator.steps.context import (
    StepContext,
    StepFailed,
    StepResult,
    connect,
)


def _attempt_line(attempt: Attempt) -> str:
    outcome = attempt.status_code if attempt.status_code is not None else attempt.error
    return (
        f"probe #{attempt.number} at {attempt.at} (+{attempt.elapsed_s:.2f}s): "
        f"{outcome} {'ok' if attempt.ok else 'not ready'}"
    )


def _health(
    params: VerifyParameters, url: str, remaining_s: float, out: Callable[[str], None]
) -> tuple[bool, str, int]:
    outcome = probe_http(
        url,
        expected_status=params.expected_status,
        deadline_s=remaining_s,
        initial_delay_s=params.backoff.initial_delay_seconds,
        factor=params.backoff.factor,
        max_delay_s=params.backoff.max_delay_seconds,
        on_attempt=lambda a: out(_attempt_line(a)),
    )
    if outcome.ok:
        reason = f"{url} answered {params.expected_status}"
    else:
        reason = (
            f"{url} did not answer {params.expected_status} within {params.timeout_seconds:.0f}s"
        )
    out(f"health check: {'ok' if outcome.ok else 'failed'}: {reason}")
    return outcome.ok, reason, len(outcome.attempts)


def service_checks(
    ctx: StepContext, engine: Engine, params: VerifyParameters, out: Callable[[str], None]
) -> tuple[bool, str, int]:
    svc = ctx.service
    started = time.monotonic()
    ok, reason = wait_container_stable(
        lambda: engine.container_for(svc.project, svc.service),
        require_healthy=params.require_docker_health,
        deadline_s=params.timeout_seconds,
        stable_for_s=params.stable_seconds,
        on_check=out,
    )
    out(f"container check: {'ok' if ok else 'failed'}: {reason}")
    if not ok or not params.health_url:
        return ok, reason, 0
    remaining = max(params.timeout_seconds - (time.monotonic() - started), 1.0)
    return _health(params, params.health_url, remaining, out)


def verify(ctx: StepContext) -> StepResult:
    svc = ctx.service
    params = ctx.params(VerifyParameters)
    engine = connect()
    try:
        with ctx.log(StepName.VERIFY, "verify.log", type=ArtifactType.VERIFY_LOG) as out:
            ok, reason, attempts = service_checks(ctx, engine, params, out)
        final = engine.container_for(svc.project, svc.service)
    finally:
        engine.close()
    result = {
        "healthy": ok,
        "reason": reason,
        "probe_attempts": attempts,
        "container": describe_container(final),
    }
    if not ok:
        raise StepFailed(f"verification failed: {reason}", result=result)
    return StepResult(f"healthy: {reason}", result)
