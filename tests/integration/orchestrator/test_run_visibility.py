"""Following a real run: server-sent events, StatsD over a real UDP socket, storage trouble."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import (
    Orchestrator,
    bring_up,
    health_config,
    tree_bytes,
)
from tests.support.stack import Stack, free_port
from tests.support.statsd import StatsdSink

Starter = Callable[..., Orchestrator]
PREFIX = "mmtest.orch"


def _statsd_env(sink: StatsdSink) -> dict[str, str]:
    return {"STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(sink.port), "STATSD_PREFIX": PREFIX}


def _follow_events(base: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    with httpx.stream(
        "GET", f"{base}/orchestrator/runs/{run_id}/events", timeout=httpx.Timeout(30, read=600)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.docker
def test_sse_and_statsd_follow_a_real_run(
    broken_stack: Stack, start_orchestrator: Starter, statsd: StatsdSink
) -> None:
    bring_up(broken_stack)
    env = _statsd_env(statsd)
    orchestrator = start_orchestrator(
        broken_stack, config=health_config(broken_stack), worker_env=env, api_env=env
    )
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    assert response.status_code == 202
    run_id = response.json()["run_id"]

    live = _follow_events(orchestrator.base_url, run_id)
    transitions = [(d["name"], d["status"]) for k, d in live if k == "step"]
    expected = []
    for step in ("analyze", "patch", "build", "restart", "verify"):
        expected += [(step, "in_progress"), (step, "succeeded")]
    expected.append(("rollback", "skipped"))
    assert transitions == expected
    assert live[-1] == ("status", {"status": "succeeded", "message": live[-1][1]["message"]})
    build_lines = [d["line"] for k, d in live if k == "log" and d["step"] == "build"]
    assert build_lines[0].startswith("$ ")
    assert build_lines[-1] == "exit code 0"
    at = {(d["name"], d["status"]): i for i, (k, d) in enumerate(live) if k == "step"}
    build_logs = [i for i, (k, d) in enumerate(live) if k == "log" and d["step"] == "build"]
    assert at[("build", "in_progress")] < build_logs[0]
    assert build_logs[-1] < at[("build", "succeeded")]

    # A client that connects after the end receives the whole story.
    late = _follow_events(orchestrator.base_url, run_id)
    assert [(d["name"], d["status"]) for k, d in late if k == "step"] == expected
    assert late[-1][0] == "status"

    metrics = statsd.metrics()
    for name in ("runs.queued", "runs.status.succeeded", "verify.attempts"):
        assert f"{PREFIX}.{name}" in metrics, sorted(metrics)
    assert metrics[f"{PREFIX}.runs.queued"][0] == (1.0, "c")
    assert metrics[f"{PREFIX}.verify.attempts"][0][0] >= 1
    for step in ("analyze", "patch", "build", "restart", "verify"):
        assert metrics[f"{PREFIX}.steps.{step}.started"] == [(1.0, "c")]
        assert metrics[f"{PREFIX}.steps.{step}.succeeded"] == [(1.0, "c")]
        ((duration, kind),) = metrics[f"{PREFIX}.steps.{step}.duration"]
        assert kind == "ms"
        assert 0 <= duration < 600_000
    ((run_ms, kind),) = metrics[f"{PREFIX}.runs.duration.succeeded"]
    assert kind == "ms"
    assert run_ms >= sum(metrics[f"{PREFIX}.steps.{s}.duration"][0][0] for s in ("build", "verify"))
    detail = orchestrator.run_detail(run_id)
    durations = detail["metrics_snapshot"]["step_durations_seconds"]
    assert set(durations) == {"analyze", "patch", "build", "restart", "verify"}


@pytest.mark.docker
def test_failed_verification_rolls_back_and_is_measured(
    broken_stack: Stack, start_orchestrator: Starter, statsd: StatsdSink
) -> None:
    bring_up(broken_stack)
    requirements = (broken_stack.root / "app" / "requirements.txt").read_bytes()
    wrong_url = f"http://127.0.0.1:{free_port()}/health"  # nothing will ever answer here
    config = (
        f'[orchestrator.services.app]\nhealth_url = "{wrong_url}"\nhealth_timeout_seconds = 8\n'
    )
    env = _statsd_env(statsd)
    orchestrator = start_orchestrator(broken_stack, config=config, worker_env=env)
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    detail = orchestrator.wait_terminal(response.json()["run_id"])
    assert detail["status"] == "rolled_back", detail
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["verify"]["status"] == "failed"
    assert steps["rollback"]["status"] == "succeeded"
    assert "verification failed" in detail["message"]
    assert (broken_stack.root / "app" / "requirements.txt").read_bytes() == requirements
    rollback_log = orchestrator.artifact_root / detail["run_id"] / "rollback.log"
    assert "restored app/requirements.txt" in rollback_log.read_text()
    metrics = statsd.metrics()
    assert metrics[f"{PREFIX}.runs.status.rolled_back"] == [(1.0, "c")]
    assert metrics[f"{PREFIX}.steps.verify.failed"] == [(1.0, "c")]
    ((rollback_ms, kind),) = metrics[f"{PREFIX}.rollback.duration"]
    assert kind == "ms"
    assert rollback_ms > 0


@pytest.mark.docker
def test_unwritable_artifact_root_refuses_to_patch_and_flags_missing(
    broken_stack: Stack, start_orchestrator: Starter, tmp_path: Path
) -> None:
    """No pre-images, no patch: a file written without a kept pre-image could never be
    rolled back. The run still analyzes, then ends failed with the reason, the workspace
    untouched, and its detail lists what it could not keep."""
    bring_up(broken_stack)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("artifacts cannot live under a file")
    orchestrator = start_orchestrator(
        broken_stack,
        config=health_config(broken_stack),
        worker_env={"ORCHESTRATOR_ARTIFACT_ROOT": str(blocker / "artifacts")},
    )
    before = tree_bytes(broken_stack.root)
    response = orchestrator.post_run(instruction="fix the missing dependency", target_service="app")
    detail = orchestrator.wait_terminal(response.json()["run_id"])
    assert detail["status"] == "failed", detail
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["analyze"]["status"] == "succeeded"
    assert "cannot keep the pre-images" in steps["patch"]["message"], steps["patch"]
    assert tree_bytes(broken_stack.root) == before
    for name in ("analysis.json", "analyze.log", "pre-images/manifest.json"):
        assert name in detail["missing_artifacts"]
    assert detail["artifacts"] == []
