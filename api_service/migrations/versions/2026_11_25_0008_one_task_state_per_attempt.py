"""one task-state row per step attempt

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 23:50:00.000000

``record_task_state`` looks a step attempt's row up before inserting it; nothing stopped
two writers from both inserting, and a second row for one attempt then made every later
lookup of it fail. A unique index on (run, step, attempt) refuses the second insert at
once. Rows already doubled are reduced to the newest of each attempt first (the one last
updated; the larger id on a tie), so the index can be built on any existing database.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "spec_workflow_task_states"
INDEX = "uq_spec_workflow_task_states_attempt"


def upgrade() -> None:
    op.execute(
        f"DELETE FROM {TABLE} WHERE EXISTS ("
        f" SELECT 1 FROM {TABLE} newer"
        f" WHERE newer.run_id = {TABLE}.run_id"
        f" AND newer.plan_step = {TABLE}.plan_step"
        f" AND newer.attempt = {TABLE}.attempt"
        f" AND (newer.updated_at > {TABLE}.updated_at"
        f" OR (newer.updated_at = {TABLE}.updated_at AND newer.id > {TABLE}.id)))"
    )
    op.create_index(INDEX, TABLE, ["run_id", "plan_step", "attempt"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
