"""What the console's pages show, computed from the same rows and models the API serves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from api_service.db.models import OrchestratorRun
from moonmind.auth import Principal
from moonmind.config import Settings
from moonmind.schemas.workflow_models import RunDetail, RunSummary
from moonmind.workflows.orchestrator import audit, policies, repositories, serializers
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    ApprovalRequirement,
    RunStatus,
    StepName,
)
from moonmind.workflows.orchestrator.plan import Plan
from moonmind.workflows.orchestrator.storage import ArtifactPathError, ArtifactStore
from moonmind.workflows.orchestrator.webhooks import list_deliveries

MAX_DIFF_BYTES = 512 * 1024
RETRYABLE = (RunStatus.FAILED, RunStatus.ROLLED_BACK)


def human(seconds: float | None) -> str:
    """A short duration: 4s, 2m 05s, 1h 03m, 3d 2h."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _span(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return ((end or now) - start).total_seconds()


def row_of(run: RunSummary, now: datetime) -> dict[str, Any]:
    """One line of the runs list."""
    return {
        "id": str(run.run_id),
        "short_id": str(run.run_id)[:8],
        "status": run.status.value,
        "service": run.target_service,
        "instruction": run.instruction,
        "requester": run.requested_by or "",
        "age": human((now - run.queued_at).total_seconds()),
        "queued_at": run.queued_at.isoformat(),
        "duration": human(_span(run.started_at, run.completed_at, now)),
        "approval": run.approval_status if run.approval_required else "",
        "dry_run": run.dry_run,
    }


def list_rows(
    session: Session,
    *,
    status: RunStatus | None,
    service: str | None,
    cursor: str | None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    page = repositories.list_runs(
        session, status=status, service=service, limit=limit, cursor=cursor
    )
    now = policies.utcnow()
    rows = [row_of(serializers.run_summary(run), now) for run in page.runs]
    return rows, page.next_cursor


def diff_lines(text: str) -> list[tuple[str, str]]:
    """(css class, line) for a unified diff: added, removed, hunk headers, file headers."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def read_diff(settings: Settings, run_id: uuid.UUID) -> str | None:
    try:
        path = ArtifactStore(settings.artifact_root_path).resolve(run_id, "patch.diff")
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            return handle.read(MAX_DIFF_BYTES).decode("utf-8", "replace")
    except (ArtifactPathError, OSError):
        return None


@dataclass(frozen=True)
class Actions:
    approve_role: str | None  # the gate role an approval from this principal would name
    approve_diff: str | None  # the diff sha256 that approval would be bound to
    cancel: bool
    retry: bool

    @property
    def approve(self) -> bool:
        return self.approve_role is not None


def gate_role(principal: Principal, roles: tuple[str, ...]) -> str | None:
    """A role of the service's gate that the principal holds (the approval names it)."""
    for role in roles:
        if principal.everything or role in principal.roles:
            return role
    return None


def _approval(run: OrchestratorRun, plan: Plan, settings: Settings) -> dict[str, Any] | None:
    diff_sha = plan.result(StepName.PATCH).get("diff_sha256")
    gate = policies.run_gate(run, patched=diff_sha is not None)
    if gate is None:
        return None
    pre_verify = gate.requirement == ApprovalRequirement.PRE_VERIFY
    eligible = [
        p.id
        for p in settings.auth_principals
        if p.id != run.requested_by and set(p.roles) & set(gate.roles)
    ]
    return {
        "requirement": gate.requirement.value,
        "roles": list(gate.roles),
        "valid_minutes": gate.valid_minutes,
        "until_if_now": policies.utcnow() + timedelta(minutes=gate.valid_minutes),
        "diff_sha256": diff_sha if pre_verify else None,
        "eligible": eligible,
        "record": run.approval,
        "pre_verify": pre_verify,
    }


def actions_for(
    principal: Principal, run: OrchestratorRun, detail: RunDetail, approval: dict[str, Any] | None
) -> Actions:
    """Which buttons this principal may press on this run (the server checks again)."""
    active = run.status not in TERMINAL_STATUSES
    role = None
    diff = None
    if (
        approval is not None
        and active
        and detail.approval_status != "granted"
        and principal.has_role("approver")
        and principal.id != run.requested_by
    ):
        role = gate_role(principal, tuple(approval["roles"]))
        diff = approval["diff_sha256"]
        if approval["pre_verify"] and (run.status != RunStatus.AWAITING_APPROVAL or not diff):
            role = None  # the diff to approve does not exist yet
    operator = principal.has_role("operator")
    return Actions(role, diff, operator and active, operator and run.status in RETRYABLE)


def _analysis(plan: Plan) -> dict[str, Any] | None:
    analysis = plan.result(StepName.ANALYZE).get("analysis")
    if not analysis:
        return None
    return {
        "container": analysis.get("container") or None,
        "explanation": analysis.get("explanation"),
        "outcome": analysis.get("outcome"),
        "health_probe": analysis.get("health_probe"),
        "crash_block": analysis.get("crash_block") or "",
    }


def run_page(
    session: Session, settings: Settings, run_id: uuid.UUID, principal: Principal
) -> dict[str, Any] | None:
    """Everything the run page renders, or None when there is no such run."""
    run = repositories.get_run(session, run_id)
    if run is None:
        return None
    detail = serializers.run_detail(
        run, repositories.list_artifacts(session, run_id), None, list_deliveries(session, run_id)
    )
    plan = Plan.of(run.action_plan)
    now = policies.utcnow()
    steps = [
        {
            "name": s.name.value,
            "status": s.status.value,
            "started_at": s.started_at.isoformat() if s.started_at else "",
            "duration": human(_span(s.started_at, s.completed_at, now)),
            "message": s.message or "",
        }
        for s in detail.steps
    ]
    approval = _approval(run, plan, settings)
    diff = read_diff(settings, run_id)
    return {
        "run": detail,
        "row": row_of(detail, now),
        "terminal": run.status in TERMINAL_STATUSES,
        "steps": steps,
        "analysis": _analysis(plan),
        "diagnosis": detail.diagnosis,
        "diff": diff_lines(diff) if diff is not None else None,
        "artifacts": detail.artifacts,
        "approval": approval,
        "actions": actions_for(principal, run, detail, approval),
        "audit": audit.entries(run),
        "dry_run": detail.dry_run,
        "webhooks": detail.webhook_deliveries,
    }
