"""webhook deliveries: one row per run event and receiver, with how its delivery went

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 23:40:00.000000

Rows are written in the transaction that changes a run's status and posted by a worker
thread (moonmind/workflows/orchestrator/webhook_delivery.py). A new table only: no
rebuild of an existing one. Rows go with their run (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "orchestrator_webhook_deliveries"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_orchestrator_webhook_deliveries_webhook_delivery_status"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["orchestrator_runs.id"],
            name=op.f("fk_orchestrator_webhook_deliveries_run_id_orchestrator_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrator_webhook_deliveries")),
    )
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.create_index("ix_orchestrator_webhook_deliveries_run_id", ["run_id"])
        batch_op.create_index(
            "ix_orchestrator_webhook_deliveries_status_due", ["status", "next_attempt_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_index("ix_orchestrator_webhook_deliveries_status_due")
        batch_op.drop_index("ix_orchestrator_webhook_deliveries_run_id")
    op.drop_table(TABLE)
