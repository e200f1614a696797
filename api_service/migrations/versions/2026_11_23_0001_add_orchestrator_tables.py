"""add orchestrator tables

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 22:54:19.775903
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "approval_gates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("service_name", sa.String(length=255), nullable=False),
        sa.Column(
            "requirement",
            sa.Enum(
                "none",
                "pre-run",
                "pre-verify",
                name="approval_requirement",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("approver_roles", sa.JSON(), nullable=False),
        sa.Column("valid_for_minutes", sa.Integer(), nullable=False),
        sa.Column("last_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "valid_for_minutes >= 5", name=op.f("ck_approval_gates_valid_for_minutes_min")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_gates")),
        sa.UniqueConstraint("service_name", name=op.f("uq_approval_gates_service_name")),
    )
    op.create_table(
        "orchestrator_action_plans",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("service_context", sa.JSON(), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "generated_by",
            sa.Enum(
                "operator",
                "system",
                "llm",
                name="plan_author",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrator_action_plans")),
    )
    op.create_table(
        "orchestrator_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("target_service", sa.String(length=255), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "awaiting_approval",
                "succeeded",
                "failed",
                "rolled_back",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "priority",
            sa.Enum(
                "normal",
                "high",
                name="run_priority",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("action_plan_id", sa.Uuid(), nullable=False),
        sa.Column("approval_gate_id", sa.Uuid(), nullable=True),
        sa.Column("approval_token", sa.Text(), nullable=True),
        sa.Column("requested_patch", sa.Text(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("metrics_snapshot", sa.JSON(), nullable=False),
        sa.Column("missing_artifacts", sa.JSON(), nullable=False),
        sa.Column("artifact_root", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at",
            name=op.f("ck_orchestrator_runs_completed_after_started"),
        ),
        sa.ForeignKeyConstraint(
            ["action_plan_id"],
            ["orchestrator_action_plans.id"],
            name=op.f("fk_orchestrator_runs_action_plan_id_orchestrator_action_plans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["approval_gate_id"],
            ["approval_gates.id"],
            name=op.f("fk_orchestrator_runs_approval_gate_id_approval_gates"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrator_runs")),
    )
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orchestrator_runs_queued_at_id", ["queued_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_orchestrator_runs_target_service_status", ["target_service", "status"], unique=False
        )

    op.create_table(
        "orchestrator_run_artifacts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "patch_diff",
                "build_log",
                "verify_log",
                "rollback_log",
                "metrics",
                "plan_snapshot",
                name="artifact_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["orchestrator_runs.id"],
            name=op.f("fk_orchestrator_run_artifacts_run_id_orchestrator_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestrator_run_artifacts")),
    )
    with op.batch_alter_table("orchestrator_run_artifacts", schema=None) as batch_op:
        batch_op.create_index("ix_orchestrator_run_artifacts_run_id", ["run_id"], unique=False)

    op.create_table(
        "spec_workflow_task_states",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column(
            "plan_step",
            sa.Enum(
                "analyze",
                "patch",
                "build",
                "restart",
                "verify",
                "rollback",
                name="plan_step",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("celery_task_id", sa.String(length=64), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "PENDING",
                "STARTED",
                "RETRY",
                "SUCCESS",
                "FAILURE",
                name="task_state",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("artifact_refs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state <> 'FAILURE' OR message IS NOT NULL",
            name=op.f("ck_spec_workflow_task_states_failure_has_message"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["orchestrator_runs.id"],
            name=op.f("fk_spec_workflow_task_states_run_id_orchestrator_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spec_workflow_task_states")),
    )
    with op.batch_alter_table("spec_workflow_task_states", schema=None) as batch_op:
        batch_op.create_index("ix_spec_workflow_task_states_run_id", ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spec_workflow_task_states", schema=None) as batch_op:
        batch_op.drop_index("ix_spec_workflow_task_states_run_id")

    op.drop_table("spec_workflow_task_states")
    with op.batch_alter_table("orchestrator_run_artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_orchestrator_run_artifacts_run_id")

    op.drop_table("orchestrator_run_artifacts")
    with op.batch_alter_table("orchestrator_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_orchestrator_runs_target_service_status")
        batch_op.drop_index("ix_orchestrator_runs_queued_at_id")

    op.drop_table("orchestrator_runs")
    op.drop_table("orchestrator_action_plans")
    op.drop_table("approval_gates")
