"""The broker restarts mid-build; the database goes away for a while; artifacts cannot be
written. Each against a private server (tests/faults/servers.py) or a real read-only folder.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_service.db.migrate import upgrade
from tests.faults.conftest import (
    FAST_WORKER,
    FULL,
    FaultRow,
    docker_events,
    slow_compose,
    wait_step,
)
from tests.faults.servers import PrivatePostgres, PrivateRabbit
from tests.integration.orchestrator.conftest import (
    Orchestrator,
    attempts,
    bring_up,
    health_config,
    inspect_container,
    tree_bytes,
)
from tests.support.processes import start
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]
STEPS = ("analyze", "patch", "build", "restart", "verify")
OUTAGE_S = 30 if FULL else 10


def _effects(row: FaultRow, stack: Stack, since: datetime, original_image: str) -> None:
    effects = docker_events(stack, since)
    built = effects["image_ids"] - {original_image}
    row.duplicated = max(0, effects["created"] - 1) + max(0, len(built) - 1)
    assert effects["created"] == 1, effects
    assert len(built) == 1, effects


def _one_success_per_step(detail: dict[str, Any]) -> None:
    for step in STEPS:
        states = [state for _, state in attempts(detail, step)]
        assert states.count("SUCCESS") == 1, (step, detail["task_states"])


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    with tempfile.TemporaryDirectory(prefix="mmfault-rabbit-") as folder:
        node = PrivateRabbit(Path(folder))
        node.start()
        try:
            yield node
        finally:
            node.stop()


@pytest.mark.docker
def test_broker_restarted_mid_build(
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Starter,
    rabbit: PrivateRabbit,
    fault_report: Callable[..., FaultRow],
    tmp_path: Path,
) -> None:
    row = fault_report("broker restart during build")
    row.runs = 1
    bring_up(broken_stack)
    shared = {"CELERY_BROKER_URL": rabbit.url, **slow_compose(tmp_path)}
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={**shared, **FAST_WORKER},
        api_env=shared,
        defer_worker=True,
    )
    # Two pool processes: the build the broker hands out again (flagged "redelivered")
    # reaches the second while the first is still building it.
    orchestrator.worker = start(
        ["orchestrator", "worker", "--concurrency", "2"], orchestrator.worker_env, orchestrator.cwd
    )
    orchestrator.worker.wait_for_line("ready.", timeout=60)
    original_image = inspect_container(broken_stack, "app")["Image"]
    since = datetime.now(UTC)
    response = orchestrator.post_run(instruction="fix it", target_service="app")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    wait_step(orchestrator, run_id, "build")
    rabbit.stop()
    time.sleep(2)
    rabbit.start()
    detail = row.wait_end(orchestrator, run_id, stuck_is_lost=True)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    _effects(row, broken_stack, since, original_image)
    _one_success_per_step(detail)
    # The redelivered build was not taken over while its first worker was at it.
    assert attempts(detail, "build") == [(1, "SUCCESS")], detail["task_states"]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="mmfault-pg-") as folder:
        cluster = PrivatePostgres(Path(folder))
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            try:
                cluster.stop()
            except Exception:  # already stopped
                pass


def _probe_during_outage(base_url: str, run_id: str, seconds: float) -> list[str]:
    """Ask the API every half second while the database is down; what went wrong."""
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in (f"/orchestrator/runs/{run_id}", "/orchestrator/runs"):
            began = time.monotonic()
            try:
                response = httpx.get(f"{base_url}{path}", timeout=5)
            except httpx.HTTPError as exc:
                problems.append(f"{path}: {type(exc).__name__}")
                continue
            elapsed = time.monotonic() - began
            body = (
                response.json()
                if response.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            if response.status_code != 503 or elapsed >= 1.0:
                problems.append(f"{path}: {response.status_code} in {elapsed:.2f}s")
            elif not {"error", "detail", "remediation", "request_id"} <= set(body):
                problems.append(f"{path}: 503 without the error shape: {body}")
        time.sleep(0.5)
    return problems


@pytest.mark.docker
def test_database_outage_during_build(
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Starter,
    private_postgres: PrivatePostgres,
    fault_report: Callable[..., FaultRow],
    tmp_path: Path,
) -> None:
    row = fault_report(f"database down {OUTAGE_S} s during build")
    row.runs = 1
    upgrade(private_postgres.url)
    bring_up(broken_stack)
    shared = {
        "MOONMIND_DATABASE_URL": private_postgres.url,
        **slow_compose(tmp_path),
    }
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={**shared, **FAST_WORKER},
        api_env=shared,
    )
    original_image = inspect_container(broken_stack, "app")["Image"]
    since = datetime.now(UTC)
    response = orchestrator.post_run(instruction="fix it", target_service="app")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    wait_step(orchestrator, run_id, "build")
    private_postgres.stop()
    problems = _probe_during_outage(orchestrator.base_url, run_id, OUTAGE_S)
    private_postgres.start()
    detail = row.wait_end(orchestrator, run_id)
    assert problems == []
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    # The build that finished during the outage was recorded when the database came back:
    # the worker waited for it; nothing was built a second time.
    assert attempts(detail, "build") == [(1, "SUCCESS")], detail["task_states"]
    _effects(row, broken_stack, since, original_image)
    _one_success_per_step(detail)


@pytest.mark.docker
def test_artifact_folder_unwritable(
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Starter,
    fault_report: Callable[..., FaultRow],
    tmp_path: Path,
) -> None:
    """The artifact root is a read-only bind of an empty folder: analyze goes on without its
    log; the patch step refuses to write what it could not keep a pre-image of, so the
    run ends `failed` with the reason, the workspace untouched, and its detail lists every
    file it could not keep."""
    row = fault_report("artifact folder unwritable")
    row.runs = 1
    bring_up(broken_stack)
    artifacts = tmp_path / "readonly-artifacts"
    artifacts.mkdir()
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={"ORCHESTRATOR_ARTIFACT_ROOT": str(artifacts), **FAST_WORKER},
        api_env={"ORCHESTRATOR_ARTIFACT_ROOT": str(artifacts)},
    )
    before = tree_bytes(broken_stack.root)
    artifacts.chmod(0o555)  # root ignores modes: a read-only bind mount stops root too
    subprocess.run(["mount", "--bind", "-o", "ro", str(artifacts), str(artifacts)], check=True)
    try:
        response = orchestrator.post_run(instruction="fix it", target_service="app")
        assert response.status_code == 202, response.text
        detail = row.wait_end(orchestrator, response.json()["run_id"])
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)
    after = tree_bytes(broken_stack.root)
    row.bytes_lost = sum(len(v) for k, v in after.items() if before.get(k) != v)
    assert detail["status"] == "failed", orchestrator.explain(detail)
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["analyze"]["status"] == "succeeded"
    assert "cannot keep the pre-images" in steps["patch"]["message"], steps["patch"]
    assert after == before
    missing = set(detail["missing_artifacts"])
    assert {"analyze.log", "analysis.json", "pre-images/manifest.json"} <= missing, missing
    assert detail["artifacts"] == []
