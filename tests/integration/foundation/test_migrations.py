"""Migrations go up, down and up again, and the models never drift from them."""

from __future__ import annotations

import json
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
    "orchestrator_webhook_deliveries",
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


def test_0005_keeps_the_approval_requirement_on_existing_runs(tmp_path: Path) -> None:
    """Runs stored before 0005 get their gate from their plan's snapshotted profile."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    migrate.upgrade(url, "0004")
    engine = make_engine(url)
    profiles = {"a" * 32: {"protected": True, "approval_requirement": "pre-verify"}, "b" * 32: {}}
    try:
        with engine.begin() as conn:
            for index, (plan, profile) in enumerate(profiles.items()):
                conn.execute(
                    text(
                        "INSERT INTO orchestrator_action_plans (id, steps, service_context, "
                        "generated_at, generated_by) VALUES (:id, '[]', :ctx, :at, 'system')"
                    ),
                    {"id": plan, "ctx": f'{{"profile": {json.dumps(profile)}}}', "at": "2026"},
                )
                conn.execute(
                    text(
                        "INSERT INTO orchestrator_runs (id, instruction, target_service, status, "
                        "priority, action_plan_id, queued_at, metrics_snapshot, "
                        "missing_artifacts, artifact_root) VALUES (:id, 'x', 'app', 'pending', "
                        "'normal', :plan, :at, '{}', '[]', 'var')"
                    ),
                    {"id": str(index) * 32, "plan": plan, "at": f"2026-01-0{index + 1}"},
                )
        migrate.upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, approval_requirement FROM orchestrator_runs ORDER BY id")
            ).fetchall()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("0" * 32, "pre-verify"), ("1" * 32, None)]
