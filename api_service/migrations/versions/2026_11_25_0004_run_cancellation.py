"""runs can be cancelled: status 'cancelled' and the time a cancel was requested

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00.000000

The run status is a CHECK-constrained string, so adding a status replaces its CHECK
(batch mode: SQLite rebuilds the table, with foreign keys off meanwhile, as in 0003).
A downgrade turns cancelled runs into failed ones before putting the old CHECK back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("pending", "running", "awaiting_approval", "succeeded", "failed", "rolled_back")
NEW_STATUSES = (*OLD_STATUSES, "cancelled")
CHECK = "ck_orchestrator_runs_run_status"


def _check(values: Sequence[str]) -> str:
    return "status IN ({})".format(", ".join(f"'{value}'" for value in values))


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


def upgrade() -> None:
    _sqlite_foreign_keys(False)
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(CHECK), type_="check")
        batch_op.create_check_constraint(op.f(CHECK), _check(NEW_STATUSES))
        batch_op.add_column(
            sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
    _sqlite_foreign_keys(True)


def downgrade() -> None:
    _sqlite_foreign_keys(False)
    op.execute(
        "UPDATE orchestrator_runs SET status = 'failed', message = "
        "COALESCE(message, 'cancelled') WHERE status = 'cancelled'"
    )
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_at")
        batch_op.drop_constraint(op.f(CHECK), type_="check")
        batch_op.create_check_constraint(op.f(CHECK), _check(OLD_STATUSES))
    _sqlite_foreign_keys(True)
