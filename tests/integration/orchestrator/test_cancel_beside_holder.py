"""Cancelling an idle run whose patch is on disk while another run holds its service: the
rollback waits for the service, and never runs beside the holder.

B failed past its approval gate with its patch in place, was retried and approved while
run A held the service (B waits, pending). Cancelling B queues nothing that could run
beside A: once A ends, B's queued step turns into its rollback, and B ends cancelled. B
parked at its gate beside A (as runs parked before the service lock could) goes back to
pending with its rollback queued, which waits for A the same way.

As in test_gate_service_lock: the API in-process over ASGI on PostgreSQL and RabbitMQ, the
worker's side the real claim/record protocol with the steps' outcomes given.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import transitions
from moonmind.workflows.orchestrator.enums import RunStatus, StepName
from moonmind.workflows.orchestrator.steps import StepFailed, StepResult
from tests.support.auth import ALICE, BOB
from tests.support.gated_runs import APPROVAL, failed_at_restart, queued_run
from tests.support.worker_side import NO_METRICS, run_step, take_messages

pytestmark = pytest.mark.anyio


async def _parked_beside_holder(
    api: httpx.AsyncClient, db: Database, settings: Settings, service: str
) -> tuple[uuid.UUID, uuid.UUID]:
    """B (patched, retried, awaiting approval) and A, which holds B's service: (B, A)."""
    b = failed_at_restart(db, settings, service, with_rollback=True)
    retried = await api.post(f"/orchestrator/runs/{b}/retry", headers=ALICE.headers)
    assert retried.json()["status"] == "awaiting_approval", retried.text
    a = queued_run(db, service, steps=[StepName.ANALYZE], status=RunStatus.RUNNING)
    return b, a


async def _cancel(api: httpx.AsyncClient, run_id: uuid.UUID) -> dict[str, object]:
    cancelled = await api.post(f"/orchestrator/runs/{run_id}/cancel", headers=ALICE.headers)
    assert cancelled.status_code == 202, cancelled.text
    body: dict[str, object] = cancelled.json()
    return body


def _ends_cancelled(
    db: Database, settings: Settings, b: uuid.UUID, step: StepName, message_id: str
) -> None:
    """``step``'s message, now that the service is free, leads to the rollback; B ends."""
    started = transitions.claim(db, settings, step, b, message_id)
    assert isinstance(started, transitions.Started), started
    if step != StepName.ROLLBACK:
        assert started.cancel_requested
        after = transitions.record(db, NO_METRICS, started, StepFailed("cancelled"), 0.1)
        assert after.queued is not None
        assert after.queued.step == StepName.ROLLBACK
        started = transitions.claim(db, settings, StepName.ROLLBACK, b, after.queued.task_id)
        assert isinstance(started, transitions.Started), started
    ended = transitions.record(db, NO_METRICS, started, StepResult("restored"), 0.1)
    assert ended.closed is not None
    assert ended.closed.status == RunStatus.CANCELLED


async def test_a_pending_runs_rollback_waits_for_the_holder(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    b, a = await _parked_beside_holder(api, db, settings, service)
    approved = await api.post(
        f"/orchestrator/runs/{b}/approvals", json=APPROVAL, headers=BOB.headers
    )
    assert approved.json()["status"] == "pending", approved.text
    ((task, restart_id),) = take_messages(amqp_url, queue_name)
    assert task == "orchestrator.restart"

    body = await _cancel(api, b)
    assert body["status"] == "pending"  # not running beside A
    assert f"waits for run {a}, which holds {service}" in str(body["message"])
    assert take_messages(amqp_url, queue_name) == []  # no rollback sent beside A
    waiting = transitions.claim(db, settings, StepName.RESTART, b, restart_id)
    assert isinstance(waiting, transitions.Waiting), waiting
    assert waiting.holder == a

    run_step(db, settings, a, StepName.ANALYZE, StepResult("ok"))  # A ends
    _ends_cancelled(db, settings, b, StepName.RESTART, restart_id)


async def test_a_run_parked_beside_the_holder_rolls_back_after_it(
    api: httpx.AsyncClient, db: Database, settings: Settings, amqp_url: str, queue_name: str
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    b, a = await _parked_beside_holder(api, db, settings, service)
    take_messages(amqp_url, queue_name)

    body = await _cancel(api, b)
    assert body["status"] == "pending"
    assert f"waits for run {a}, which holds {service}" in str(body["message"])
    ((task, rollback_id),) = take_messages(amqp_url, queue_name)
    assert task == "orchestrator.rollback"
    waiting = transitions.claim(db, settings, StepName.ROLLBACK, b, rollback_id)
    assert isinstance(waiting, transitions.Waiting), waiting

    run_step(db, settings, a, StepName.ANALYZE, StepResult("ok"))  # A ends
    _ends_cancelled(db, settings, b, StepName.ROLLBACK, rollback_id)
