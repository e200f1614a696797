"""`moonmind orchestrator submit`: an operator's one command, against a real API and worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.integration.orchestrator.conftest import Orchestrator
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]


def _submit(orchestrator: Orchestrator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "moonmind.cli",
            "orchestrator",
            "submit",
            "--api",
            orchestrator.base_url,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.docker
def test_submit_follows_the_run_to_its_end(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orchestrator = start_orchestrator(
        broken_stack, worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    result = _submit(orchestrator, "--service", "app", "--follow", "fix the missing dependency")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run ")
    assert "queued" in lines[0]
    assert any(line.startswith("analyze  in_progress") for line in lines)
    assert any(line.startswith("analyze  failed") and "unreachable" in line for line in lines)
    assert any(line.startswith("build    skipped") for line in lines)
    assert lines[-1].startswith("run failed")


@pytest.mark.docker
def test_submit_explains_a_refused_request(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orchestrator = start_orchestrator(broken_stack)
    result = _submit(orchestrator, "--service", "nope", "fix it")
    assert result.returncode == 2
    assert "unknown_service" in result.stderr
    assert "Use one of: app, sibling" in result.stderr
    assert "Traceback" not in result.stderr
