"""Restart: `compose up -d --no-deps` the service; no other service may be disturbed."""

from __future__ import annotations

import time
from collections.abc import Callable

from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import RestartParameters
from moonmind.workflows.orchestrator.steps.context import (
    StepContext,
    StepFailed,
    StepResult,
    connect,
)

Snapshot = dict[str, tuple[str, str]]  # service -> (container id, started at)


def stamped(out: Callable[[str], None], began: float | None = None) -> Callable[[str], None]:
    """A line sink that stamps each line with the seconds since ``began`` (the step's start;
    monotonic clock), to show in the log where a step's time went."""
    began = time.monotonic() if began is None else began

    def write(line: str) -> None:
        out(f"[+{time.monotonic() - began:.3f}s] {line}")

    return write


def _write(out: Callable[[str], None], label: str, snapshot: Snapshot) -> None:
    for service, (cid, started) in sorted(snapshot.items()):
        out(f"{label} {service}: container {cid[:12]} started {started}")


def restart(ctx: StepContext) -> StepResult:
    svc = ctx.service
    name = svc.service
    params = ctx.params(RestartParameters)
    began = time.monotonic()
    engine = connect()
    try:
        before = engine.services_snapshot(svc.project)
        with ctx.log(StepName.RESTART, "restart.log", type=ArtifactType.RESTART_LOG) as log:
            out = stamped(log, began)
            _write(out, "before", before)
            out(f"$ {' '.join(params.argv)}")
            code = svc.compose().up_no_deps(name, out, timeout_s=ctx.up_timeout_s)
            out(f"exit code {code}")
            after = engine.services_snapshot(svc.project)
            _write(out, "after", after)
            changed = {s for s, state in before.items() if s != name and after.get(s) != state}
            # another active run's service may be recreated by that run meanwhile
            disturbed = sorted(changed - ctx.busy_services)
            for other in sorted(changed & ctx.busy_services):
                out(f"{other} changed too: another active run holds it")
            if disturbed:
                out(f"other services changed: {', '.join(disturbed)}")
    finally:
        engine.close()
    result = {
        "before": {s: list(v) for s, v in before.items()},
        "after": {s: list(v) for s, v in after.items()},
    }
    if code != 0:
        raise StepFailed(
            f"compose up of {name} failed (exit {code}); see restart.log", result=result
        )
    if disturbed:
        raise StepFailed(f"restart disturbed other services: {', '.join(disturbed)}", result=result)
    old = before.get(name, ("", ""))[0]
    new = after.get(name, ("", ""))[0]
    verb = "recreated" if old != new else "restarted"
    return StepResult(f"{verb} {name} (container {new[:12]})", result)
