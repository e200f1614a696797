"""More than one Docker host: each service's runs go to its host's worker (real RabbitMQ).

Two stacks (two compose projects), one API per stack sharing the database and broker,
and two workers started as `moonmind orchestrator worker` with ORCHESTRATOR_HOST east and
west. This machine has one Docker engine, so both "hosts" drive the same engine: what is
tested is the routing (each run taken by its host's worker only) and the report of a run
whose host has no live worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.orchestrator.conftest import TERMINAL, bring_up, remove_stack
from tests.support.broker import delete_queues
from tests.support.processes import Process, start_api, start_worker
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.docker


@pytest.fixture
def two_stacks(tmp_path: Path) -> Iterator[tuple[Stack, Stack]]:
    stacks = tuple(
        make_stack(tmp_path / name, project=f"mm{name}{uuid.uuid4().hex[:6]}")
        for name in ("east", "west")
    )
    try:
        yield stacks[0], stacks[1]
    finally:
        for stack in stacks:
            remove_stack(stack)


def _service(name: str, host: str, health_url: str | None = None) -> str:
    text = f'[orchestrator.services.{name}]\nhost = "{host}"\n'
    return text + (f'health_url = "{health_url}"\n' if health_url else "")


def _wait(base_url: str, run_id: str, timeout: float = 420) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = httpx.get(f"{base_url}/orchestrator/runs/{run_id}", timeout=30).json()
        if detail["status"] in TERMINAL:
            return dict(detail)
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished: {detail}")


def test_each_run_is_taken_by_its_hosts_worker(
    two_stacks: tuple[Stack, Stack], migrated_postgres: str, amqp_url: str, tmp_path: Path
) -> None:
    east, west = two_stacks
    base = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
    common = {
        "MOONMIND_DATABASE_URL": migrated_postgres,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": base,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    configs = {
        "east": _service("app", "east", f"http://127.0.0.1:{east.app_port}/health")
        + _service("sibling", "nowhere"),
        "west": _service("app", "west", f"http://127.0.0.1:{west.app_port}/health"),
    }
    processes: list[Process] = []
    try:
        apis = {}
        for name, stack in (("east", east), ("west", west)):
            config = tmp_path / f"{name}.toml"
            config.write_text(configs[name])
            env = {
                **common,
                "MOONMIND_CONFIG": str(config),
                "ORCHESTRATOR_WORKSPACE": str(stack.root),
                "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
            }
            api, apis[name] = start_api(env, tmp_path)
            processes.append(api)
            processes.append(start_worker({**common, "ORCHESTRATOR_HOST": name}, tmp_path))
            bring_up(stack)
        workers = {"east": processes[1], "west": processes[3]}
        assert f"consuming queue '{base}.east'" in workers["east"].output()
        runs = {
            name: httpx.post(
                f"{apis[name]}/orchestrator/runs",
                json={"instruction": "fix it", "target_service": "app"},
                timeout=60,
            ).json()["run_id"]
            for name in ("east", "west")
        }
        for name, run_id in runs.items():
            detail = _wait(apis[name], run_id)
            assert detail["status"] == "succeeded", (detail, workers[name].output()[-3000:])
            hosts = detail["metrics_snapshot"]["worker_hosts"]
            assert set(hosts.values()) == {name}, hosts
            assert set(hosts) == {"analyze", "patch", "build", "restart", "verify"}
        _assert_no_worker_reported(apis["east"], f"{base}.nowhere")
    finally:
        for process in processes:
            process.stop()
        delete_queues(amqp_url, base, f"{base}.east", f"{base}.west", f"{base}.nowhere")


def _assert_no_worker_reported(api: str, queue: str) -> None:
    """A run for a host nobody consumes says so in its detail, and can be cancelled."""
    response = httpx.post(
        f"{api}/orchestrator/runs",
        json={"instruction": "restart it", "target_service": "sibling"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    detail = httpx.get(f"{api}/orchestrator/runs/{run_id}", timeout=30).json()
    assert detail["status"] == "pending"
    assert detail["message"] == (
        f"no live worker consumes {queue} (host nowhere); the run waits until one starts"
    )
    cancelled = httpx.post(f"{api}/orchestrator/runs/{run_id}/cancel", timeout=30)
    assert cancelled.status_code in (200, 202), cancelled.text
