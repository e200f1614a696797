"""A submitted run's rows (plan, run, first task state) go in together: one autocommit
statement on PostgreSQL, one transaction on SQLite; all stored or none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from api_service.db.base import Database
from api_service.db.insert_new import insert_new
from api_service.db.migrate import upgrade
from api_service.db.models import ActionPlan, OrchestratorRun, TaskState
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName, TaskStateName
from moonmind.workflows.orchestrator.plan import PlanStep
from moonmind.workflows.orchestrator.repositories import as_utc
from tests.support.steps import service_context


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgresql":
        url = request.getfixturevalue("migrated_postgres")
    else:
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def _rows(state: TaskStateName = TaskStateName.PENDING) -> tuple[OrchestratorRun, TaskState]:
    run = repo.new_run(
        instruction="requests is missing",
        target_service="app",
        steps=[PlanStep(name=StepName.ANALYZE, parameters={"tail": 200})],
        service_context=service_context(Path("/srv/stack"), service="app"),
        artifact_root="/var/artifacts",
        requested_by="ops",
    )
    task = TaskState(
        id=uuid.uuid4(), run_id=run.id, plan_step=StepName.ANALYZE, state=state, attempt=1
    )
    return run, task


def _count(db: Database, model: Any, key: uuid.UUID) -> int:
    with db.session() as session:
        return len(session.scalars(select(model).where(model.id == key)).all())


def test_the_rows_are_stored_with_the_defaults_a_flush_would_give(db: Database) -> None:
    run, task = _rows()
    insert_new(db, run.action_plan, run, task)
    assert run.queued_at is not None  # the defaults are set on the object, and stored
    assert run.dry_run is False
    with db.session() as session:
        stored = repo.get_run(session, run.id)
        assert stored is not None
        assert (stored.status, stored.target_service, stored.requested_by) == (
            RunStatus.PENDING,
            "app",
            "ops",
        )
        assert as_utc(stored.queued_at) == as_utc(run.queued_at)
        assert stored.artifact_root == f"/var/artifacts/{run.id}"
        assert stored.action_plan.steps[0]["name"] == StepName.ANALYZE.value
        assert stored.action_plan.service_context["profile"]["name"] == "app"
        first = repo.latest_task_state(session, run.id, StepName.ANALYZE)
        assert first is not None
        assert (first.id, first.state, first.artifact_refs) == (task.id, task.state, [])


def test_a_row_that_fails_leaves_none_of_the_others(db: Database) -> None:
    run, task = _rows(TaskStateName.FAILURE)  # a failure without a message: refused
    with pytest.raises(IntegrityError, match="failure_has_message"):
        insert_new(db, run.action_plan, run, task)
    assert _count(db, OrchestratorRun, run.id) == 0
    assert _count(db, ActionPlan, run.action_plan.id) == 0
    assert _count(db, TaskState, task.id) == 0


def test_postgresql_gets_one_statement_outside_any_transaction(migrated_postgres: str) -> None:
    db = Database(migrated_postgres)
    sent: list[tuple[str, bool]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append((statement, conn.connection.dbapi_connection.autocommit))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        run, task = _rows()
        insert_new(db, run.action_plan, run, task)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
        db.dispose()
    assert len(sent) == 1, [statement for statement, _ in sent]
    statement, autocommit = sent[0]
    assert autocommit  # no BEGIN or COMMIT round trip around it
    assert statement.count("INSERT INTO") == 3
