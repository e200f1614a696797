"""SIGKILL the worker once during each step; a new worker comes up; the run ends, once.

Each step's window is widened with real processes: a compose command that pauses after
its build/up (the effect happened, the step has not recorded it yet), a patch agent that
sleeps after editing, a health URL that never answers (analyze), a verify that waits for
the container to be stable. The checks: the run ends in a terminal state, the killed step
was taken over as a second attempt, no effect happened twice (one image built, one
container created per recreate, pre-images that are the original bytes), and the
workspace holds the pre-images or the patch, never a mix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import (
    FAST_WORKER,
    FaultRow,
    docker_events,
    kill_worker,
    slow_compose,
    wait_step,
)
from tests.integration.orchestrator.conftest import (
    Orchestrator,
    attempts,
    bring_up,
    inspect_container,
    tree_bytes,
)
from tests.support.processes import start_worker
from tests.support.stack import Stack, needs_greeting

SLOW_AGENT = Path(__file__).with_name("slow_agent.py")
Starter = Callable[..., Orchestrator]


@dataclass(frozen=True)
class Scenario:
    step: str
    target: str
    status: str  # the terminal status the run must reach
    creates: int  # containers of the target the run creates (restart: 1, rollback: 1 more)
    after_s: float = 0.0  # how long after the step started to kill


SCENARIOS = {
    "analyze": Scenario("analyze", "sibling", "failed", 0),
    "patch": Scenario("patch", "app", "succeeded", 1, after_s=1.0),
    "build": Scenario("build", "app", "succeeded", 1, after_s=1.0),
    "restart": Scenario("restart", "app", "succeeded", 1, after_s=2.0),
    "verify": Scenario("verify", "app", "succeeded", 1, after_s=0.5),
    "rollback": Scenario("rollback", "app", "rolled_back", 2, after_s=2.0),
}


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung health endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _config(stack: Stack, scenario: Scenario, black_hole: int) -> str:
    if scenario.step == "analyze":
        return f'[orchestrator.services.sibling]\nhealth_url = "http://127.0.0.1:{black_hole}/"\n'
    path = "/nope" if scenario.step == "rollback" else "/health"
    timeout = 4 if scenario.step == "rollback" else 90
    stable = 10 if scenario.step == "verify" else 3  # verify waits for a 10 s old container
    return (
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}{path}"\n'
        f"health_timeout_seconds = {timeout}\n"
        f"stable_seconds = {stable}\n"
    )


def _changed_files(diff: str) -> list[str]:
    return sorted(
        line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git")
    )


def _check_workspace(
    orchestrator: Orchestrator, run_id: str, status: str, before: dict[str, bytes], after: dict
) -> int:
    """Bytes in the wrong state: a rolled-back or failed run leaves the tree as it was; a
    succeeded one changed exactly the files of its diff, whose pre-images are the originals."""
    run_dir = orchestrator.artifact_root / run_id
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if status != "succeeded":
        return sum(len(before.get(p, b"")) + len(after.get(p, b"")) for p in changed)
    diff_path = run_dir / "patch.diff"
    patched = _changed_files(diff_path.read_text()) if diff_path.exists() else []
    lost = sum(len(after.get(p, b"")) for p in changed if p not in patched)
    manifest = json.loads((run_dir / "pre-images" / "manifest.json").read_text())
    for path in patched:
        kept = run_dir / "pre-images" / path
        original = before.get(path, b"")
        if kept.exists() and kept.read_bytes() != original:
            lost += len(original)
        assert path in manifest, (path, manifest)
    return lost


@pytest.mark.docker
@pytest.mark.parametrize("step", list(SCENARIOS))
def test_worker_killed_during_each_step(
    step: str,
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Starter,
    black_hole: int,
    fault_report: Callable[..., FaultRow],
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS[step]
    row = fault_report(f"worker SIGKILL during {step}")
    row.runs = 1
    env: dict[str, Any] = {**slow_compose(tmp_path), **FAST_WORKER}
    if step == "patch":
        needs_greeting(broken_stack)  # only the agent can fix it
        env["ORCHESTRATOR_PATCH_AGENT"] = (
            f"{sys.executable} {SLOW_AGENT} --workspace {{workspace}} --analysis {{analysis}}"
        )
    bring_up(broken_stack)
    orchestrator = start_orchestrator(
        broken_stack,
        config=_config(broken_stack, scenario, black_hole),
        worker_env=env,
        api_env={"ORCHESTRATOR_COMPOSE_COMMAND": env["ORCHESTRATOR_COMPOSE_COMMAND"]},
    )
    before = tree_bytes(broken_stack.root)
    original_image = inspect_container(broken_stack, "app")["Image"]
    since = datetime.now(UTC)
    response = orchestrator.post_run(instruction="fix it", target_service=scenario.target)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    wait_step(orchestrator, run_id, step)
    time.sleep(scenario.after_s)
    kill_worker(orchestrator)
    orchestrator.start_worker()
    detail = row.wait_end(orchestrator, run_id)
    effects = docker_events(broken_stack, since, scenario.target)
    built = effects["image_ids"] - {original_image}
    row.duplicated = max(0, effects["created"] - scenario.creates) + max(0, len(built) - 1)
    row.bytes_lost = _check_workspace(
        orchestrator, run_id, detail["status"], before, tree_bytes(broken_stack.root)
    )
    assert detail["status"] == scenario.status, orchestrator.explain(detail)
    assert attempts(detail, step)[:2] == [(1, "FAILURE"), (2, "SUCCESS")], detail["task_states"]
    assert effects["created"] == scenario.creates, effects
    assert len(built) <= 1, effects
    assert row.bytes_lost == 0
    if step == "patch":
        dockerfile = (broken_stack.root / "app" / "Dockerfile").read_text()
        assert dockerfile.count("ENV GREETING=") == 1, dockerfile


@pytest.mark.docker
def test_worker_killed_while_holding_a_waiting_runs_redelivery(
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Starter,
    fault_report: Callable[..., FaultRow],
    tmp_path: Path,
) -> None:
    """On the filesystem transport a run waiting for its service's lock lives as a delayed
    message inside a worker. Worker 1 holds the lock (a 20 s verify); worker 2 holds the
    waiting run's message and is killed: the sweeper finds the silent pending run once the
    holder has ended and sends it again."""
    row = fault_report("worker SIGKILL holding a waiting run's message (filesystem broker)")
    row.runs = 2
    bring_up(broken_stack)
    slow = slow_compose(tmp_path, pause_s=0.5)
    broker = {"CELERY_BROKER_URL": "filesystem://", "CELERY_BROKER_FOLDER": str(tmp_path / "q")}
    config = _config(broken_stack, SCENARIOS["build"], 0).replace(
        "stable_seconds = 3", "stable_seconds = 20"
    )
    orchestrator = start_orchestrator(
        broken_stack,
        config=config,
        worker_env={**slow, **broker, **FAST_WORKER},
        api_env={**slow, **broker},
    )
    first = orchestrator.post_run(instruction="fix it", target_service="app").json()["run_id"]
    wait_step(orchestrator, first, "verify")  # worker 1 is busy for about 20 s
    second_worker = start_worker(orchestrator.worker_env, orchestrator.cwd)
    try:
        second = orchestrator.post_run(instruction="again", target_service="app").json()["run_id"]
        deadline = time.monotonic() + 30
        while "waiting for run" not in (orchestrator.run_detail(second).get("message") or ""):
            assert time.monotonic() < deadline, orchestrator.run_detail(second)
            time.sleep(0.1)
        time.sleep(1)  # its next delivery is now a delayed message in worker 2's memory
        os.killpg(second_worker.popen.pid, signal.SIGKILL)
        second_worker.popen.wait(timeout=30)
    finally:
        second_worker.stop()
    ended = list(row.wait_ended(orchestrator, [first, second], timeout=480).values())
    assert ended[0]["status"] == "succeeded", orchestrator.explain(ended[0])
    # The service is healthy now: the second run finds nothing to change.
    assert ended[1]["status"] == "failed", orchestrator.explain(ended[1])
    audit = ended[1]["metrics_snapshot"].get("audit", [])
    reasons = [a["reason"] for a in audit if a["action"] == "recovered"]
    assert any("pending with no live message" in r for r in reasons), audit
