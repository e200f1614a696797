"""A real API process (uvicorn) on a private PostgreSQL database and a private queue.

The database is created for this folder's tests and dropped at the end; the workspace
is a git checkout with a compose file of three services, ``gated`` protected by a
pre-run gate (never named by the fuzzer, so the race test meets it for the first time).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api_service.db.base import normalize_url
from api_service.db.migrate import upgrade
from tests.conftest import POSTGRES_URL
from tests.support.auth import ALICE, BOB, VIC, principals_toml
from tests.support.broker import delete_queues
from tests.support.processes import Process, start_api

COMPOSE = """\
services:
  app:
    build: ./app
  gated:
    build: ./app
  sibling:
    image: moonmind/busybox
"""
GATED = '[orchestrator.services.gated]\nprotected = true\napproval_requirement = "pre-run"\n'
MAX_BODY_BYTES = 64 * 1024


@dataclass
class ApiServer:
    base_url: str
    database_url: str
    workspace: Path
    process: Process


@pytest.fixture(scope="session")
def private_database() -> Iterator[str]:
    """A migrated database of its own, dropped (connections and all) afterwards."""
    admin_url = normalize_url(POSTGRES_URL)
    name = f"moonmind_api_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _workspace(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM moonmind/busybox\nCOPY requirements.txt /\n")
    (root / "app" / "requirements.txt").write_text("")
    (root / "docker-compose.yaml").write_text(COMPOSE)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "stack"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )
    return root


@pytest.fixture(scope="session")
def api_server(
    private_database: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("api")
    workspace = _workspace(tmp / "stack")
    config = tmp / "config.toml"
    config.write_text(principals_toml(ALICE, BOB, VIC) + "\n" + GATED)
    queue = f"orchestrator.run.api-{uuid.uuid4().hex[:10]}"
    env = {
        "MOONMIND_CONFIG": str(config),
        "MOONMIND_DATABASE_URL": private_database,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": queue,
        "ORCHESTRATOR_WORKSPACE": str(workspace),
        "ORCHESTRATOR_ARTIFACT_ROOT": str(tmp / "artifacts"),
        "ORCHESTRATOR_API_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    process, base_url = start_api(env, tmp)
    try:
        yield ApiServer(base_url, private_database, workspace, process)
    finally:
        process.stop()
        delete_queues(amqp_url, queue)
