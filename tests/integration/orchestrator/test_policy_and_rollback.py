"""Approval gates and retries against the real engine, worker, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import (
    Orchestrator,
    attempts,
    bring_up,
    health_config,
    inspect_container,
    tree_bytes,
)
from tests.support.auth import ALICE, BOB, CAROL, Caller, principals_toml
from tests.support.stack import Stack
from tests.support.statsd import StatsdSink

Starter = Callable[..., Orchestrator]
PREFIX = "mmtest.policy"
TOKEN = "approval-token-7f3a9c"


def _protected(stack: Stack, requirement: str) -> str:
    """alice (operator) asks; bob holds the gate's role sre; carol approves but lacks it."""
    return (
        principals_toml(ALICE, BOB, CAROL)
        + health_config(stack)
        + (
            "protected = true\n"
            f'approval_requirement = "{requirement}"\n'
            'approver_roles = ["sre"]\n'
            "approval_valid_minutes = 10\n"
        )
    )


def _wait_status(orchestrator: Orchestrator, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        detail = orchestrator.run_detail(run_id)
        if detail["status"] == status:
            return detail
        assert detail["status"] not in ("succeeded", "failed", "rolled_back"), detail
        time.sleep(0.3)
    raise AssertionError(f"run never reached {status}")


def _approve(
    orchestrator: Orchestrator, run_id: str, caller: Caller, **body: Any
) -> httpx.Response:
    return httpx.post(
        f"{orchestrator.base_url}/orchestrator/runs/{run_id}/approvals",
        json=body,
        headers=caller.headers,
        timeout=30,
    )


def _app_image(stack: Stack) -> str:
    return str(inspect_container(stack, "app")["Image"])


@pytest.mark.docker
def test_pre_run_gate_holds_until_an_allowed_second_person_approves(
    broken_stack: Stack, start_orchestrator: Starter, statsd: StatsdSink
) -> None:
    bring_up(broken_stack)
    env = {"STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(statsd.port), "STATSD_PREFIX": PREFIX}
    orchestrator = start_orchestrator(
        broken_stack, config=_protected(broken_stack, "pre-run"), api_env=env, worker_env=env
    )
    orchestrator.headers = ALICE.headers
    before = tree_bytes(broken_stack.root)
    response = orchestrator.post_run(
        instruction="fix the missing dependency", target_service="app", requested_by="alice"
    )
    assert response.status_code == 202
    summary = response.json()
    assert summary["approval_required"] is True
    run_id = summary["run_id"]

    waiting = _wait_status(orchestrator, run_id, "awaiting_approval")
    assert waiting["approval_status"] == "awaiting"
    assert "sre" in waiting["message"]
    steps = {s["name"]: s["status"] for s in waiting["steps"]}
    assert steps["analyze"] == "succeeded"
    assert steps["patch"] == "pending"
    assert tree_bytes(broken_stack.root) == before  # halted before editing files

    wrong_role = _approve(
        orchestrator, run_id, CAROL, approver={"id": "carol", "role": "approver"}, token=TOKEN
    )
    assert wrong_role.status_code == 403
    assert "allowed roles: sre" in wrong_role.json()["detail"]
    own_run = _approve(
        orchestrator, run_id, ALICE, approver={"id": "alice", "role": "sre"}, token=TOKEN
    )
    assert own_run.status_code == 403
    assert "four-eyes" in own_run.json()["detail"]
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = _approve(
        orchestrator,
        run_id,
        BOB,
        approver={"id": "bob", "role": "sre"},
        token=TOKEN,
        expires_at=past,
    )
    assert expired.status_code == 409
    assert orchestrator.run_detail(run_id)["status"] == "awaiting_approval"

    granted = _approve(
        orchestrator, run_id, BOB, approver={"id": "bob", "role": "sre"}, token=TOKEN
    )
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["approval_status"] == "granted"
    assert body["approval"]["approver_id"] == "bob"
    assert body["approval"]["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert TOKEN not in granted.text

    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", detail
    assert len(attempts(detail, "analyze")) == 1  # resumed at patch: nothing before it ran again
    assert detail["metrics_snapshot"]["approval_wait_seconds"] > 0
    ((wait_ms, kind),) = statsd.metrics()[f"{PREFIX}.approvals.wait"]
    assert kind == "ms"
    assert wait_ms > 0


@pytest.mark.docker
def test_pre_verify_approval_is_bound_to_the_exact_diff(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    image_before = _app_image(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=_protected(broken_stack, "pre-verify"))
    orchestrator.headers = ALICE.headers
    run_id = orchestrator.post_run(instruction="fix it", target_service="app").json()["run_id"]

    early = _approve(orchestrator, run_id, BOB, approver={"id": "bob", "role": "sre"}, token=TOKEN)
    assert early.status_code == 409  # there is no diff to approve yet
    waiting = _wait_status(orchestrator, run_id, "awaiting_approval")
    steps = {s["name"]: s["status"] for s in waiting["steps"]}
    assert steps["patch"] == "succeeded"
    assert steps["build"] == "pending"
    assert _app_image(broken_stack) == image_before  # nothing built yet
    diff = (orchestrator.artifact_root / run_id / "patch.diff").read_bytes()
    diff_sha = hashlib.sha256(diff).hexdigest()
    assert diff_sha in waiting["message"]

    other = _approve(
        orchestrator,
        run_id,
        BOB,
        approver={"id": "bob", "role": "sre"},
        token=TOKEN,
        diff_sha256="0" * 64,
    )
    assert other.status_code == 409
    assert diff_sha in other.json()["detail"]
    ok = _approve(
        orchestrator,
        run_id,
        BOB,
        approver={"id": "bob", "role": "sre"},
        token=TOKEN,
        diff_sha256=diff_sha,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["approval"]["diff_sha256"] == diff_sha
    assert orchestrator.wait_terminal(run_id)["status"] == "succeeded"


@pytest.mark.docker
def test_retry_resumes_a_failed_run_from_its_failing_step(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    run_id = orchestrator.post_run(instruction="fix it", target_service="app").json()["run_id"]
    failed = orchestrator.wait_terminal(run_id, timeout=120)
    assert failed["status"] == "failed"

    too_far = httpx.post(
        f"{orchestrator.base_url}/orchestrator/runs/{run_id}/retry",
        json={"resume_from_step": "verify"},
        timeout=30,
    )
    assert too_far.status_code == 409
    assert "analyze" in too_far.json()["detail"]

    # The engine is back: the next worker can reach it.
    assert orchestrator.worker is not None
    orchestrator.worker.stop()
    orchestrator.worker_env.pop("DOCKER_HOST")
    orchestrator.start_worker()
    retried = httpx.post(
        f"{orchestrator.base_url}/orchestrator/runs/{run_id}/retry",
        json={"reason": "docker is back"},
        timeout=30,
    )
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "pending"
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", detail
    assert attempts(detail, "analyze") == [(1, "FAILURE"), (2, "SUCCESS")]
    assert detail["metrics_snapshot"]["retries"] == ["retry from analyze: docker is back"]

    again = httpx.post(f"{orchestrator.base_url}/orchestrator/runs/{run_id}/retry", timeout=30)
    assert again.status_code == 409
    assert again.json()["error"] == "retry_rejected"
