"""Runs of a protected service for the gate and cancel tests: queued, or failed past their
gate with the patch still in place (the worker's side given by tests/support/worker_side)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName, TaskStateName
from moonmind.workflows.orchestrator.steps import StepResult
from tests.support.factories import ALL_STEPS, create_run
from tests.support.worker_side import ENGINE_GONE, run_step, take_messages

DIFF = "d" * 64
APPROVAL = {"approver": {"id": "bob", "role": "sre"}, "token": "t-lock", "diff_sha256": DIFF}


def sent_tasks(amqp_url: str, queue: str) -> list[str]:
    """The task names of every message waiting in ``queue``, consumed."""
    return [task for task, _ in take_messages(amqp_url, queue)]


def queued_run(db: Database, service: str, **fields: object) -> uuid.UUID:
    """A run of ``service`` (just its analyze step unless given) with analyze queued."""
    with db.session() as session:
        run = create_run(session, service=service, **fields)  # type: ignore[arg-type]
        run.requested_by = "alice"
        repo.record_task_state(
            session,
            run.id,
            StepName.ANALYZE,
            TaskStateName.PENDING,
            celery_task_id=f"t-{uuid.uuid4().hex[:8]}",
        )
        return run.id


def failed_at_restart(
    db: Database, settings: Settings, service: str, *, with_rollback: bool = False
) -> uuid.UUID:
    """An approved run of protected ``service`` (pre-verify gate, before build) whose
    restart lost the Docker engine: failed past its gate, with nothing rolled back
    (``with_rollback``: its plan has a rollback step, which a cancel then queues)."""
    run_id = queued_run(
        db,
        service,
        protected={"approval_requirement": "pre-verify", "approver_roles": ("sre",)},
        **({"steps": (*ALL_STEPS, StepName.ROLLBACK)} if with_rollback else {}),
    )
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        assert run is not None
        expires = policies.utcnow() + timedelta(minutes=10)
        run.approval = {
            "approver_id": "bob",
            "expires_at": expires.isoformat(),
            "diff_sha256": DIFF,
        }
    run_step(db, settings, run_id, StepName.ANALYZE, StepResult("ok"))
    run_step(db, settings, run_id, StepName.PATCH, StepResult("ok", {"diff_sha256": DIFF}))
    run_step(db, settings, run_id, StepName.BUILD, StepResult("ok"))
    after = run_step(db, settings, run_id, StepName.RESTART, ENGINE_GONE)
    assert after.closed is not None
    assert after.closed.status == RunStatus.FAILED
    return run_id
