"""A diagnosis-only run through the API and the CLI, with an operator's own signature."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.integration.orchestrator.conftest import Orchestrator, bring_up, tree_bytes
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]

TEAM_SIGNATURE = """
[[orchestrator.signatures]]
pattern = "No module named '(\\\\w+)'"
kind = "team_wheel_missing"
remediation = "put the wheel in app/wheelhouse first (runbook 12)"
"""


@pytest.mark.docker
def test_diagnose_explains_and_touches_nothing(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    bring_up(broken_stack)
    before = tree_bytes(broken_stack.root)
    orchestrator = start_orchestrator(broken_stack, config=TEAM_SIGNATURE)
    result = subprocess.run(
        [sys.executable, "-m", "moonmind.cli", "orchestrator", "diagnose", "app",
         "--api", orchestrator.base_url],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "team_wheel_missing (yaml): put the wheel in app/wheelhouse first" in result.stdout
    run_id = result.stdout.split()[1]
    detail = orchestrator.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    assert [step["name"] for step in detail["steps"]] == ["analyze"]
    message = detail["steps"][0]["message"]
    assert "team_wheel_missing" in message
    assert "python_missing_module" in message  # the built-in kind is still named
    assert tree_bytes(broken_stack.root) == before

    plain = orchestrator.post_run(instruction="why?", target_service="app", mode="diagnose")
    assert plain.status_code == 202, plain.text
    assert orchestrator.post_run(
        instruction="x", target_service="app", mode="nope"
    ).status_code in (
        400,
        422,
    )
