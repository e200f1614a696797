"""add run approval record

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:44:39.629630
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("requested_by", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.drop_column("requested_by")
        batch_op.drop_column("approval")
