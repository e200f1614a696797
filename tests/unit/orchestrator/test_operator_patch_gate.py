"""A caller's patch is code: on a protected service it waits for an approval of its diff."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator.enums import ApprovalRequirement, StepName

PRE_RUN = policies.Gate(ApprovalRequirement.PRE_RUN, ("sre",), 10)


def _run(approval: dict[str, Any] | None) -> Any:
    return SimpleNamespace(approval=approval)


def test_an_operator_patch_moves_the_gate_to_its_diff_once_written() -> None:
    assert policies.effective_gate(PRE_RUN, operator_patch=True, patched=False).step == (
        StepName.PATCH
    )
    moved = policies.effective_gate(PRE_RUN, operator_patch=True, patched=True)
    assert moved.requirement == ApprovalRequirement.PRE_VERIFY
    assert moved.step == StepName.BUILD
    assert policies.effective_gate(PRE_RUN, operator_patch=False, patched=True) == PRE_RUN


def test_an_approval_without_that_diff_does_not_cover_the_build() -> None:
    now = policies.utcnow()
    later = (now + timedelta(minutes=5)).isoformat()
    pre_run_approval = _run({"expires_at": later, "diff_sha256": None})
    assert policies.approval_valid(pre_run_approval, now=now)  # covers the patch step
    assert not policies.approval_valid(pre_run_approval, now=now, diff_sha256="a" * 64)
    of_diff = _run({"expires_at": later, "diff_sha256": "a" * 64})
    assert policies.approval_valid(of_diff, now=now, diff_sha256="a" * 64)
    assert not policies.approval_valid(of_diff, now=now, diff_sha256="b" * 64)
