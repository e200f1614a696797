"""End to end: a real engine, compose project, worker process, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
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
from tests.support.stack import Stack, needs_greeting

AGENT = Path(__file__).resolve().parents[2] / "fixtures" / "agents" / "set_env_agent.py"
Starter = Callable[..., Orchestrator]
STEPS = ["analyze", "patch", "build", "restart", "verify"]


def _container(stack: Stack, service: str) -> tuple[str, str, str]:
    """(container id, start time, image id) of a service's container."""
    attrs = inspect_container(stack, service)
    return attrs["Id"], attrs["State"]["StartedAt"], attrs["Image"]


def _assert_artifacts(orchestrator: Orchestrator, detail: dict[str, Any]) -> dict[str, Any]:
    by_path = {}
    for artifact in detail["artifacts"]:
        path = orchestrator.artifact_root / detail["run_id"] / artifact["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["checksum"], artifact["path"]
        assert len(data) == artifact["size_bytes"]
        by_path[artifact["path"]] = artifact
    return by_path


def _assert_fixed(
    stack: Stack, orchestrator: Orchestrator, run_id: str, expect_files: list[str]
) -> dict[str, Any]:
    sibling_before = _container(stack, "sibling")[:2]
    app_before = _container(stack, "app")
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", (detail, orchestrator.worker_output()[-3000:])

    steps = {s["name"]: s for s in detail["steps"]}
    assert [n for n in STEPS if steps[n]["status"] == "succeeded"] == STEPS
    assert steps["rollback"]["status"] == "skipped"
    started = [steps[n]["started_at"] for n in STEPS]
    assert started == sorted(started)
    for name in STEPS:
        assert steps[name]["celery_task_id"]

    artifacts = _assert_artifacts(orchestrator, detail)
    for expected in (
        "analysis.json",
        "analyze.log",
        "patch.diff",
        "pre-images/manifest.json",
        "build.log",
        "restart.log",
        "verify.log",
    ):
        assert expected in artifacts, sorted(artifacts)
    diff = (orchestrator.artifact_root / run_id / "patch.diff").read_text()
    touched = sorted(
        line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git")
    )
    assert touched == expect_files

    app_after = _container(stack, "app")
    assert app_after[2] != app_before[2], "image id did not change"
    assert app_after[0] != app_before[0], "container was not recreated"
    assert _container(stack, "sibling")[:2] == sibling_before, "sibling was disturbed"
    health = httpx.get(f"http://127.0.0.1:{stack.app_port}/health", timeout=5)
    assert health.status_code == 200
    assert "build.log" in {a["path"] for a in detail["artifacts"]}
    verify_log = (orchestrator.artifact_root / run_id / "verify.log").read_text()
    assert "probe #" in verify_log
    assert "health check: ok" in verify_log
    return detail


@pytest.mark.docker
def test_fixes_missing_python_dependency(broken_stack: Stack, start_orchestrator: Starter) -> None:
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    assert response.status_code == 202, response.text
    summary = response.json()
    assert summary["status"] == "pending"

    detail = _assert_fixed(broken_stack, orchestrator, summary["run_id"], ["app/requirements.txt"])

    diff = (orchestrator.artifact_root / summary["run_id"] / "patch.diff").read_text()
    assert "+PyYAML" in diff
    analysis = (orchestrator.artifact_root / summary["run_id"] / "analysis.json").read_text()
    assert "python_missing_module" in analysis
    assert '"yaml"' in analysis
    # The step log: one JSON line per event, each with run_id and step.
    events = [
        json.loads(line)
        for line in orchestrator.worker_output().splitlines()
        if line.startswith("{")
    ]
    mine = [e for e in events if e["run_id"] == summary["run_id"]]
    assert [e["step"] for e in mine if e["event"] == "step_started"] == STEPS
    assert [e["step"] for e in mine if e["event"] == "step_finished"] == STEPS
    assert mine[-1]["event"] == "run_finished"
    assert mine[-1]["status"] == "succeeded"
    # One task-state row per step delivery, matching the plan step.
    states = {s["plan_step"]: s for s in detail["task_states"]}
    assert sorted(states) == sorted(STEPS)
    for step in detail["steps"]:
        if step["name"] in STEPS:
            row = states[step["name"]]
            assert row["state"] == "SUCCESS"
            assert row["celery_task_id"] == step["celery_task_id"]
            assert row["artifact_refs"] == step["artifact_refs"]
    assert detail["action_plan"]["steps"][2]["parameters"]["argv"][-2:] == ["build", "app"]


@pytest.mark.docker
def test_applies_operator_supplied_patch(broken_stack: Stack, start_orchestrator: Starter) -> None:
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    requirements = (broken_stack.root / "app" / "requirements.txt").read_text()
    patch = (
        "--- a/app/requirements.txt\n+++ b/app/requirements.txt\n"
        f"@@ -1,{len(requirements.splitlines())} +1,{len(requirements.splitlines()) + 1} @@\n"
        + "".join(f" {line}\n" for line in requirements.splitlines())
        + "+PyYAML>=6\n"
    )
    response = orchestrator.post_run(
        instruction="add PyYAML", target_service="app", patch=patch, priority="high"
    )
    assert response.status_code == 202, response.text
    detail = _assert_fixed(
        broken_stack, orchestrator, response.json()["run_id"], ["app/requirements.txt"]
    )
    assert detail["action_plan"]["generated_by"] == "operator"
    assert "PyYAML>=6" in (broken_stack.root / "app" / "requirements.txt").read_text()


@pytest.mark.docker
def test_scripted_agent_patches_when_no_rule_applies(
    broken_stack: Stack, start_orchestrator
) -> None:
    needs_greeting(broken_stack)
    bring_up(broken_stack)
    agent = (
        f"{sys.executable} {AGENT} --workspace {{workspace}} --analysis {{analysis}} "
        "--instruction {instruction}"
    )
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={"ORCHESTRATOR_PATCH_AGENT": agent},
    )
    response = orchestrator.post_run(instruction="it will not start", target_service="app")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    detail = _assert_fixed(broken_stack, orchestrator, run_id, ["app/Dockerfile"])
    patch_step = next(s for s in detail["steps"] if s["name"] == "patch")
    assert patch_step["message"].startswith("agent:")
    agent_log = (orchestrator.artifact_root / run_id / "agent.log").read_text()
    assert "set GREETING" in agent_log
    assert "it will not start" in agent_log


def _assert_rejected(orchestrator: Orchestrator, stack: Stack, patch: str, reason: str) -> None:
    before = tree_bytes(stack.root)
    image_before = _container(stack, "app")[2]
    response = orchestrator.post_run(instruction="apply this", target_service="app", patch=patch)
    assert response.status_code == 202, response.text
    detail = orchestrator.wait_terminal(response.json()["run_id"])
    assert detail["status"] == "failed"
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["patch"]["status"] == "failed"
    assert reason in steps["patch"]["message"]
    assert steps["build"]["status"] == "skipped"
    assert "build.log" not in {a["path"] for a in detail["artifacts"]}
    assert tree_bytes(stack.root) == before
    assert _container(stack, "app")[2] == image_before


@pytest.mark.docker
def test_patch_outside_allow_list_is_refused(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    patch = (
        "--- a/app/app.py\n+++ b/app/app.py\n@@ -1,1 +1,1 @@\n"
        + "-"
        + (broken_stack.root / "app" / "app.py").read_text().splitlines()[0]
        + "\n"
        + '+"""patched"""\n'
    )
    _assert_rejected(orchestrator, broken_stack, patch, "app/app.py")

    symlink_patch = (
        "diff --git a/app/requirements-extra.txt b/app/requirements-extra.txt\n"
        "new file mode 120000\n"
        "--- /dev/null\n+++ b/app/requirements-extra.txt\n@@ -0,0 +1 @@\n"
        "+/etc/passwd\n\\ No newline at end of file\n"
    )
    _assert_rejected(orchestrator, broken_stack, symlink_patch, "app/requirements-extra.txt")


@pytest.mark.docker
def test_unknown_service_lists_the_services(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orchestrator = start_orchestrator(broken_stack)
    response = orchestrator.post_run(instruction="fix it", target_service="nope")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unknown_service"
    assert "app" in body["remediation"]
    assert "sibling" in body["remediation"]

    blank = orchestrator.post_run(instruction="   ", target_service="app")
    assert blank.status_code == 400
    assert blank.json()["error"] == "invalid_request"
    assert "instruction" in blank.json()["detail"]


@pytest.mark.docker
def test_docker_unreachable_fails_fast_without_touching_files(
    broken_stack: Stack, start_orchestrator
) -> None:
    orchestrator = start_orchestrator(
        broken_stack, worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    before = tree_bytes(broken_stack.root)
    response = orchestrator.post_run(instruction="fix it", target_service="app")
    assert response.status_code == 202
    detail = orchestrator.wait_terminal(response.json()["run_id"], timeout=120)
    assert detail["status"] == "failed"
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["analyze"]["status"] == "failed"
    assert "infrastructure" in steps["analyze"]["message"]
    failure = [s for s in detail["task_states"] if s["state"] == "FAILURE"]
    assert [s["plan_step"] for s in failure] == ["analyze"]
    assert failure[0]["message"] == steps["analyze"]["message"]
    assert "Docker engine unreachable" in detail["message"]
    assert all(steps[n]["status"] == "skipped" for n in ("patch", "build", "restart", "verify"))
    assert tree_bytes(broken_stack.root) == before
    assert not (orchestrator.artifact_root / response.json()["run_id"] / "build.log").exists()


@pytest.mark.docker
def test_high_priority_runs_are_delivered_first(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    """Runs queued while no worker listens: the high one starts before earlier normal ones."""
    orchestrator = start_orchestrator(
        broken_stack,
        worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},  # fail fast in analyze
        defer_worker=True,
    )
    ids = {}
    for name, priority in (("n1", "normal"), ("n2", "normal"), ("h", "high"), ("n3", "normal")):
        response = orchestrator.post_run(instruction=name, target_service="app", priority=priority)
        assert response.status_code == 202, response.text
        ids[name] = response.json()["run_id"]
    orchestrator.start_worker()
    started = {}
    for name, run_id in ids.items():
        detail = orchestrator.wait_terminal(run_id, timeout=120)
        analyze = next(s for s in detail["steps"] if s["name"] == "analyze")
        started[name] = analyze["started_at"]
    order = sorted(started, key=lambda name: started[name])
    assert order[0] == "h", started
    assert order[1:] == ["n1", "n2", "n3"], started


@pytest.mark.docker
def test_no_patch_derived_touches_nothing(broken_stack: Stack, start_orchestrator: Starter) -> None:
    """The sibling has no build and no failure a rule knows: nothing to change, nothing built."""
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack)
    before = tree_bytes(broken_stack.root)
    sibling_before = _container(broken_stack, "sibling")
    response = orchestrator.post_run(instruction="make it faster", target_service="sibling")
    assert response.status_code == 202, response.text
    detail = orchestrator.wait_terminal(response.json()["run_id"], timeout=120)
    assert detail["status"] == "failed"
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["analyze"]["status"] == "succeeded"
    assert steps["patch"]["status"] == "failed"
    assert "no patch derived" in steps["patch"]["message"]
    assert all(steps[n]["status"] == "skipped" for n in ("build", "restart", "verify", "rollback"))
    assert tree_bytes(broken_stack.root) == before
    assert _container(broken_stack, "sibling") == sibling_before


def _kill_worker_during_build(orchestrator: Orchestrator, run_id: str) -> None:
    """SIGKILL the whole worker (main process and pool) while the run is building."""
    deadline = time.monotonic() + 120
    while orchestrator.run_detail(run_id)["steps"][2]["status"] != "in_progress":
        assert time.monotonic() < deadline, "build never started"
        time.sleep(0.1)
    assert orchestrator.worker is not None
    os.killpg(orchestrator.worker.popen.pid, signal.SIGKILL)
    orchestrator.worker.popen.wait(timeout=30)


@pytest.mark.docker
def test_worker_killed_mid_build_is_redelivered_and_finishes(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    """acks_late + reject_on_worker_lost: SIGKILL the worker during build, start another."""
    bring_up(broken_stack)
    original_image = _container(broken_stack, "app")[2]
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    run_id = response.json()["run_id"]
    _kill_worker_during_build(orchestrator, run_id)
    orchestrator.start_worker()

    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    assert attempts(detail, "build") == [(1, "FAILURE"), (2, "SUCCESS")]
    lost = next(s for s in detail["task_states"] if s["plan_step"] == "build" and s["attempt"] == 1)
    assert "worker was lost" in lost["message"]
    # The image kept for rollback is still the one from before the run, not the new build.
    client = docker.from_env()
    try:
        kept = client.images.list(name=f"moonmind-rollback/{broken_stack.project}-app")
        assert [image.id for image in kept] == [original_image]
    finally:
        client.close()


@pytest.mark.docker
def test_one_active_run_per_service(broken_stack: Stack, start_orchestrator: Starter) -> None:
    """A second run for the same service waits, saying for whom, until the first has ended."""
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    first = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    run_a = first.json()["run_id"]
    while orchestrator.run_detail(run_a)["status"] == "pending":
        time.sleep(0.1)
    second = orchestrator.post_run(instruction="fix it again", target_service="app")
    run_b = second.json()["run_id"]
    waiting_messages = set()
    terminal = ("succeeded", "failed", "rolled_back")
    while True:
        # B first, then A: if B has started, A must already have ended.
        detail_b = orchestrator.run_detail(run_b)
        status_a = orchestrator.run_detail(run_a)["status"]
        if detail_b["status"] != "pending":
            assert status_a in terminal, (status_a, detail_b)
        elif detail_b.get("message"):
            waiting_messages.add(detail_b["message"])
        if status_a in terminal:
            break
        time.sleep(0.5)
    assert f"waiting for run {run_a}, which holds app" in waiting_messages
    detail_a = orchestrator.wait_terminal(run_a)
    detail_b = orchestrator.wait_terminal(run_b)
    assert detail_a["status"] == "succeeded"
    a_done = max(s["completed_at"] for s in detail_a["steps"] if s["completed_at"])
    b_started = next(s for s in detail_b["steps"] if s["name"] == "analyze")["started_at"]
    assert b_started > a_done
    # The service is healthy now, so the second run finds nothing to change.
    assert detail_b["status"] == "failed"
    assert "no patch derived" in detail_b["message"]


@pytest.mark.docker
def test_sweeper_recovers_a_step_lost_with_its_worker_on_the_embedded_default(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    """The filesystem transport cannot redeliver: the heartbeat sweeper must."""
    bring_up(broken_stack)
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        embedded=True,
        worker_env={
            "ORCHESTRATOR_HEARTBEAT_SECONDS": "1",
            "ORCHESTRATOR_STALE_AFTER_SECONDS": "5",
            "ORCHESTRATOR_SWEEP_INTERVAL_SECONDS": "1",
        },
    )
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    run_id = response.json()["run_id"]
    _kill_worker_during_build(orchestrator, run_id)
    time.sleep(2)
    # While the heartbeat is fresh nobody touches the run.
    assert orchestrator.run_detail(run_id)["status"] == "running"
    orchestrator.start_worker()

    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    assert attempts(detail, "build") == [(1, "FAILURE"), (2, "SUCCESS")]
    events = [
        json.loads(line)
        for line in orchestrator.worker_output().splitlines()
        if line.startswith("{")
    ]
    assert any(e["event"] == "step_redelivered" and e["step"] == "build" for e in events)
