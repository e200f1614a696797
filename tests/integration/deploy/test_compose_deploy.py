"""docker-compose.yaml itself: `api` and `orchestrator` brought up by compose repair a stack.

PostgreSQL and RabbitMQ are the test session's (the `bundled` profile stays off, which is
the "use your own" path of docs/deploy.md). This engine has no default bridge and the
session's servers listen on the host's 127.0.0.1 only, so the test takes the file as
`docker-compose config` renders it and moves the API to the host network (its port
mapping dropped: Compose v1 has no `!reset` in override files); everything else
(same-path workspace mount, socket and group, user, the shared artifacts volume, the
config file) is the file as shipped.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.deploy.conftest import IMAGE_UID, ImageBuild, give_to_image_user, socket_gid
from tests.integration.deploy.test_worker_container import run_job
from tests.integration.orchestrator.conftest import bring_up, git_commit_all, health_config
from tests.support.broker import delete_queues
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack, free_port, wait_http

pytestmark = [pytest.mark.deploy, pytest.mark.docker]


@pytest.fixture
def compose_deploy(
    tmp_path: Path, migrated_postgres: str, amqp_url: str
) -> Iterator[Callable[[Stack], tuple[str, Callable[..., subprocess.CompletedProcess[str]]]]]:
    downs: list[Callable[..., subprocess.CompletedProcess[str]]] = []
    queues: list[str] = []

    def _up(stack: Stack) -> tuple[str, Callable[..., subprocess.CompletedProcess[str]]]:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(health_config(stack, timeout=90))
        queue = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
        queues.append(queue)
        env = {
            **os.environ,
            "MOONMIND_TARGET_WORKSPACE": str(stack.root),
            "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
            "ORCHESTRATOR_QUEUE": queue,
            "DOCKER_SOCKET_GID": socket_gid(),
            "MOONMIND_UID": str(IMAGE_UID),
            "MOONMIND_GID": str(IMAGE_UID),
            "MOONMIND_CONFIG_FILE": str(config),
            "MOONMIND_DATABASE_URL": migrated_postgres,
            "MOONMIND_WORKER_DATABASE_URL": migrated_postgres,
            "CELERY_BROKER_URL": amqp_url,
            "MOONMIND_WORKER_BROKER_URL": amqp_url,
        }
        project = f"mmdeploy{uuid.uuid4().hex[:8]}"
        rendered = subprocess.run(
            ["docker-compose", "-f", "docker-compose.yaml", "config"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        data = yaml.safe_load(rendered)
        api = data["services"]["api"]
        api.pop("ports")
        api["network_mode"] = "host"
        api["environment"]["MOONMIND_API_PORT"] = str(port)
        # On the host network the API can listen on loopback only (no principals needed).
        api["environment"]["MOONMIND_API_HOST"] = "127.0.0.1"
        deploy_file = tmp_path / "deploy.yaml"
        deploy_file.write_text(yaml.safe_dump(data))

        def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["docker-compose", "-p", project, "-f", str(deploy_file), *args],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )

        downs.append(compose)
        up = compose("up", "-d", "--no-build", "api", "orchestrator")
        assert up.returncode == 0, up.stdout + up.stderr
        return f"http://127.0.0.1:{port}", compose

    yield _up
    for compose in downs:
        compose("down", "-v", "--remove-orphans", timeout=180)
    delete_queues(amqp_url, *queues)


def _wait(what: str, check: Callable[[], bool], logs: Callable[[], str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s:\n{logs()[-6000:]}")


def test_compose_file_runs_api_and_worker_that_repair_a_stack(
    orchestrator_image: ImageBuild,
    broken_stack: Stack,
    compose_deploy: Callable[..., tuple[str, Callable[..., subprocess.CompletedProcess[str]]]],
) -> None:
    dockerfile = broken_stack.root / "app" / "Dockerfile"  # see test_worker_container
    dockerfile.write_text(dockerfile.read_text() + f"LABEL moonmind.test={uuid.uuid4().hex}\n")
    git_commit_all(broken_stack.root, "unique image")
    bring_up(broken_stack)
    give_to_image_user(broken_stack.root)

    api, compose = compose_deploy(broken_stack)

    def logs() -> str:
        return compose("logs", "--no-color", "--tail=200").stdout

    def api_up() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("API health", api_up, logs, 120)
    _wait("worker ready", lambda: "ready." in compose("logs", "orchestrator").stdout, logs, 120)

    job = run_job(orchestrator_image.tag, api, "app", "fix the missing dependency")
    explain = f"{job.stdout}\n{job.stderr}\n{logs()[-5000:]}"
    assert job.returncode == 0, explain
    assert any(line.startswith("run succeeded") for line in job.stdout.splitlines()), explain
    assert wait_http(f"http://127.0.0.1:{broken_stack.app_port}/health", timeout=30) == 200

    # The worker wrote the artifacts to the named volume; the API serves them from it.
    run_id = job.stdout.splitlines()[0].split()[1]
    artifacts = httpx.get(f"{api}/orchestrator/runs/{run_id}/artifacts", timeout=30).json()
    by_path = {a["path"]: a for a in artifacts["artifacts"]}
    diff = httpx.get(
        f"{api}/orchestrator/runs/{run_id}/artifacts/{by_path['patch.diff']['artifact_id']}",
        timeout=30,
    )
    assert diff.status_code == 200, diff.text
    assert hashlib.sha256(diff.content).hexdigest() == by_path["patch.diff"]["checksum"]
    assert "app/requirements.txt" in diff.text
    assert not (broken_stack.root / "var").exists()

    # Both containers report healthy through the image's HEALTHCHECK command.
    for service in ("api", "orchestrator"):
        health = compose("exec", "-T", service, "moonmind-healthcheck")
        assert health.returncode == 0, (service, health.stdout, health.stderr)
