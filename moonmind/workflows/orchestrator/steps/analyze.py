"""Analyze: look at the service (container, logs, health URL) and recognise its failure."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.probe import probe_http
from moonmind.workflows.orchestrator.diagnosis import crash_signatures
from moonmind.workflows.orchestrator.diagnosis.analyzers import (
    diagnose,
    explanation,
    outcome,
    suggested_run,
)
from moonmind.workflows.orchestrator.diagnosis.evidence import Evidence, ServiceState, crash_block
from moonmind.workflows.orchestrator.diagnosis.intent_edits import plan_intent
from moonmind.workflows.orchestrator.diagnosis.intents import parse_intent
from moonmind.workflows.orchestrator.diagnosis.network import looks_at_peers
from moonmind.workflows.orchestrator.diagnosis.rules import rule_target
from moonmind.workflows.orchestrator.enums import ArtifactType
from moonmind.workflows.orchestrator.plan import AnalyzeParameters
from moonmind.workflows.orchestrator.steps.context import StepContext, StepResult, connect
from moonmind.workflows.orchestrator.steps.dependents import dependents_before


def describe_container(info: ContainerInfo | None) -> dict[str, Any] | None:
    return asdict(info) if info is not None else None


def _probe(params: AnalyzeParameters, info: ContainerInfo | None) -> dict[str, Any] | None:
    """One short HTTP attempt, only when the container runs: an exited or restarting
    container is evidence enough, and asking its URL would only cost time."""
    if not params.health_url:
        return None
    if info is None or info.status != "running":
        state = "no container" if info is None else f"container {info.status}"
        skipped = {"ok": False, "status_code": None, "error": None, "attempts": 0}
        return {"url": params.health_url, **skipped, "skipped": f"{state}: not probed"}
    timeout = params.probe_deadline_seconds
    outcome = probe_http(params.health_url, deadline_s=0.0, request_timeout_s=timeout)
    last = outcome.attempts[-1] if outcome.attempts else None
    return {
        "url": params.health_url,
        "ok": outcome.ok,
        "status_code": last.status_code if last else None,
        "error": last.error if last else None,
        "attempts": len(outcome.attempts),
    }


def was_healthy(info: ContainerInfo | None, probe: Any) -> bool:
    """Before the run: the container runs and, with a health URL, one quick probe answered.

    A rollback must bring a service that was healthy back to health (see steps/rollback)."""
    return info is not None and info.status == "running" and (probe is None or bool(probe["ok"]))


def gather_evidence(
    service: str,
    info: ContainerInfo | None,
    logs: str,
    stack: dict[str, ContainerInfo],
    instruction: str = "",
) -> Evidence:
    """What the analyzers read: the engine's state of the container, its logs, its stack."""
    states = {
        name: ServiceState(other.status, other.exit_code, other.ports)
        for name, other in stack.items()
    }
    if info is None:
        return Evidence(logs=logs, service=service, stack=states, instruction=instruction)
    return Evidence(
        logs=logs,
        status=info.status,
        exit_code=info.exit_code,
        signal=info.signal,
        oom_killed=info.oom_killed,
        error=info.error,
        restart_count=info.restart_count,
        restart_policy=info.restart_policy,
        health=info.health,
        health_log=info.health_log,
        memory_limit=info.memory_limit,
        user=info.user,
        service=service,
        stack=states,
        instruction=instruction,
    )


def recognised_intent(ctx: StepContext) -> dict[str, str] | None:
    """The change the instruction asks for, the words it was read from, and the edit it
    makes on the service's files or why none can be made (None: it asks for none)."""
    profile = ctx.service.profile
    target = rule_target(ctx.workspace, profile.build_context or "", profile.dockerfile or "")
    if target is None or not profile.build_context or not profile.dockerfile:
        intent = parse_intent(ctx.instruction)
        why = f"{ctx.service.service} is not built from a Dockerfile here: no file to change"
        return (
            {**intent.record(), "refused": intent.refused or why, "change": ""} if intent else None
        )
    planned = plan_intent(ctx.instruction, target)
    return planned.record() if planned is not None else None


def analyze(ctx: StepContext) -> StepResult:
    svc = ctx.service
    params = ctx.params(AnalyzeParameters)
    engine = connect()
    try:
        # One listing and one inspect: the other services as the listing shows them.
        stack = engine.stack(svc.project, focus=svc.service)
        info = stack.get(svc.service)
        if info is not None:  # a restart's exit code and an OOM kill, from one events query
            info = engine.with_exit_evidence(info)
        raw = engine.logs(info.id, tail=params.log_tail_lines) if info is not None else ""
        logs = ctx.redactor.redact(raw)
        if looks_at_peers(crash_block(logs)):  # which service holds that port: inspect all
            stack = {**engine.stack(svc.project), **({svc.service: info} if info else {})}
    finally:
        engine.close()
    evidence = gather_evidence(svc.service, info, logs, stack, ctx.instruction)
    block = evidence.block
    signatures = crash_signatures(block)  # the last crash's own line, not any line of the log
    diagnoses = diagnose(evidence, params.signatures)
    intent = recognised_intent(ctx)
    analysis = {
        "service": svc.service,
        "instruction": ctx.instruction,
        "container": describe_container(info),
        "health_probe": _probe(params, info),
        "signatures": [asdict(sig) for sig in signatures],
        "log_lines": len(logs.splitlines()),
        "crash_block": block,
        "diagnosis": [asdict(d) for d in diagnoses],
        "explanation": explanation(diagnoses),
        "outcome": outcome(diagnoses),
        "suggested_run": suggested_run(diagnoses, svc.service),
        "intent": intent,
    }
    analysis["healthy_before"] = was_healthy(info, analysis["health_probe"])
    analysis["dependents_before"] = dependents_before(ctx, stack)
    ctx.save(
        "analysis.json",
        json.dumps(analysis, indent=2).encode(),
        type=ArtifactType.ANALYSIS,
        kind="analysis",
        content_type="application/json",
    )
    ctx.save("analyze.log", logs.encode(), type=ArtifactType.ANALYZE_LOG, kind="analyze_log")
    state = "no container" if info is None else f"container {info.status} (exit {info.exit_code})"
    found = explanation(diagnoses)
    if intent:
        found += f"; instruction: {intent['action']} ({intent['refused'] or intent['change']})"
    if len(diagnoses) > 1:
        found += f" (also: {', '.join(d.kind for d in diagnoses[1:])})"
    return StepResult(f"{state}; {found}", {"analysis": analysis})
