"""A protected run waiting at its gate holds its service: it never does so beside another run.

A retry that would park the run at its approval gate takes the service's lock and is
refused (409) while another run holds the service; once that run has ended the same retry
is accepted, and the approval continues the run. A run that is parked beside a holder all
the same (one parked before retries took the lock) goes back to pending when approved: the
worker's claim then waits for the service, and the run goes on, without asking for its
approval again, once the other run has ended, unless that approval expired meanwhile:
then the run parks at its gate again for a new one.

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
from moonmind.workflows.orchestrator import policies, transitions
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName, StepStatus
from moonmind.workflows.orchestrator.steps import StepResult
from tests.support.auth import ALICE, BOB
from tests.support.gated_runs import APPROVAL, failed_at_restart, queued_run, sent_tasks
from tests.support.worker_side import (
    NO_METRICS,
    claim_queued,
    run_step,
    take_messages,
)

pytestmark = pytest.mark.anyio


def _finish(db: Database, settings: Settings, run_id: uuid.UUID, step: StepName) -> None:
    """Run the queued ``step`` and every later one to success, no gate on the way."""
    nxt: StepName | None = step
    while nxt is not None:
        after = run_step(db, settings, run_id, nxt, StepResult("ok"))
        assert after.gated is None, after.gated  # the approval given still counts
        nxt = after.queued.step if after.queued is not None else None
    assert after.closed is not None, after
    assert after.closed.status == RunStatus.SUCCEEDED, after


def _build_done_at(db: Database, run_id: uuid.UUID) -> object:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        build = run.action_plan.steps[list(StepName).index(StepName.BUILD)]
        assert build["status"] == StepStatus.SUCCEEDED
        return build["completed_at"]


async def test_a_retry_to_the_gate_is_refused_while_another_run_holds_the_service(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    b = failed_at_restart(db, settings, service)
    a = queued_run(db, service, steps=[StepName.ANALYZE])
    started_a = claim_queued(db, settings, a, StepName.ANALYZE)  # A takes the service
    assert isinstance(started_a, transitions.Started), started_a
    sent_tasks(amqp_url, queue_name)  # nothing of B's may be queued from here on

    refused = await api.post(f"/orchestrator/runs/{b}/retry", headers=ALICE.headers)
    assert refused.status_code == 409, refused.text
    error = refused.json()
    assert error["error"] == "retry_rejected"
    assert f"run {a} holds {service}" in error["detail"]
    assert f"/orchestrator/runs/{a}" in error["remediation"]
    with db.session() as session:
        row = repo.get_run(session, b)
        assert row is not None
        assert row.status == RunStatus.FAILED
        assert row.approval is not None
    assert sent_tasks(amqp_url, queue_name) == []

    # A ends: the service is free, the same retry waits at its gate and the approval runs it.
    ended = transitions.record(db, NO_METRICS, started_a, StepResult("ok"), 0.1)
    assert ended.closed is not None
    assert ended.closed.status == RunStatus.SUCCEEDED
    retried = await api.post(f"/orchestrator/runs/{b}/retry", headers=ALICE.headers)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "awaiting_approval"
    approved = await api.post(
        f"/orchestrator/runs/{b}/approvals", json=APPROVAL, headers=BOB.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "running"
    assert sent_tasks(amqp_url, queue_name) == ["orchestrator.restart"]
    _finish(db, settings, b, StepName.RESTART)


async def test_an_approval_beside_a_holder_waits_for_the_service_then_resumes(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    b = failed_at_restart(db, settings, service)
    build_done_at = _build_done_at(db, b)
    retried = await api.post(f"/orchestrator/runs/{b}/retry", headers=ALICE.headers)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "awaiting_approval"
    # A holds the service beside the parked B, as runs parked before the fix could.
    a = queued_run(db, service, steps=[StepName.ANALYZE], status=RunStatus.RUNNING)

    approved = await api.post(
        f"/orchestrator/runs/{b}/approvals", json=APPROVAL, headers=BOB.headers
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "pending", body
    assert f"waiting for run {a}, which holds {service}" in body["message"]
    assert body["approval_status"] == "granted"
    assert sent_tasks(amqp_url, queue_name) == ["orchestrator.restart"]

    waiting = claim_queued(db, settings, b, StepName.RESTART)  # the worker's delivery of it
    assert isinstance(waiting, transitions.Waiting), waiting
    assert waiting.holder == a
    with db.session() as session:
        row = repo.get_run(session, b)
        assert row is not None
        assert row.status == RunStatus.PENDING
        assert row.action_plan.steps[list(StepName).index(StepName.RESTART)]["status"] == (
            StepStatus.PENDING
        )

    run_step(db, settings, a, StepName.ANALYZE, StepResult("ok"))  # A ends
    _finish(db, settings, b, StepName.RESTART)  # the redelivered message now starts
    assert _build_done_at(db, b) == build_done_at  # the gated step did not run again


def _expire_approval(db: Database, run_id: uuid.UUID) -> None:
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        assert run is not None
        assert run.approval is not None
        lapsed = policies.utcnow() - timedelta(seconds=1)
        run.approval = {**run.approval, "expires_at": lapsed.isoformat()}


async def test_an_approval_that_expires_while_the_run_waits_is_asked_for_again(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    """Approved beside a holder, the run waits for its service; its approval runs out
    meanwhile. The delivery that finds the service free parks it at the gate again instead
    of going on, and a new approval sends the step."""
    service = f"svc-{uuid.uuid4().hex[:8]}"
    b = failed_at_restart(db, settings, service)
    build_done_at = _build_done_at(db, b)
    retried = await api.post(f"/orchestrator/runs/{b}/retry", headers=ALICE.headers)
    assert retried.json()["status"] == "awaiting_approval", retried.text
    a = queued_run(db, service, steps=[StepName.ANALYZE], status=RunStatus.RUNNING)
    approved = await api.post(
        f"/orchestrator/runs/{b}/approvals", json=APPROVAL, headers=BOB.headers
    )
    assert approved.json()["status"] == "pending", approved.text
    ((task, first_id),) = take_messages(amqp_url, queue_name)
    assert task == "orchestrator.restart"

    run_step(db, settings, a, StepName.ANALYZE, StepResult("ok"))  # A ends
    _expire_approval(db, b)
    parked = transitions.claim(db, settings, StepName.RESTART, b, first_id)
    assert parked is None  # nothing started
    with db.session() as session:
        row = repo.get_run(session, b)
        assert row is not None
        assert row.status == RunStatus.AWAITING_APPROVAL
        assert row.message is not None
        assert row.message.startswith(f"the approval expired while the run waited for {service}")
        assert row.action_plan.steps[list(StepName).index(StepName.RESTART)]["status"] == (
            StepStatus.PENDING
        )
    detail = (await api.get(f"/orchestrator/runs/{b}", headers=ALICE.headers)).json()
    assert detail["approval_status"] == "expired"

    again = await api.post(f"/orchestrator/runs/{b}/approvals", json=APPROVAL, headers=BOB.headers)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "running"
    ((task, second_id),) = take_messages(amqp_url, queue_name)
    assert task == "orchestrator.restart"
    started = transitions.claim(db, settings, StepName.RESTART, b, second_id)
    assert isinstance(started, transitions.Started), started
    after = transitions.record(db, NO_METRICS, started, StepResult("ok"), 0.1)
    assert after.queued is not None
    _finish(db, settings, b, after.queued.step)
    assert _build_done_at(db, b) == build_done_at  # the gated build did not run again
