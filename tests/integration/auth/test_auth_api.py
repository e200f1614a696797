"""Who may do what, against a real API process, worker, PostgreSQL, RabbitMQ and Docker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import Orchestrator, bring_up, health_config
from tests.support.auth import ALICE, BOB, CAROL, VIC, Caller, principals_toml
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]
OPEN = ("/health", "/docs", "/openapi.json")


def _endpoints(run_id: str) -> list[tuple[str, str]]:
    base = f"/orchestrator/runs/{run_id}"
    return [
        ("POST", "/orchestrator/runs"),
        ("GET", "/orchestrator/runs"),
        ("GET", base),
        ("GET", f"{base}/artifacts"),
        ("GET", f"{base}/artifacts/{uuid.uuid4()}"),
        ("GET", f"{base}/events"),
        ("POST", f"{base}/approvals"),
        ("POST", f"{base}/retry"),
        ("POST", f"{base}/cancel"),
    ]


def _protected_pre_run(stack: Stack) -> str:
    return (
        principals_toml(ALICE, BOB, CAROL, VIC)
        + health_config(stack)
        + 'protected = true\napproval_requirement = "pre-run"\napprover_roles = ["sre"]\n'
    )


def _approve(orch: Orchestrator, run_id: str, caller: Caller, approver: str, role: str) -> Any:
    return httpx.post(
        f"{orch.base_url}/orchestrator/runs/{run_id}/approvals",
        json={"approver": {"id": approver, "role": role}, "token": "change-ticket-42"},
        headers=caller.headers,
        timeout=30,
    )


def test_tokens_decide_who_may_read_and_submit(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orch = start_orchestrator(
        broken_stack, config=_protected_pre_run(broken_stack), defer_worker=True
    )
    body = {"instruction": "fix the missing dependency", "target_service": "app"}
    viewer = httpx.post(f"{orch.base_url}/orchestrator/runs", json=body, headers=VIC.headers)
    assert viewer.status_code == 403
    assert viewer.json()["error"] == "forbidden"
    operator = httpx.post(
        f"{orch.base_url}/orchestrator/runs", json=body, headers=ALICE.headers, timeout=60
    )
    assert operator.status_code == 202, operator.text
    assert operator.json()["requested_by"] == "alice"
    run_id = operator.json()["run_id"]

    for method, path in _endpoints(run_id):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            response = httpx.request(
                method, f"{orch.base_url}{path}", json={}, headers=headers, timeout=30
            )
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert set(response.json()) >= {"error", "detail", "remediation"}
    for path in OPEN:
        assert httpx.get(f"{orch.base_url}{path}", timeout=30).status_code == 200, path
    assert httpx.get(f"{orch.base_url}/orchestrator/runs/{run_id}", headers=VIC.headers).is_success

    # The CLI sends MOONMIND_TOKEN as the bearer token.
    env = {**os.environ, "MOONMIND_TOKEN": ALICE.token}
    cli = subprocess.run(
        [sys.executable, "-m", "moonmind.cli", "orchestrator", "submit", "--service", "app"]
        + ["--api", orch.base_url, "fix it"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    env.pop("MOONMIND_TOKEN")
    anonymous = subprocess.run(
        [sys.executable, "-m", "moonmind.cli", "orchestrator", "submit", "--service", "app"]
        + ["--api", orch.base_url, "fix it"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert anonymous.returncode != 0
    assert "unauthenticated" in anonymous.stderr


def _wait_awaiting(orch: Orchestrator, run_id: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = orch.run_detail(run_id)["status"]
        if status == "awaiting_approval":
            return
        assert status in ("pending", "running"), orch.explain(orch.run_detail(run_id))
        time.sleep(0.3)
    raise AssertionError("run never reached awaiting_approval")


@pytest.mark.docker
def test_four_eyes_come_from_tokens_not_from_the_body(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    orch = start_orchestrator(broken_stack, config=_protected_pre_run(broken_stack))
    orch.headers = ALICE.headers
    response = orch.post_run(instruction="fix the missing dependency", target_service="app")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    _wait_awaiting(orch, run_id)

    as_herself = _approve(orch, run_id, ALICE, "alice", "sre")
    assert as_herself.status_code == 403
    assert "four-eyes" in as_herself.json()["detail"]
    naming_bob = _approve(orch, run_id, ALICE, "bob", "sre")
    assert naming_bob.status_code == 403
    no_allowed_role = _approve(orch, run_id, CAROL, "carol", "approver")
    assert no_allowed_role.status_code == 403
    claims_sre = _approve(orch, run_id, CAROL, "carol", "sre")
    assert claims_sre.status_code == 403
    assert orch.run_detail(run_id)["status"] == "awaiting_approval"

    granted = _approve(orch, run_id, BOB, "bob", "sre")
    assert granted.status_code == 200, granted.text
    assert granted.json()["approval"]["approver_id"] == "bob"
    assert granted.json()["status"] == "running"
    detail = orch.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orch.explain(detail)
    assert detail["requested_by"] == "alice"
    assert detail["approval"]["approver_id"] == "bob"
    api_log = orch.api.output()
    assert '"event": "approval_refused"' in api_log
    assert '"principal": "carol"' in api_log
    assert '"event": "approval_granted"' in api_log
