"""Approval gates: which runs must wait for a person, and whether an approval counts.

A protected service's runs stop at a gate: before patching (`pre-run`), or after the
diff exists and before anything is built (`pre-verify`, the approval then names the
diff's sha256, so a different diff is not approved). The approver needs one of the
service's roles and may not be the requester; an approval lasts at most the gate's
lifetime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from api_service.db.models import ApprovalGate, OrchestratorRun
from moonmind.schemas.workflow_models import ApprovalRequest
from moonmind.workflows.orchestrator.enums import (
    STEP_ORDER,
    ApprovalRequirement,
    RunStatus,
    StepName,
)
from moonmind.workflows.orchestrator.plan import Plan, context_of
from moonmind.workflows.orchestrator.repositories import (
    approval_gate_row,
    as_utc,
    set_metrics,
    transition_run,
)
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile

GATED_STEP = {
    ApprovalRequirement.PRE_RUN: StepName.PATCH,
    ApprovalRequirement.PRE_VERIFY: StepName.BUILD,
}


class ApprovalRejected(Exception):
    """The approval cannot be accepted; the message says why and what would work."""


class ApprovalForbidden(ApprovalRejected):
    """Not this approver: a role the gate does not allow, or the requester themself."""


@dataclass(frozen=True)
class Gate:
    requirement: ApprovalRequirement
    roles: tuple[str, ...]
    valid_minutes: int

    @property
    def step(self) -> StepName:
        return GATED_STEP[self.requirement]


def gate_for(profile: ServiceProfile) -> Gate | None:
    if not profile.protected:
        return None
    return Gate(
        ApprovalRequirement(profile.approval_requirement),
        profile.approver_roles,
        profile.approval_valid_minutes,
    )


def effective_gate(gate: Gate, *, operator_patch: bool, patched: bool) -> Gate:
    """A caller's patch is code: once it is written, the run waits for an approval of that
    exact diff before anything is built, whatever the gate's own requirement."""
    if operator_patch and patched:
        return replace(gate, requirement=ApprovalRequirement.PRE_VERIFY)
    return gate


def run_gate(run: OrchestratorRun, *, patched: bool) -> Gate | None:
    """The gate this run waits at, given whether its patch is written: its service's gate,
    moved before the build once a diff that needs a person exists (diff_needs_approval)."""
    gate = gate_for(context_of(run.action_plan).profile)
    if gate is None:
        return None
    return effective_gate(gate, operator_patch=diff_needs_approval(run), patched=patched)


def gate_at(run: OrchestratorRun, step: StepName, *, patched: bool) -> Gate | None:
    """The run's gate if it stands right before ``step``, else None."""
    gate = run_gate(run, patched=patched)
    return gate if gate is not None and gate.step == step else None


def gate_reached(run: OrchestratorRun, step: StepName, *, patched: bool) -> Gate | None:
    """The run's gate if a run starting at ``step`` (a retry resumed there) stands at it or
    past it on the forward path; a resumed rollback reaches none: it only puts things back."""
    gate = run_gate(run, patched=patched)
    if gate is None or step == StepName.ROLLBACK:
        return None
    return gate if STEP_ORDER.index(step) >= STEP_ORDER.index(gate.step) else None


def diff_needs_approval(run: OrchestratorRun) -> bool:
    """The run's diff itself needs a person: the caller wrote it, or a rule guessed a
    package name (not in its tables); then a protected service approves that exact diff."""
    guesses = Plan.of(run.action_plan).result(StepName.PATCH).get("guesses")
    return bool(run.requested_patch) or bool(guesses)


def token_sha256(token: str) -> str:
    """How a token is kept: the hex sha256 of its text, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def sync_gate(session: Session, service: str, gate: Gate) -> ApprovalGate:
    """The approval_gates row for a service, kept equal to its configured policy (the row
    is inserted race-free; unchanged values write nothing)."""
    row = approval_gate_row(session, service)
    row.requirement = gate.requirement
    row.approver_roles = list(gate.roles)
    row.valid_for_minutes = gate.valid_minutes
    session.flush()
    return row


def approval_valid(run: OrchestratorRun, *, now: datetime, diff_sha256: str | None = None) -> bool:
    record = run.approval
    if not record:
        return False
    if datetime.fromisoformat(record["expires_at"]) <= now:
        return False
    if diff_sha256 is not None:  # approving a diff: only an approval of that diff counts
        return bool(record.get("diff_sha256") == diff_sha256)
    return True


def approval_status(
    run: OrchestratorRun | Row[Any], gate_requirement: str | None, now: datetime
) -> str:
    if gate_requirement is None:
        return "not_required"
    if run.approval:
        if datetime.fromisoformat(run.approval["expires_at"]) > now:
            return "granted"
        return "expired"
    return "awaiting"


def accept(
    run: OrchestratorRun,
    gate: Gate,
    request: ApprovalRequest,
    *,
    now: datetime,
    diff_sha256: str | None,
) -> dict[str, Any]:
    """Check an approval against the gate; the record to store on the run."""
    if run.status not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL):
        raise ApprovalRejected(f"run is {run.status.value}; only unfinished runs can be approved")
    if request.approver.role not in gate.roles:
        raise ApprovalForbidden(
            f"role {request.approver.role!r} may not approve {run.target_service}; "
            f"allowed roles: {', '.join(gate.roles)}"
        )
    if run.requested_by and request.approver.id == run.requested_by:
        raise ApprovalForbidden("the requester cannot approve their own run (four-eyes rule)")
    expires = now + timedelta(minutes=gate.valid_minutes)
    if request.expires_at is not None:
        asked = as_utc(request.expires_at)
        assert asked is not None
        if asked <= now:
            raise ApprovalRejected("the approval has already expired")
        expires = min(expires, asked)
    if gate.requirement == ApprovalRequirement.PRE_VERIFY:
        if diff_sha256 is None:
            raise ApprovalRejected(
                "this service's gate approves a diff: wait until the run is awaiting_approval, "
                "then approve the sha256 of its patch.diff"
            )
        if request.diff_sha256 != diff_sha256:
            raise ApprovalRejected(
                f"the approval names diff {request.diff_sha256 or '(none)'} but the run's "
                f"patch.diff is {diff_sha256}"
            )
    return {
        "approver_id": request.approver.id,
        "role": request.approver.role,
        "approved_at": now.isoformat(),
        "expires_at": expires.isoformat(),
        "token_sha256": token_sha256(request.token),
        "diff_sha256": diff_sha256 if gate.requirement == ApprovalRequirement.PRE_VERIFY else None,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


def park_unless_approved(
    session: Session,
    run: OrchestratorRun,
    gate: Gate,
    diff_sha256: str | None,
    *,
    after_waiting: bool = False,
) -> str | None:
    """Park a running run at ``gate`` unless a valid approval covers it (of the diff, for a
    gate before the build): the message it waits with, or None when it may go on.

    ``after_waiting``: the run waited for its service; an approval it had expired then."""
    diff = diff_sha256 if gate.step == StepName.BUILD else None
    if approval_valid(run, now=utcnow(), diff_sha256=diff):
        return None
    lapsed = ""
    if after_waiting and run.approval:
        lapsed = f"the approval expired while the run waited for {run.target_service}; "
    what = f"the diff {diff}" if diff else "this run"
    message = (
        f"{lapsed}awaiting approval of {what} by one of: {', '.join(gate.roles)} "
        f"(POST /orchestrator/runs/{run.id}/approvals)"
    )
    transition_run(
        session, run.id, expected=[RunStatus.RUNNING], new=RunStatus.AWAITING_APPROVAL,
        message=message,
    )  # fmt: skip
    run.status, run.message = RunStatus.AWAITING_APPROVAL, message
    set_metrics(session, run, approval_requested_at=utcnow().isoformat())
    return message
