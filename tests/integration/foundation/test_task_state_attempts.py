"""One task-state row per step attempt: a second one is refused, and upgrading a database
whose rows were already doubled keeps the newest of each attempt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from api_service.db import migrate
from api_service.db.base import Database
from api_service.db.models import TaskState
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import StepName, TaskStateName
from tests.support.factories import create_run


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite in tmp_path, or a schema of its own on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'attempts.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    schema = f"attempts_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _row(run_id: uuid.UUID, attempt: int, age_s: float, state: TaskStateName) -> TaskState:
    return TaskState(
        run_id=run_id,
        plan_step=StepName.ANALYZE,
        attempt=attempt,
        state=state,
        message="lost" if state == TaskStateName.FAILURE else None,
        updated_at=repo.utcnow() - timedelta(seconds=age_s),
    )


def test_upgrading_keeps_the_newest_row_of_each_attempt(url: str) -> None:
    migrate.upgrade(url, "0007")  # before the index: doubled rows could be written
    db = Database(url)
    try:
        with db.session() as session:
            run_id = create_run(session).id
            session.add_all(
                [
                    _row(run_id, 1, 30, TaskStateName.PENDING),
                    _row(run_id, 1, 10, TaskStateName.FAILURE),  # the newest of attempt 1
                    _row(run_id, 1, 20, TaskStateName.STARTED),
                    _row(run_id, 2, 5, TaskStateName.STARTED),
                ]
            )
        migrate.upgrade(url)
        migrate.check(url)
        with db.session() as session:
            rows = session.scalars(select(TaskState).where(TaskState.run_id == run_id)).all()
            kept = sorted((r.attempt, r.state) for r in rows)
        assert kept == [(1, TaskStateName.FAILURE), (2, TaskStateName.STARTED)]
    finally:
        db.dispose()


def test_a_second_row_for_one_attempt_is_refused(url: str) -> None:
    migrate.upgrade(url)
    db = Database(url)
    try:
        with db.session() as session:
            run_id = create_run(session).id
            repo.record_task_state(
                session, run_id, StepName.ANALYZE, TaskStateName.PENDING, celery_task_id="t1"
            )
            repo.record_task_state(  # the same attempt again: the row advances, no new one
                session, run_id, StepName.ANALYZE, TaskStateName.STARTED, celery_task_id="t1"
            )
        with pytest.raises(IntegrityError), db.session() as session:
            session.add(_row(run_id, 1, 0, TaskStateName.PENDING))
        with db.session() as session:
            states = session.scalars(select(TaskState.state).where(TaskState.run_id == run_id))
            assert list(states) == [TaskStateName.STARTED]
    finally:
        db.dispose()
