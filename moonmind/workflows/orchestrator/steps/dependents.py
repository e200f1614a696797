"""Dependents: the services that `depends_on` the target must survive its recreate.

The plan lists them (``VerifyParameters.dependents``, from the compose config at
submission). Analyze records which were healthy before the run: container running and,
with a health URL, one quick probe answered. Verify checks those again at its end: their
container still running and their health URL answering within a short deadline. A
dependent the fix broke fails the verify, and the run rolls back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo, Engine
from moonmind.workflows.orchestrator.adapters.probe import probe_http
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.plan import Dependent, VerifyParameters
from moonmind.workflows.orchestrator.steps.context import StepContext

BEFORE_PROBE_TIMEOUT_S = 1.0  # analyze: one attempt of at most this long


def _dependents(ctx: StepContext) -> list[Dependent]:
    return ctx.params(VerifyParameters).dependents if ctx.plan.has(StepName.VERIFY) else []


def dependents_before(ctx: StepContext, stack: dict[str, ContainerInfo]) -> list[dict[str, Any]]:
    """Each dependent's state before the run: running, its one probe, healthy or not."""
    found = []
    for dep in _dependents(ctx):
        info = stack.get(dep.name)
        running = info is not None and info.status == "running"
        health_ok = None
        if running and dep.health_url:
            health_ok = probe_http(
                dep.health_url,
                expected_status=dep.expected_status,
                deadline_s=0.0,
                request_timeout_s=BEFORE_PROBE_TIMEOUT_S,
            ).ok
        found.append(
            {
                "name": dep.name,
                "running": running,
                "health_ok": health_ok,
                "healthy": running and health_ok is not False,
            }
        )
    return found


def _broken(ctx: StepContext, engine: Engine, dep: Dependent, deadline_s: float) -> str | None:
    """Why a dependent that was healthy is not any more, or None."""
    svc = ctx.service
    if dep.health_url:
        probe = probe_http(
            dep.health_url, expected_status=dep.expected_status, deadline_s=deadline_s
        )
        if not probe.ok:
            last = probe.attempts[-1] if probe.attempts else None
            got = (last.status_code or last.error) if last else "no answer"
            expected = f"{dep.expected_status} within {deadline_s:g}s"
            return f"{dep.health_url} did not answer {expected} (last: {got})"
    info = engine.container_for(svc.project, dep.name)
    if info is None or info.status != "running":
        return "its container is gone" if info is None else f"its container is {info.status}"
    return None


def check_dependents(
    ctx: StepContext, engine: Engine, out: Callable[[str], None], reason: str
) -> tuple[bool, str]:
    """(ok, reason) after the target's own checks passed: every dependent that was healthy
    before the run is healthy still."""
    analysis = ctx.result_of(StepName.ANALYZE).get("analysis") or {}
    healthy_before = {d["name"] for d in analysis.get("dependents_before") or [] if d["healthy"]}
    deadline_s = ctx.params(VerifyParameters).dependents_deadline_seconds
    checked, broken = [], []
    for dep in _dependents(ctx):
        if dep.name not in healthy_before:
            out(f"dependent {dep.name}: not healthy before the run; not checked")
            continue
        why = _broken(ctx, engine, dep, deadline_s)
        out(f"dependent {dep.name}: {'ok' if why is None else 'broken: ' + why}")
        if why is None:
            checked.append(dep.name)
        else:
            broken.append(f"{dep.name}: {why}")
    if broken:
        return False, f"dependent service broken by the fix: {'; '.join(broken)}"
    return True, reason + (f"; dependents healthy: {', '.join(checked)}" if checked else "")
