"""A broken copy of the demo stack, and a real API + worker pointed at it."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import Engine
from tests.support.broker import delete_queues
from tests.support.processes import Process, start_api, start_worker
from tests.support.stack import (  # noqa: F401 (git_commit_all: tests import it from here)
    Stack,
    compose,
    compose_down,
    git_commit_all,
    make_stack,
)
from tests.support.statsd import StatsdSink
from tests.support.worker_side import (  # noqa: F401 (fixtures: an in-process API, worker side)
    anyio_backend,
    api,
    db,
    queue_name,
    settings,
)

TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file's bytes (symlinks as their target), .git and the wheelhouse excepted."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".git/", "app/wheelhouse/")) or rel in (".git", "app/wheelhouse"):
            continue
        if path.is_symlink():
            found[rel] = b"->" + str(path.readlink()).encode()
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def inspect_container(stack: Stack, service: str) -> dict[str, Any]:
    """`docker inspect` of a service's one container."""
    client = docker.from_env()
    try:
        found = client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={stack.project}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        assert len(found) == 1, found
        return dict(found[0].attrs)
    finally:
        client.close()


def bring_up(stack: Stack, timeout: float = 60) -> None:
    """Build and start the stack, and wait until `app` has crashed (its logs say why)."""
    build = compose(stack, "build", "app")
    assert build.returncode == 0, build.stdout + build.stderr
    up = compose(stack, "up", "-d")
    assert up.returncode == 0, up.stdout + up.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inspect_container(stack, "app")["State"]["Status"] == "exited":
            return
        time.sleep(0.3)
    raise AssertionError("app never crashed")


def remove_stack(stack: Stack) -> None:
    """Take the stack down and drop the rollback tags its runs left."""
    compose_down(stack)
    kept = subprocess.run(
        [
            "docker",
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            f"moonmind-rollback/{stack.project}-*",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if kept:
        # By name, never by id: identical builds of other tests' stacks share the image id,
        # and a forced removal by id would pull it from under their running containers.
        subprocess.run(["docker", "rmi", *kept], capture_output=True, check=False)


@pytest.fixture
def broken_stack(tmp_path: Path) -> Iterator[Stack]:
    """The demo stack built and started: `app` crashes, `sibling` serves."""
    stack = make_stack(tmp_path / "workspace", project=f"mmrun{uuid.uuid4().hex[:8]}")
    try:
        yield stack
    finally:
        remove_stack(stack)
        subprocess.run(
            [
                "docker",
                "image",
                "prune",
                "-f",
                "--filter",
                f"label=com.docker.compose.project={stack.project}",
            ],
            capture_output=True,
            check=False,
        )


@dataclass
class Orchestrator:
    base_url: str
    artifact_root: Path
    api: Process
    worker_env: dict[str, str]
    cwd: Path
    worker: Process | None = None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a principal's bearer token

    def start_worker(self) -> Process:
        self.worker = start_worker(self.worker_env, self.cwd)
        return self.worker

    def explain(self, detail: dict[str, Any]) -> str:
        """What a failed assertion needs: each step's outcome and the worker's last words."""
        steps = [(s["name"], s["status"], s.get("message")) for s in detail["steps"]]
        tail = self.worker_output()[-3000:]
        return f"{detail['status']}: {detail.get('message')}\n{steps}\n{tail}"

    def worker_output(self) -> str:
        return self.worker.output() if self.worker else "(no worker)"

    def post_run(self, **body: object) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/orchestrator/runs", json=body, headers=self.headers, timeout=60
        )

    def run_detail(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.base_url}/orchestrator/runs/{run_id}", headers=self.headers, timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_terminal(self, run_id: str, timeout: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = self.run_detail(run_id)
            if detail["status"] in TERMINAL:
                return detail
            time.sleep(1)
        raise AssertionError(
            f"run {run_id} not finished after {timeout}s: {detail}\n{self.worker_output()[-4000:]}"
        )


@dataclass
class Launches:
    """What a fixture that starts APIs and workers started: stop_all() at its end stops
    them and deletes their queues."""

    database_url: str
    amqp_url: str
    started: list[Orchestrator] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    def env(self, stack: Stack, config_file: Path, artifact_root: Path) -> dict[str, str]:
        """The environment of an API and its worker for ``stack``, on a queue of their own."""
        queue = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
        self.queues.append(queue)
        return {
            "MOONMIND_CONFIG": str(config_file),
            "MOONMIND_DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.amqp_url,
            "ORCHESTRATOR_QUEUE": queue,
            "ORCHESTRATOR_WORKSPACE": str(stack.root),
            "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
            "ORCHESTRATOR_ARTIFACT_ROOT": str(artifact_root),
        }

    def stop_all(self) -> None:
        for orchestrator in self.started:
            orchestrator.api.stop()
            if orchestrator.worker is not None:
                orchestrator.worker.stop()
        delete_queues(self.amqp_url, *self.queues)


@pytest.fixture
def start_orchestrator(
    migrated_postgres: str, amqp_url: str, tmp_path: Path
) -> Iterator[Callable[..., Orchestrator]]:
    """Start API + worker for a stack; extra env (e.g. a patch agent) per call."""
    launches = Launches(migrated_postgres, amqp_url)

    def _start(
        stack: Stack,
        *,
        config: str = "",
        worker_env: dict[str, str] | None = None,
        api_env: dict[str, str] | None = None,
        defer_worker: bool = False,
        embedded: bool = False,
    ) -> Orchestrator:
        config_file = tmp_path / "config.toml"
        config_file.write_text(config)
        artifact_root = tmp_path / "artifacts"
        env = launches.env(stack, config_file, artifact_root)
        if embedded:  # SQLite and the filesystem transport under <tmp_path>/var
            for key in ("MOONMIND_DATABASE_URL", "CELERY_BROKER_URL", "ORCHESTRATOR_QUEUE"):
                env.pop(key)
        api_process, base = start_api({**env, **(api_env or {})}, tmp_path)
        orchestrator = Orchestrator(
            base, artifact_root, api_process, {**env, **(worker_env or {})}, tmp_path
        )
        launches.started.append(orchestrator)
        if not defer_worker:
            orchestrator.start_worker()
        return orchestrator

    yield _start
    launches.stop_all()


def health_config(stack: Stack, timeout: int = 60) -> str:
    return (
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        f"health_timeout_seconds = {timeout}\n"
    )


@pytest.fixture
def engine() -> Iterator[Engine]:
    """A connection to the Docker engine (a module may define its own, e.g. module-scoped)."""
    engine = Engine.connect()
    yield engine
    engine.close()


@pytest.fixture
def statsd() -> Iterator[StatsdSink]:
    """A real UDP socket receiving the run's StatsD datagrams."""
    sink = StatsdSink()
    yield sink
    sink.close()


def attempts(detail: dict[str, Any], step: str) -> list[tuple[int, str]]:
    """(attempt, state) of every task-state row of one step, in attempt order."""
    rows = [s for s in detail["task_states"] if s["plan_step"] == step]
    return [(r["attempt"], r["state"]) for r in sorted(rows, key=lambda r: r["attempt"])]
