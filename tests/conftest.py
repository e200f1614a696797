"""Shared fixtures: a throwaway PostgreSQL database and RabbitMQ queue per test session.

PostgreSQL and RabbitMQ must be reachable (127.0.0.1 by default; override with
MOONMIND_TEST_POSTGRES_URL / MOONMIND_TEST_AMQP_URL). There is no fallback: if either
is down the run stops with one line saying which.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

POSTGRES_URL = os.environ.get(
    "MOONMIND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("MOONMIND_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUN_TAG = uuid.uuid4().hex[:10]


def _require(url: str, what: str, variable: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        socket.create_connection((host, port or 0), timeout=3).close()
    except OSError as exc:
        pytest.exit(
            f"{what} is not reachable at {host}:{port} ({exc}); start it or set {variable}",
            returncode=3,
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database created for this test session and dropped afterwards."""
    _require(POSTGRES_URL, "PostgreSQL", "MOONMIND_TEST_POSTGRES_URL")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from api_service.db.base import normalize_url

    admin_url = normalize_url(POSTGRES_URL)
    name = f"moonmind_test_{RUN_TAG}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    from api_service.db.base import _databases

    for key in [k for k in _databases if name in k]:
        _databases.pop(key).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    _require(AMQP_URL, "RabbitMQ", "MOONMIND_TEST_AMQP_URL")
    return AMQP_URL


@pytest.fixture(scope="session")
def amqp_queue(amqp_url: str) -> Iterator[str]:
    """A queue name used only by this test session, deleted at the end."""
    name = f"orchestrator.run.test-{RUN_TAG}"
    yield name
    from tests.support.broker import delete_queues

    delete_queues(amqp_url, name)


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    from api_service.db.migrate import upgrade

    upgrade(postgres_url)
    return postgres_url
