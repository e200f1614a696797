"""Migrations go up, down and up again, and the models never drift from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from api_service.db import migrate
from api_service.db.base import make_engine

TABLES = {
    "orchestrator_runs",
    "orchestrator_action_plans",
    "orchestrator_run_artifacts",
    "approval_gates",
    "spec_workflow_task_states",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orchestrator.db'}"
    from sqlalchemy import create_engine, text

    url: str = request.getfixturevalue("postgres_url")
    # A schema of its own so this test can go down to base without disturbing other tests.
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS migration_check CASCADE"))
        conn.execute(text("CREATE SCHEMA migration_check"))
    engine.dispose()
    return url + "?options=-csearch_path%3Dmigration_check"


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert TABLES <= _tables(database_url)
    migrate.check(database_url)

    migrate.downgrade(database_url)
    assert not (TABLES & _tables(database_url))

    migrate.upgrade(database_url)
    assert TABLES <= _tables(database_url)
    migrate.check(database_url)
