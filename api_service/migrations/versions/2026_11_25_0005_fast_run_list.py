"""a fast run list: the approval requirement on the run row, one keyset index per filter

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:00:00.000000

GET /orchestrator/runs pages newest first on (queued_at, id), optionally filtered by status
or by service: each gets an index that starts with its filter and ends with the sort key.
The summary's approval requirement is kept on the run row (it was read from the plan's
JSON per row); existing rows get it from their plan's service context. Batch mode with
SQLite's foreign keys off meanwhile, as in 0004.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_orchestrator_runs_status_queued_at_id": ["status", "queued_at", "id"],
    "ix_orchestrator_runs_target_service_queued_at_id": ["target_service", "queued_at", "id"],
}


def _sqlite_foreign_keys(enabled: bool) -> None:
    """The table rebuild must not trip the rows that reference orchestrator_runs; the
    pragma only takes effect outside a transaction, hence the autocommit block."""
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
        if enabled:
            broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the table rebuild: {broken[:5]}")


def _requirement(service_context: Any) -> str | None:
    """What policies.gate_for read from the snapshotted profile."""
    if isinstance(service_context, str):
        service_context = json.loads(service_context)
    profile = (service_context or {}).get("profile") or {}
    if not profile.get("protected"):
        return None
    return str(profile.get("approval_requirement") or "pre-run")


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT r.id, p.service_context FROM orchestrator_runs r "
            "JOIN orchestrator_action_plans p ON p.id = r.action_plan_id"
        )
    ).fetchall()
    update = sa.text("UPDATE orchestrator_runs SET approval_requirement = :req WHERE id = :id")
    changes = [{"id": row[0], "req": req} for row in rows if (req := _requirement(row[1]))]
    if changes:
        bind.execute(update, changes)


def upgrade() -> None:
    _sqlite_foreign_keys(False)
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval_requirement", sa.String(32), nullable=True))
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    _sqlite_foreign_keys(True)
    _backfill()


def downgrade() -> None:
    _sqlite_foreign_keys(False)
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
        batch_op.drop_column("approval_requirement")
    _sqlite_foreign_keys(True)
