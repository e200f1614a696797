"""A retry voids the run's approval, also when it resumes after its service's gated step.

A protected run that failed past its gate (the engine went away during restart or build)
and is retried from there waits for a fresh approval; that approval continues it at the
step it resumed at, without running the gated step again. A resumed rollback never waits.

The API runs in-process over ASGI on the session's PostgreSQL and RabbitMQ; the worker's
side is the real claim/record protocol (transitions) with the steps' outcomes given, so
no Docker is needed (the fixtures: tests/support/worker_side.py, via conftest).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName, StepStatus, TaskStateName
from moonmind.workflows.orchestrator.steps import StepFailed, StepResult
from tests.support.auth import ALICE, BOB
from tests.support.factories import create_run
from tests.support.worker_side import ENGINE_GONE, run_step, take_messages

pytestmark = pytest.mark.anyio

DIFF = "e" * 64


def _failed_past_its_gate(
    db: Database, settings: Settings, requirement: str, failing: StepName
) -> uuid.UUID:
    """alice's approved run of a protected service, whose ``failing`` step (after the gated
    one) lost the Docker engine: failed, with nothing to roll back."""
    with db.session() as session:
        run = create_run(
            session,
            service=f"svc-{uuid.uuid4().hex[:8]}",
            protected={"approval_requirement": requirement, "approver_roles": ("sre",)},
        )
        run.requested_by = "alice"
        expires = policies.utcnow() + timedelta(minutes=10)
        run.approval = {
            "approver_id": "bob",
            "expires_at": expires.isoformat(),
            "diff_sha256": DIFF if requirement == "pre-verify" else None,
        }
        repo.record_task_state(
            session, run.id, StepName.ANALYZE, TaskStateName.PENDING, celery_task_id="t-analyze"
        )
        run_id = run.id
    results = {StepName.PATCH: {"diff_sha256": DIFF}}
    for step in (StepName.ANALYZE, StepName.PATCH, StepName.BUILD, StepName.RESTART):
        if step == failing:
            after = run_step(db, settings, run_id, step, ENGINE_GONE)
            assert after.closed is not None
            assert after.closed.status == RunStatus.FAILED
            return run_id
        after = run_step(db, settings, run_id, step, StepResult("ok", results.get(step, {})))
        assert after.queued is not None, (step, after)
    raise AssertionError(f"{failing} is not one of the steps driven")


@pytest.mark.parametrize(
    ("requirement", "failing", "gated"),
    [
        pytest.param("pre-verify", StepName.RESTART, StepName.BUILD, id="pre-verify-restart"),
        pytest.param("pre-run", StepName.BUILD, StepName.PATCH, id="pre-run-build"),
    ],
)
async def test_a_retry_past_the_gate_waits_then_resumes_where_it_was_retried(
    api: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    amqp_url: str,
    queue_name: str,
    requirement: str,
    failing: StepName,
    gated: StepName,
) -> None:
    run_id = _failed_past_its_gate(db, settings, requirement, failing)
    with db.session() as session:
        row = repo.get_run(session, run_id)
        assert row is not None
        gated_done_at = row.action_plan.steps[list(StepName).index(gated)]["completed_at"]

    retried = await api.post(f"/orchestrator/runs/{run_id}/retry", headers=ALICE.headers)
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert body["status"] == "awaiting_approval", body
    assert body["approval_status"] == "awaiting"
    assert f"then it resumes at {failing.value}" in body["message"]
    if requirement == "pre-verify":
        assert f"of the diff {DIFF}" in body["message"]
    assert take_messages(amqp_url, queue_name) == []  # nothing runs before the approval

    approval = {"approver": {"id": "bob", "role": "sre"}, "token": "t-again"}
    if requirement == "pre-verify":
        approval["diff_sha256"] = DIFF
    approved = await api.post(
        f"/orchestrator/runs/{run_id}/approvals", json=approval, headers=BOB.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "running"
    sent = take_messages(amqp_url, queue_name)
    assert [task for task, _ in sent] == [f"orchestrator.{failing.value}"]  # not the gated step

    # The worker takes that very message and the run goes on to the end.
    step: StepName | None = failing
    while step is not None:
        after = run_step(db, settings, run_id, step, StepResult("ok"))
        step = after.queued.step if after.queued is not None else None
    assert after.closed is not None
    assert after.closed.status == RunStatus.SUCCEEDED
    with db.session() as session:
        row = repo.get_run(session, run_id)
        assert row is not None
        gated_step = row.action_plan.steps[list(StepName).index(gated)]
        assert gated_step["status"] == StepStatus.SUCCEEDED
        assert gated_step["completed_at"] == gated_done_at  # the gated step did not run again


async def test_a_resumed_rollback_does_not_wait(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    """Putting back what the run changed needs nobody's approval."""
    with db.session() as session:
        run = create_run(
            session,
            service=f"svc-{uuid.uuid4().hex[:8]}",
            steps=list(StepName),
            protected={"approval_requirement": "pre-run", "approver_roles": ("sre",)},
        )
        run.requested_by = "alice"
        expires = policies.utcnow() + timedelta(minutes=10)
        run.approval = {"approver_id": "bob", "expires_at": expires.isoformat()}
        repo.record_task_state(
            session, run.id, StepName.ANALYZE, TaskStateName.PENDING, celery_task_id="t-a"
        )
        run_id = run.id
    run_step(db, settings, run_id, StepName.ANALYZE, StepResult("ok"))
    run_step(db, settings, run_id, StepName.PATCH, StepResult("ok", {"diff_sha256": DIFF}))
    after = run_step(db, settings, run_id, StepName.BUILD, StepFailed("build broke"))
    assert after.queued is not None
    assert after.queued.step == StepName.ROLLBACK
    after = run_step(db, settings, run_id, StepName.ROLLBACK, StepFailed("engine gone"))
    assert after.closed is not None
    assert after.closed.status == RunStatus.FAILED

    retried = await api.post(f"/orchestrator/runs/{run_id}/retry", headers=ALICE.headers)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "pending"
    assert [task for task, _ in take_messages(amqp_url, queue_name)] == ["orchestrator.rollback"]
