"""artifact types name their file; drop unused task state RETRY and plan author llm

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:05:00.000000

Enums are stored as CHECK-constrained strings, so changing a vocabulary means replacing
its CHECK constraint. Existing artifact rows are relabelled from their ``kind`` (which
always said exactly what the file is); the downgrade maps them back to the old labels.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ARTIFACT_TYPES = (
    "patch_diff",
    "build_log",
    "verify_log",
    "rollback_log",
    "metrics",
    "plan_snapshot",
)
NEW_ARTIFACT_TYPES = (
    "analysis",
    "analyze_log",
    "agent_log",
    "pre_image",
    "patch_diff",
    "build_log",
    "restart_log",
    "verify_log",
    "rollback_log",
    "metrics",
    "plan_snapshot",
)
# new type: (the kinds that get it on upgrade, the old type it falls back to on downgrade)
RELABEL = {
    "analysis": (("analysis",), "plan_snapshot"),
    "analyze_log": (("analyze_log",), "verify_log"),
    "agent_log": (("agent_log",), "patch_diff"),
    "pre_image": (("pre_image", "pre_image_manifest"), "patch_diff"),
    "restart_log": (("restart_log",), "build_log"),
}
OLD_TASK_STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE")
NEW_TASK_STATES = ("PENDING", "STARTED", "SUCCESS", "FAILURE")
OLD_PLAN_AUTHORS = ("operator", "system", "llm")
NEW_PLAN_AUTHORS = ("operator", "system")

# (table, column, constraint name as the naming convention rendered it)
ARTIFACT_TYPE = (
    "orchestrator_run_artifacts",
    "type",
    "ck_orchestrator_run_artifacts_artifact_type",
)
TASK_STATE = ("spec_workflow_task_states", "state", "ck_spec_workflow_task_states_task_state")
PLAN_AUTHOR = (
    "orchestrator_action_plans",
    "generated_by",
    "ck_orchestrator_action_plans_plan_author",
)


def _replace_check(target: tuple[str, str, str], values: Sequence[str]) -> None:
    """Swap the column's CHECK (batch mode: SQLite recreates the table, others ALTER)."""
    table, column, name = target
    allowed = ", ".join(f"'{value}'" for value in values)
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(op.f(name), type_="check")
        batch_op.create_check_constraint(op.f(name), f"{column} IN ({allowed})")


def _sqlite_foreign_keys(enabled: bool) -> None:
    """SQLite recreates a table to change its CHECK; with foreign keys enforced, dropping
    the old orchestrator_action_plans would trip the runs that reference it. The pragma
    only takes effect outside a transaction, hence the autocommit block."""
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
    _replace_check(ARTIFACT_TYPE, NEW_ARTIFACT_TYPES)
    for new_type, (kinds, _) in RELABEL.items():
        listed = ", ".join(f"'{kind}'" for kind in kinds)
        op.execute(
            f"UPDATE orchestrator_run_artifacts SET type = '{new_type}' WHERE kind IN ({listed})"
        )
    _replace_check(TASK_STATE, NEW_TASK_STATES)
    _replace_check(PLAN_AUTHOR, NEW_PLAN_AUTHORS)
    _sqlite_foreign_keys(True)


def downgrade() -> None:
    _sqlite_foreign_keys(False)
    _replace_check(PLAN_AUTHOR, OLD_PLAN_AUTHORS)
    _replace_check(TASK_STATE, OLD_TASK_STATES)
    for new_type, (_, old_type) in RELABEL.items():
        op.execute(
            f"UPDATE orchestrator_run_artifacts SET type = '{old_type}' WHERE type = '{new_type}'"
        )
    _replace_check(ARTIFACT_TYPE, OLD_ARTIFACT_TYPES)
    _sqlite_foreign_keys(True)
