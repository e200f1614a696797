"""The worker as a container and the CI job file, against an API running on the host."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.deploy.conftest import Container, ImageBuild, give_to_image_user
from tests.integration.orchestrator.conftest import (
    Orchestrator,
    bring_up,
    git_commit_all,
    health_config,
)
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack, wait_http

pytestmark = [pytest.mark.deploy, pytest.mark.docker]

Starter = Callable[..., Orchestrator]


def run_job(
    image: str, api: str, service: str, instruction: str, output: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """docker-compose.job.yaml's `job` service, as a CI step would run it."""
    project = f"mmjob{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "MOONMIND_IMAGE": image,
        "MOONMIND_API": api,
        "MOONMIND_JOB_SERVICE": service,
        "MOONMIND_JOB_INSTRUCTION": instruction,
        "MOONMIND_JOB_OUTPUT": "/out" if output else "",
    }
    mount = ["-v", f"{output}:/out"] if output else []
    try:
        return subprocess.run(
            [
                "docker-compose",
                "-p",
                project,
                "-f",
                "docker-compose.job.yaml",
                "run",
                "--rm",
                "-T",
                *mount,
                "job",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        subprocess.run(
            ["docker-compose", "-p", project, "-f", "docker-compose.job.yaml", "down"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )


def test_worker_container_repairs_the_stack_and_the_job_exits_0(
    orchestrator_image: ImageBuild,
    broken_stack: Stack,
    start_orchestrator: Starter,
    run_container: Callable[..., Container],
    tmp_path: Path,
) -> None:
    # Other suites build the same demo app on this engine, and the legacy builder's cache
    # gives identical builds one image id, which their clean-up then deletes under us: a
    # label unique to this test makes this stack's image its own.
    dockerfile = broken_stack.root / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + f"LABEL moonmind.test={uuid.uuid4().hex}\n")
    git_commit_all(broken_stack.root, "unique image")
    bring_up(broken_stack)
    orchestrator = start_orchestrator(
        broken_stack, config=health_config(broken_stack, timeout=90), defer_worker=True
    )
    # Workspace, config.toml and artifact root all live under tmp_path: one mount at the
    # same path shares them, and the API on the host reads the artifacts the worker wrote.
    orchestrator.artifact_root.mkdir(parents=True, exist_ok=True)
    tmp_path.chmod(0o755)  # pytest makes it 0700 (root): the worker runs as uid 10001
    give_to_image_user(broken_stack.root, orchestrator.artifact_root)
    worker = run_container(
        "worker", "--concurrency", "1", env=orchestrator.worker_env, mounts=(tmp_path,)
    )
    worker.wait_for("ready.", timeout=90)

    output = tmp_path / "job-output"
    output.mkdir(mode=0o777)
    output.chmod(0o777)  # the job runs as uid 10001
    job = run_job(
        orchestrator_image.tag,
        orchestrator.base_url,
        "app",
        "fix the missing dependency",
        output=output,
    )
    explain = f"{job.stdout}\n{job.stderr}\n--- worker ---\n{worker.logs()[-4000:]}"
    assert job.returncode == 0, explain
    lines = job.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert lines[0] == f"run {run_id} queued ({orchestrator.base_url}/orchestrator/runs/{run_id})"
    assert any(line.startswith("run succeeded") for line in lines), explain
    diff_at = lines.index("===== patch.diff " + "=" * 50)
    verify_at = lines.index("===== verify.log " + "=" * 50)
    diff_text = "\n".join(lines[diff_at + 1 : verify_at])
    assert "+++ b/app/requirements.txt" in diff_text, explain
    assert "PyYAML" in diff_text or "pyyaml" in diff_text.lower(), explain
    assert any("200" in line for line in lines[verify_at + 1 :]), explain

    detail = orchestrator.run_detail(run_id)
    assert detail["status"] == "succeeded", detail
    assert wait_http(f"http://127.0.0.1:{broken_stack.app_port}/health", timeout=30) == 200

    # Every artifact the worker container wrote is downloadable through the host's API,
    # byte for byte what its row says.
    listing = httpx.get(f"{orchestrator.base_url}/orchestrator/runs/{run_id}/artifacts", timeout=30)
    assert listing.status_code == 200, listing.text
    artifacts = listing.json()["artifacts"]
    paths = {a["path"] for a in artifacts}
    assert {"patch.diff", "verify.log", "build.log", "restart.log"} <= paths, paths
    for artifact in artifacts:
        body = httpx.get(
            f"{orchestrator.base_url}/orchestrator/runs/{run_id}/artifacts/{artifact['artifact_id']}",
            timeout=30,
        )
        assert body.status_code == 200, (artifact, body.text)
        assert hashlib.sha256(body.content).hexdigest() == artifact["checksum"]
        assert body.headers["X-Checksum-SHA256"] == artifact["checksum"]
        # ... and the job saved the same bytes under MOONMIND_JOB_OUTPUT.
        saved = output / run_id / artifact["path"]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact["checksum"]

    # The run's files are outside the target repository.
    assert not (broken_stack.root / "var").exists()
    assert (orchestrator.artifact_root / run_id / "patch.diff").is_file()

    health = subprocess.run(
        ["docker", "exec", worker.name, "moonmind-healthcheck"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert health.returncode == 0, health.stdout + health.stderr


def test_job_exits_non_zero_when_the_run_fails(
    orchestrator_image: ImageBuild, broken_stack: Stack, start_orchestrator: Starter
) -> None:
    # A host worker that cannot reach the engine: analyze fails at once, the run fails.
    orchestrator = start_orchestrator(
        broken_stack, worker_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    job = run_job(
        orchestrator_image.tag, orchestrator.base_url, "app", "fix the missing dependency"
    )
    explain = f"{job.stdout}\n{job.stderr}\n{orchestrator.worker_output()[-3000:]}"
    assert job.returncode == 1, explain
    lines = job.stdout.splitlines()
    assert lines[0].startswith("run "), explain
    assert "queued" in lines[0], explain
    assert any(line.startswith("run failed") for line in lines), explain
    assert "===== patch.diff " + "=" * 50 in lines, explain
    assert any("has no patch.diff" in line for line in lines), explain


def test_job_exits_2_when_the_request_is_refused(
    orchestrator_image: ImageBuild, broken_stack: Stack, start_orchestrator: Starter
) -> None:
    orchestrator = start_orchestrator(broken_stack, defer_worker=True)
    job = run_job(orchestrator_image.tag, orchestrator.base_url, "nope", "fix it")
    assert job.returncode == 2, job.stdout + job.stderr
    assert "unknown_service" in job.stdout + job.stderr


def test_job_exits_non_zero_when_the_run_is_rolled_back(
    orchestrator_image: ImageBuild, broken_stack: Stack, start_orchestrator: Starter
) -> None:
    """The rule's fix builds and starts, but the app still exits: verify fails, rollback."""
    app = broken_stack.root / "app"
    source = (app / "app.py").read_text()
    (app / "app.py").write_text(
        source.replace("import yaml\n", "import yaml\n\nraise SystemExit('still broken')\n")
    )
    git_commit_all(broken_stack.root, "broken beyond the missing module")
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, config=health_config(broken_stack, 30))
    job = run_job(
        orchestrator_image.tag, orchestrator.base_url, "app", "fix the missing dependency"
    )
    explain = f"{job.stdout}\n{job.stderr}\n{orchestrator.worker_output()[-3000:]}"
    assert any(line.startswith("run rolled_back") for line in job.stdout.splitlines()), explain
    assert job.returncode == 1, explain
    assert "===== verify.log " + "=" * 50 in job.stdout.splitlines(), explain
