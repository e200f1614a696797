"""An in-process API on the session's PostgreSQL and RabbitMQ, with the worker's side driven
through the real claim/record protocol (transitions) and the steps' outcomes given.

Tests import the fixtures by name (pytest finds imported fixtures):
``from tests.support.worker_side import anyio_backend, api, db, queue_name, settings``.
No Docker is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from api_service.db.base import Database, get_database
from api_service.main import create_app
from moonmind.config import Settings, get_settings, load_settings
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator import transitions
from moonmind.workflows.orchestrator.enums import StepName, TaskStateName
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.steps import StepFailed, StepOutcome
from tests.support.auth import CAST
from tests.support.broker import delete_queues

NO_METRICS = Metrics("", 8125, "")
ENGINE_GONE = StepFailed("infrastructure: Docker engine unreachable: gone", rollback=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    name = f"orchestrator.run.worker-side-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues(amqp_url, name)


@contextmanager
def env_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    amqp_url: str,
    queue: str,
    **env: str,
) -> Iterator[Settings]:
    """Settings as the API process would load them, from the environment (an empty config
    file, the given database, broker and queue, artifacts under ``tmp_path``, ``env``).
    The Celery app that submit_run enqueues through is built from get_settings(): its
    cache is cleared before and after."""
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    monkeypatch.setenv("MOONMIND_DATABASE_URL", database_url)
    monkeypatch.setenv("CELERY_BROKER_URL", amqp_url)
    monkeypatch.setenv("ORCHESTRATOR_QUEUE", queue)
    monkeypatch.setenv("ORCHESTRATOR_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield load_settings()
    get_settings.cache_clear()


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    migrated_postgres: str,
    amqp_url: str,
    queue_name: str,
) -> Iterator[Settings]:
    """The API's and the producer's settings, with the test cast as principals."""
    with env_settings(monkeypatch, tmp_path, migrated_postgres, amqp_url, queue_name) as loaded:
        yield loaded.model_copy(
            update={"auth_principals": tuple(caller.config() for caller in CAST)}
        )


@pytest.fixture
def db(settings: Settings) -> Database:
    return get_database(settings.database_url)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as c:
        yield c


def take_messages(amqp_url: str, queue: str) -> list[tuple[str, str]]:
    """(task name, task id) of every message waiting in ``queue``, consumed."""
    taken = []
    with Connection(amqp_url) as conn:
        channel = conn.default_channel
        try:
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                taken.append((message.headers["task"], message.headers["id"]))
        except NotFound:  # nothing was ever published to it
            pass
    return taken


def claim_queued(
    db: Database, settings: Settings, run_id: uuid.UUID, step: StepName
) -> transitions.Claim:
    """The worker's claim of the step's queued (PENDING) message."""
    with db.session() as session:
        row = repo.latest_task_state(session, run_id, step)
        assert row is not None, step
        assert row.state == TaskStateName.PENDING, (step, row.state)
        task_id = row.celery_task_id
    return transitions.claim(db, settings, step, run_id, task_id)


def run_step(
    db: Database, settings: Settings, run_id: uuid.UUID, step: StepName, outcome: StepOutcome
) -> transitions.Recorded:
    """One step as the worker runs it: claim the queued message, record ``outcome``."""
    started = claim_queued(db, settings, run_id, step)
    assert isinstance(started, transitions.Started), (step, started)
    return transitions.record(db, NO_METRICS, started, outcome, 0.1)
