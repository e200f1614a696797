"""Steps take their parameters from the run's stored plan, not from module constants."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker

BUSYBOX_IMAGE = "moonmind/busybox:1"


@pytest.fixture
def exited_container() -> tuple[str, str]:
    """A compose-labelled container that printed 50 lines and exited 3."""
    project = f"plan{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            "docker", "run", "-d", "--network", "host",
            "--label", f"com.docker.compose.project={project}",
            "--label", "com.docker.compose.service=app",
            "--label", "com.docker.compose.oneoff=False",
            BUSYBOX_IMAGE, "sh", "-c", "for i in $(seq 1 50); do echo line $i; done; exit 3",
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    container = proc.stdout.strip()
    subprocess.run(["docker", "wait", container], capture_output=True, check=True, timeout=60)
    yield project, container
    subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


@pytest.mark.parametrize("tail", [7, 23])
def test_analyze_reads_its_log_tail_from_the_plan(
    tmp_path: Path, exited_container: tuple[str, str], tail: int
) -> None:
    project, _ = exited_container
    ctx = make_context(
        tmp_path,
        service=service_context(tmp_path, project=project),
        parameters={StepName.ANALYZE: {"log_tail_lines": tail}},
    )
    outcome = STEP_FUNCTIONS[StepName.ANALYZE](ctx)
    analysis = outcome.result["analysis"]
    assert analysis["container"]["exit_code"] == 3
    assert analysis["log_lines"] == tail
    logged = (ctx.store.run_dir(ctx.run_id) / "analyze.log").read_text().splitlines()
    assert logged[0] == f"line {51 - tail}"
    assert logged[-1] == "line 50"
