"""dry runs: a flag on the run row

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 23:30:00.000000

A run submitted with ``dry_run`` derives its patch in a scratch copy of the workspace and
ends after it (steps/dry_run.py); the run list shows the flag without decoding the plan.
Existing runs were real runs: the column defaults to false. Adding a column with a
constant default needs no table rebuild; the downgrade drops it in batch mode with
SQLite's foreign keys off meanwhile, as in 0004.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_foreign_keys(enabled: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")


def upgrade() -> None:
    op.add_column(
        "orchestrator_runs",
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    _sqlite_foreign_keys(False)
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.drop_column("dry_run")
    _sqlite_foreign_keys(True)
