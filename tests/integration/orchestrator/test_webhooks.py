"""Webhooks (issue 13, point 3): a real fix run of a protected service, a real API and
worker on PostgreSQL and RabbitMQ, and three real receivers on 127.0.0.1.

One run feeds every test of this module (module-scoped, to build the stack once): the
good receiver gets ``run.awaiting_approval`` and the run's end (``run.succeeded``; a
rolled-back run's ``run.rolled_back`` is as good an end event), a flaky one answers
500 twice before 200, and a dead one accepts the connection and never answers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import (
    Orchestrator,
    bring_up,
    health_config,
    remove_stack,
)
from tests.support.auth import ALICE, BOB, principals_toml
from tests.support.broker import delete_queues
from tests.support.processes import start_api, start_worker
from tests.support.stack import make_stack
from tests.support.webhooks import HangingReceiver, Receiver

GOOD_SECRET = "good-receiver-secret-1f0c2e"
FLAKY_SECRET = "flaky-receiver-secret-77ab90"
DEAD_SECRET = "dead-receiver-secret-c3d4e5"
PUBLIC_URL = "https://moonmind.example.test"
URL_TOKEN = "url-borne-token-5e6f"  # a credential in the query string: never shown
TERMINAL = '["run.succeeded", "run.failed", "run.rolled_back", "run.cancelled"]'


@dataclass
class Scenario:
    orchestrator: Orchestrator
    run_id: str
    detail: dict[str, Any]
    good: Receiver
    flaky: Receiver
    dead: HangingReceiver

    @property
    def end_event(self) -> str:
        return f"run.{self.detail['status']}"


def _config(stack_cfg: str, good: Receiver, flaky: Receiver, dead: HangingReceiver) -> str:
    return (
        principals_toml(ALICE, BOB)
        + stack_cfg
        + 'protected = true\napproval_requirement = "pre-run"\napprover_roles = ["sre"]\n'
        + f'[[orchestrator.webhooks]]\nurl = "{good.url}?key={URL_TOKEN}"\n'
        + f'secret = "{GOOD_SECRET}"\n'
        + f'[[orchestrator.webhooks]]\nurl = "{flaky.url}"\nsecret = "{FLAKY_SECRET}"\n'
        + f"events = {TERMINAL}\n"
        + f'[[orchestrator.webhooks]]\nurl = "{dead.url}"\nsecret = "{DEAD_SECRET}"\n'
        + f"events = {TERMINAL}\n"
    )


def _wait(orchestrator: Orchestrator, run_id: str, done: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        detail = orchestrator.run_detail(run_id)
        if done(detail):
            return detail
        time.sleep(0.3)
    raise AssertionError(f"{what} never happened: {orchestrator.explain(detail)}")


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, migrated_postgres: str, amqp_url: str
) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("webhooks")
    stack = make_stack(root / "workspace", project=f"mmhook{uuid.uuid4().hex[:8]}")
    good, flaky, dead = Receiver(), Receiver(script=[500, 500]), HangingReceiver()
    queue = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
    (root / "config.toml").write_text(_config(health_config(stack), good, flaky, dead))
    env = {
        "MOONMIND_CONFIG": str(root / "config.toml"),
        "MOONMIND_DATABASE_URL": migrated_postgres,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": queue,
        "ORCHESTRATOR_WORKSPACE": str(stack.root),
        "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(root / "artifacts"),
        "ORCHESTRATOR_PUBLIC_URL": PUBLIC_URL,
    }
    api = worker = None
    try:
        bring_up(stack)
        api, base = start_api(env, root)
        worker = start_worker(env, root)
        orchestrator = Orchestrator(base, root / "artifacts", api, env, root, worker)
        orchestrator.headers = ALICE.headers
        created = orchestrator.post_run(
            instruction="fix the missing dependency", target_service="app"
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        _wait(orchestrator, run_id, lambda d: d["status"] == "awaiting_approval", "the gate")
        good.wait_for("run.awaiting_approval")
        approved = httpx.post(
            f"{base}/orchestrator/runs/{run_id}/approvals",
            json={"approver": {"id": "bob", "role": "sre"}, "token": "hook-approval-token"},
            headers=BOB.headers,
            timeout=30,
        )
        assert approved.status_code == 200, approved.text
        ended = orchestrator.wait_terminal(run_id)
        # The end event is what is under test; a repair that had to roll back ends too.
        assert ended["status"] in ("succeeded", "rolled_back"), orchestrator.explain(ended)
        yield Scenario(orchestrator, run_id, ended, good, flaky, dead)
    finally:
        for process in (api, worker):
            if process is not None:
                process.stop()
        for receiver in (good, flaky, dead):
            receiver.close()
        remove_stack(stack)
        delete_queues(amqp_url, queue)


def _deliveries(scenario: Scenario, url: str) -> list[dict[str, Any]]:
    detail = scenario.orchestrator.run_detail(scenario.run_id)
    return [d for d in detail["webhook_deliveries"] if d["url"] == url]


@pytest.mark.docker
def test_a_receiver_gets_the_signed_approval_request_and_the_end(scenario: Scenario) -> None:
    run_id, good = scenario.run_id, scenario.good
    (waiting,) = good.wait_for("run.awaiting_approval")
    (ended,) = good.wait_for(scenario.end_event)
    for received in (waiting, ended):
        assert received.signed_with(GOOD_SECRET)
        assert not received.signed_with(FLAKY_SECRET)
        body = received.json()
        assert body["run_id"] == run_id
        assert body["service"] == "app"
        assert body["requested_by"] == "alice"
        assert body["links"] == {
            "run_page": f"{PUBLIC_URL}/runs/{run_id}",
            "api": f"{PUBLIC_URL}/orchestrator/runs/{run_id}",
        }
        assert received.headers["x-moonmind-delivery"] == body["delivery_id"]
        assert int(received.headers["x-moonmind-timestamp"]) > 0
    assert waiting.json()["status"] == "awaiting_approval"
    assert "sre" in waiting.json()["message"]
    assert ended.json()["status"] == scenario.detail["status"]
    shown = {(d["event"], d["status"], d["attempts"]) for d in _deliveries(scenario, good.url)}
    assert shown == {
        ("run.awaiting_approval", "delivered", 1),
        (scenario.end_event, "delivered", 1),
    }
    detail_now = scenario.orchestrator.run_detail(run_id)
    for secret in (GOOD_SECRET, FLAKY_SECRET, DEAD_SECRET, URL_TOKEN):
        assert secret not in scenario.orchestrator.worker_output()
        assert secret not in scenario.orchestrator.api.output()
        assert secret not in str(detail_now)


@pytest.mark.docker
def test_a_receiver_failing_twice_gets_the_event_once_on_the_third_attempt(
    scenario: Scenario,
) -> None:
    flaky = scenario.flaky
    tries = flaky.wait_for(scenario.end_event, count=3, timeout=30)
    assert [r.answered for r in tries] == [500, 500, 200]
    assert len({r.body for r in tries}) == 1  # the same signed bytes every time
    assert all(r.signed_with(FLAKY_SECRET) for r in tries)
    assert flaky.events("run.awaiting_approval") == []  # it asked for the end only
    deadline = time.monotonic() + 10
    while True:
        (delivery,) = _deliveries(scenario, flaky.url)
        if delivery["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delivery["event"] == scenario.end_event
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)
    assert delivery["response_status"] == 200
    assert delivery["delivered_at"] is not None
    time.sleep(1.5)  # a fourth POST would have come by now (the next backoff is 4 s at most)
    assert len(flaky.events(scenario.end_event)) == 3


@pytest.mark.docker
def test_a_receiver_that_never_answers_does_not_hold_the_run(scenario: Scenario) -> None:
    detail = scenario.detail
    last_step_end = max(
        datetime.fromisoformat(s["completed_at"]) for s in detail["steps"] if s["completed_at"]
    )
    run_end = datetime.fromisoformat(detail["completed_at"])
    assert (run_end - last_step_end).total_seconds() <= 0.1, (run_end, last_step_end)
    # The receiver did take the connection and kept it without an answer: the attempt
    # timed out in the worker's delivery thread, long after the run had ended.
    deadline = time.monotonic() + 30
    while True:
        (delivery,) = _deliveries(scenario, scenario.dead.url)
        if delivery["attempts"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert scenario.dead.accepted, "the dead receiver was never contacted"
    assert delivery["attempts"] >= 1
    assert delivery["status"] == "pending"  # to be tried again later
    assert "Timeout" in (delivery["last_error"] or ""), delivery
    assert datetime.fromisoformat(delivery["last_attempt_at"]) > run_end


@pytest.mark.docker
def test_a_cancel_made_through_the_api_is_posted_by_the_worker(scenario: Scenario) -> None:
    """The API writes the event with the status change; the worker's thread sends it."""
    orchestrator, good = scenario.orchestrator, scenario.good
    created = orchestrator.post_run(instruction="fix it again", target_service="app")
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    _wait(orchestrator, run_id, lambda d: d["status"] == "awaiting_approval", "the gate")
    cancelled = httpx.post(
        f"{orchestrator.base_url}/orchestrator/runs/{run_id}/cancel",
        headers=ALICE.headers,
        timeout=30,
    )
    assert cancelled.status_code == 202, cancelled.text
    found = [r for r in good.wait_for("run.cancelled") if r.json()["run_id"] == run_id]
    assert len(found) == 1
    assert found[0].signed_with(GOOD_SECRET)
    assert found[0].json()["status"] == "cancelled"
