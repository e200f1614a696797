"""Concurrent first requests: the approval gate row is inserted race-free.

The gate of a protected service used to be synced by a select-then-insert, so two first
submissions at once both inserted and one died on ``uq_approval_gates_service_name``
(a 500). Now it is ``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.migrate import upgrade
from api_service.db.models import ApprovalGate, OrchestratorRun
from moonmind.workflows.orchestrator.repositories import approval_gate_row
from tests.integration.api.conftest import ApiServer
from tests.support.auth import ALICE

THREADS = 8
POSTS_PER_THREAD = 50


def _count(db: Database, stmt: object) -> int:
    with db.session() as session:
        return int(session.scalar(stmt) or 0)  # type: ignore[call-overload]


def test_concurrent_first_posts_for_a_protected_service_are_all_accepted(
    api_server: ApiServer,
) -> None:
    db = Database(api_server.database_url)
    try:
        gates = select(func.count()).select_from(ApprovalGate)
        assert _count(db, gates.where(ApprovalGate.service_name == "gated")) == 0
        start = threading.Barrier(THREADS)
        body = {"instruction": "fix the missing module", "target_service": "gated"}

        def client(_: int) -> list[tuple[int, str]]:
            answers = []
            with httpx.Client(base_url=api_server.base_url, timeout=60) as http:
                start.wait()  # every thread's first POST leaves at once
                for _ in range(POSTS_PER_THREAD):
                    response = http.post("/orchestrator/runs", json=body, headers=ALICE.headers)
                    answers.append((response.status_code, response.text[:300]))
            return answers

        with ThreadPoolExecutor(THREADS) as pool:
            answers = [a for batch in pool.map(client, range(THREADS)) for a in batch]

        statuses = Counter(status for status, _ in answers)
        failures = [a for a in answers if not 200 <= a[0] < 300]
        assert not failures, f"{statuses}: {failures[:3]}\n{api_server.process.output()[-3000:]}"
        assert statuses == {202: THREADS * POSTS_PER_THREAD}
        assert _count(db, gates.where(ApprovalGate.service_name == "gated")) == 1
        runs = select(func.count()).select_from(OrchestratorRun)
        assert _count(db, runs.where(OrchestratorRun.target_service == "gated")) == (
            THREADS * POSTS_PER_THREAD
        )
    finally:
        db.dispose()


# -- the same race, made deterministic, on both databases --------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def database(
    request: pytest.FixtureRequest, private_database: str, tmp_path: Path
) -> Iterator[Database]:
    if request.param == "postgresql":
        url = private_database
    else:
        url = f"sqlite:///{tmp_path / 'races.sqlite3'}"
        upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


def test_a_second_first_insert_waits_and_finds_the_row(database: Database) -> None:
    """Session A has inserted the gate and not committed; session B asks for the same
    gate. B must wait for A and then read A's row: no unique violation, one row."""
    service = f"svc-{uuid.uuid4().hex[:8]}"
    first = database.sessions()
    try:
        gate_a = approval_gate_row(first, service)
        outcome: dict[str, object] = {}

        def second() -> None:
            with database.session() as session:
                try:
                    outcome["id"] = approval_gate_row(session, service).id
                except Exception as exc:  # the old select-then-insert ended here
                    outcome["error"] = repr(exc)

        worker = threading.Thread(target=second)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), f"B did not wait for A's uncommitted row: {outcome}"
        first.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert outcome == {"id": gate_a.id}
    finally:
        first.close()
    with Session(database.engine) as session:
        stmt = select(func.count()).where(ApprovalGate.service_name == service)
        assert session.scalar(stmt) == 1
