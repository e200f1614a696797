"""Cancel, verified rollback and rollback-tag clean-up: real API, worker, Docker."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import docker
import httpx
import pytest

from tests.integration.orchestrator.conftest import (
    Orchestrator,
    bring_up,
    git_commit_all,
    health_config,
    inspect_container,
    tree_bytes,
)
from tests.support.stack import Stack, compose, wait_http

Starter = Callable[..., Orchestrator]


def _dockerfile_patch(stack: Stack, line: str) -> str:
    """An operator diff putting ``line`` right after the Dockerfile's FROM."""
    first, second = (stack.root / "app" / "Dockerfile").read_text().splitlines()[:2]
    return (
        "--- a/app/Dockerfile\n+++ b/app/Dockerfile\n@@ -1,2 +1,3 @@\n"
        f" {first}\n+{line}\n {second}\n"
    )


def _cancel(orchestrator: Orchestrator, run_id: str) -> httpx.Response:
    return httpx.post(f"{orchestrator.base_url}/orchestrator/runs/{run_id}/cancel", timeout=30)


def _wait_step(orchestrator: Orchestrator, run_id: str, step: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        detail = orchestrator.run_detail(run_id)
        if {s["name"]: s["status"] for s in detail["steps"]}[step] == "in_progress":
            return detail
        assert detail["status"] in ("pending", "running"), orchestrator.explain(detail)
        time.sleep(0.2)
    raise AssertionError(f"{step} never started")


def _image(stack: Stack) -> str:
    return str(inspect_container(stack, "app")["Image"])


def _rollback_tags(stack: Stack) -> set[str]:
    client = docker.from_env()
    try:
        repository = f"moonmind-rollback/{stack.project}-app"
        images = client.images.list(name=repository)
        return {
            t.split(":")[-1] for image in images for t in image.tags if t.startswith(repository)
        }
    finally:
        client.close()


def _healthy(stack: Stack) -> None:
    """Fix the demo app by hand (as if someone did earlier) so it serves before the run."""
    requirements = stack.root / "app" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "PyYAML>=6\n")
    git_commit_all(stack.root, "fixed by hand")
    for args in (("build", "app"), ("up", "-d", "--no-deps", "app")):
        done = compose(stack, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    assert wait_http(f"http://127.0.0.1:{stack.app_port}/health", timeout=60) == 200


@pytest.mark.docker
def test_cancel_during_the_build_of_a_patched_run_restores_everything(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    (broken_stack.root / "notes.txt").write_bytes(b"uncommitted, unrelated\n")
    before = tree_bytes(broken_stack.root)
    image_before = _image(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    patch = _dockerfile_patch(broken_stack, "RUN sleep 30")
    run_id = orchestrator.post_run(instruction="slow", target_service="app", patch=patch).json()[
        "run_id"
    ]
    _wait_step(orchestrator, run_id, "build")
    time.sleep(2)  # the compose build is under way
    asked = time.monotonic()
    response = _cancel(orchestrator, run_id)
    assert response.status_code == 202, response.text
    detail = orchestrator.wait_terminal(run_id, timeout=120)
    assert detail["status"] == "cancelled", orchestrator.explain(detail)
    assert time.monotonic() - asked < 25, "the build was not stopped"
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["build"]["status"] == "failed"
    assert steps["build"]["message"].startswith("cancelled")
    assert steps["rollback"]["status"] == "succeeded"
    assert detail["message"].startswith("cancelled during build; restored 1 file(s)")
    assert "restored to its previous (unhealthy) state" in detail["message"]
    assert tree_bytes(broken_stack.root) == before  # the Dockerfile and notes.txt alike
    assert _image(broken_stack) == image_before

    again = _cancel(orchestrator, run_id)
    assert again.status_code == 409
    assert again.json()["error"] == "cancel_rejected"


@pytest.mark.docker
def test_a_pending_run_is_cancelled_at_once(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orchestrator = start_orchestrator(
        broken_stack, config=health_config(broken_stack), defer_worker=True
    )
    run_id = orchestrator.post_run(instruction="fix it", target_service="app").json()["run_id"]
    response = _cancel(orchestrator, run_id)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    orchestrator.start_worker()  # its queued analyze finds the run ended
    time.sleep(3)
    detail = orchestrator.run_detail(run_id)
    assert detail["status"] == "cancelled"
    assert {s["status"] for s in detail["steps"]} == {"skipped"}


@pytest.mark.docker
def test_rollback_of_a_healthy_service_is_verified_and_old_tags_are_pruned(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    _healthy(broken_stack)
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={"ORCHESTRATOR_ROLLBACK_TAGS_KEEP": "2"},
    )
    patch = _dockerfile_patch(broken_stack, "RUN false")
    runs = []
    for _ in range(3):
        response = orchestrator.post_run(instruction="break", target_service="app", patch=patch)
        run_id = response.json()["run_id"]
        detail = orchestrator.wait_terminal(run_id)
        assert detail["status"] == "rolled_back", orchestrator.explain(detail)
        log = (orchestrator.artifact_root / run_id / "rollback.log").read_text()
        assert "health check: ok" in log
        rollback = next(s for s in detail["steps"] if s["name"] == "rollback")
        assert "health check passed" in rollback["message"]
        runs.append(run_id)
    assert _rollback_tags(broken_stack) == {r.replace("-", "")[:12] for r in runs[1:]}


@pytest.mark.docker
def test_rollback_that_leaves_a_healthy_service_down_is_unverified(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    _healthy(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    patch = _dockerfile_patch(broken_stack, "RUN sleep 6 && false")
    response = orchestrator.post_run(instruction="break", target_service="app", patch=patch)
    run_id = response.json()["run_id"]
    _wait_step(orchestrator, run_id, "build")
    container = inspect_container(broken_stack, "app")["Id"]
    subprocess.run(["docker", "stop", "-t", "1", container], check=True, capture_output=True)
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "failed", orchestrator.explain(detail)
    assert "rollback_unverified" in detail["message"]
    log = (orchestrator.artifact_root / run_id / "rollback.log").read_text()
    assert "container check: failed" in log
