"""`make demo` runs the main job end to end on the embedded default."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.stack import REPO_ROOT, Stack, compose_down, free_port


@pytest.mark.docker
def test_demo_ends_with_a_succeeded_run_and_its_diff(tmp_path: Path) -> None:
    project = f"mmdemo{uuid.uuid4().hex[:8]}"
    app_port, sibling_port = free_port(), free_port()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "moonmind.demo",
                "--home",
                str(tmp_path),
                "--project",
                project,
                "--app-port",
                str(app_port),
                "--sibling-port",
                str(sibling_port),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "app crashed as planned: ModuleNotFoundError" in output
        assert "run status: succeeded" in output
        assert "+PyYAML" in output
        assert f"127.0.0.1:{app_port}/health -> 200" in output
        for step in ("analyze", "patch", "build", "restart", "verify"):
            assert f"{step:<8} succeeded" in output
        # the embedded default: SQLite and the local transport under <home>/var
        assert (tmp_path / "var" / "orchestrator.db").is_file()
        assert (tmp_path / "var" / "celery" / "queue").is_dir()
    finally:
        workspace = tmp_path / "var" / "demo" / "workspace"
        compose_down(Stack(workspace, workspace / "docker-compose.yaml", project, 0, 0))
