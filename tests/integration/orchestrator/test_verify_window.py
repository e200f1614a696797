"""No fixed waits, but no premature "healthy": real API, worker, Docker and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.orchestrator.conftest import Orchestrator, bring_up, health_config
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]


def _serve_then_exit_patch(stack: Stack) -> str:
    """Add the missing PyYAML and make the service exit 1 s after it starts serving."""
    requirements = (stack.root / "app" / "requirements.txt").read_text().splitlines()
    dockerfile = (stack.root / "app" / "Dockerfile").read_text().splitlines()
    cmd = dockerfile.index('CMD ["python3", "app.py"]')
    return (
        "--- a/app/requirements.txt\n+++ b/app/requirements.txt\n"
        f"@@ -1,{len(requirements)} +1,{len(requirements) + 1} @@\n"
        + "".join(f" {line}\n" for line in requirements)
        + "+PyYAML>=6\n"
        + "--- a/app/Dockerfile\n+++ b/app/Dockerfile\n"
        + f"@@ -{cmd + 1} +{cmd + 1} @@\n"
        + f"-{dockerfile[cmd]}\n"
        + '+CMD ["timeout", "1", "python3", "app.py"]\n'
    )


@pytest.mark.docker
def test_a_service_that_answers_then_exits_inside_the_window_is_rolled_back(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    config = health_config(broken_stack) + "stable_seconds = 3\n"
    orchestrator = start_orchestrator(broken_stack, config=config)
    patch = _serve_then_exit_patch(broken_stack)
    response = orchestrator.post_run(instruction="serve briefly", target_service="app", patch=patch)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "rolled_back", orchestrator.explain(detail)
    steps = {step["name"]: step for step in detail["steps"]}
    assert steps["verify"]["status"] == "failed", orchestrator.explain(detail)
    assert detail["action_plan"]["steps"][4]["parameters"]["stable_seconds"] == 3
    verify_log = (orchestrator.artifact_root / run_id / "verify.log").read_text()
    assert "200 ok" in verify_log  # the health URL did answer ...
    assert "exited with code" in verify_log  # ... and then the container stopped
    assert "container check: failed" in verify_log
    assert "(window 3s)" in verify_log
    evidence = steps["verify"]["message"]
    assert "exited" in evidence, orchestrator.explain(detail)
    assert steps["rollback"]["status"] == "succeeded", orchestrator.explain(detail)


@pytest.mark.docker
def test_analyze_does_not_probe_an_exited_container(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)  # `app` has exited
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack))
    response = orchestrator.post_run(instruction="why?", target_service="app", mode="diagnose")
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    analysis = json.loads((orchestrator.artifact_root / run_id / "analysis.json").read_text())
    assert analysis["container"]["status"] == "exited"
    probe = analysis["health_probe"]
    assert probe["attempts"] == 0
    assert probe["skipped"] == "container exited: not probed"
    assert probe["status_code"] is None
    assert probe["error"] is None
