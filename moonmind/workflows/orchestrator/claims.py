"""Who may run a step: the compare-and-set on the step's task-state row, and the service lock.

Database only. A delivery names its step and its Celery task id; it runs the step only if
the step's newest task-state row says this delivery's id is the one expected (PENDING
under that id), or if the row says a worker took this very message and that worker is
gone (its run's heartbeat did not move while the next delivery watched it). The broker's
``redelivered`` flag is not trusted: RabbitMQ sets it on any channel loss, also while the
first worker is still at work. Anything else is a duplicate and has no effect.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun, TaskState
from moonmind.config import Settings
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, next_message
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.plan import Plan, context_of
from moonmind.workflows.orchestrator.steps import StepContext
from moonmind.workflows.orchestrator.storage import ArtifactStore

log = logging.getLogger("moonmind.orchestrator")

PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1}


def next_step(plan: Plan, step: StepName) -> StepName | None:
    """The planned step after ``step`` on the forward path (rollback only follows a failure)."""
    forward = [s.name for s in plan.steps if s.name != StepName.ROLLBACK]
    if step not in forward:
        return None
    later = forward[forward.index(step) + 1 :]
    return later[0] if later else None


@dataclass(frozen=True)
class Started:
    """This delivery owns the step: run it with this context."""

    context: StepContext
    queued: QueuedStep
    attempt: int
    cancel_requested: bool = False  # the run was cancelled: do not start the work


@dataclass(frozen=True)
class Waiting:
    """Another run holds the service (or is ahead in line): deliver this step again later."""

    queued: QueuedStep
    holder: uuid.UUID


@dataclass(frozen=True)
class AlreadyDone:
    """The step finished before (its worker died before acking): the next one may be lost."""

    next_step: StepName


@dataclass(frozen=True)
class Contested:
    """This message was already taken by a worker whose heartbeat is fresh.

    The caller watches the heartbeat: if it moves, the first worker is alive and this
    delivery is dropped; if not, it claims again with ``owner_gone_since=heartbeat``."""

    heartbeat: datetime


Claim = Started | Waiting | AlreadyDone | Contested | None  # None: nothing to do


def claim(
    db: Database,
    settings: Settings,
    step: StepName,
    run_id: uuid.UUID,
    task_id: str | None,
    owner_gone_since: datetime | None = None,
) -> Claim:
    """Take the step for this delivery, if it is this delivery's to take."""
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            log.warning("run %s no longer exists; %s ignored", run_id, step.value)
            return None
        if run.status in TERMINAL_STATUSES:
            return None
        plan = Plan.of(run.action_plan)
        if plan.step(step).status == StepStatus.SUCCEEDED:
            nxt = next_step(plan, step)
            return AlreadyDone(nxt) if nxt is not None else None
        latest = _newest_row(session, run_id, step, task_id)
        verdict = _verdict(settings, run, latest, task_id, owner_gone_since)
        if verdict is None or isinstance(verdict, Contested):
            return verdict
        queued = next_message(run, step, task_id)
        if run.status == RunStatus.PENDING:
            holder = _take_service(session, run)
            if holder is not None:
                repo.touch_heartbeat(session, run_id)  # its message is alive: not lost
                return Waiting(queued, holder)
            if run.status != RunStatus.RUNNING or _parked_at_gate(session, run, plan, step):
                return None
        elif run.status != RunStatus.RUNNING:
            return None  # parked at a gate: an approval sends the step again
        attempt = _start_attempt(session, run, step, task_id, latest)
        repo.update_step(
            session,
            run,
            step,
            status=StepStatus.IN_PROGRESS,
            started_at=datetime.now(UTC),
            celery_task_id=task_id,
        )
        repo.touch_heartbeat(session, run_id)
        if settings.host:  # which Docker host's worker took each step
            repo.set_metrics(session, run, worker_hosts={step.value: settings.host})
        cancelled = run.cancel_requested_at is not None and step != StepName.ROLLBACK
        ctx = context_for(settings, run)
        if step == StepName.RESTART:  # it checks that no other service changed
            held = repo.services_held_by_others(session, ctx.service.project, exclude=run_id)
            ctx.busy_services = frozenset(held)
        return Started(ctx, queued, attempt, cancelled)


def _newest_row(
    session: Session, run_id: uuid.UUID, step: StepName, task_id: str | None
) -> TaskState | None:
    """The step's newest task-state row. A message queued under a reused attempt number
    (a PENDING row below an older attempt, e.g. an approval after a retry) becomes the
    newest attempt, so that it is this message that the compare-and-set expects."""
    rows = [r for r in repo.list_task_states(session, run_id) if r.plan_step == step]
    if not rows:
        return None
    newest = max(rows, key=lambda r: r.attempt)
    queued = [r for r in rows if r.state == TaskStateName.PENDING and r.celery_task_id == task_id]
    if queued and queued[0] is not newest and task_id is not None:
        queued[0].attempt = newest.attempt + 1
        session.flush()
        return queued[0]
    return newest


def _verdict(
    settings: Settings,
    run: OrchestratorRun,
    latest: TaskState | None,
    task_id: str | None,
    owner_gone_since: datetime | None,
) -> Contested | bool | None:
    """True: this delivery may start the step; Contested: watch first; None: a duplicate."""
    if latest is None:
        return True  # nothing recorded yet (rows written by older versions)
    if latest.state == TaskStateName.PENDING:
        if latest.celery_task_id in (None, task_id):
            return True
        log.warning("run %s: %s message %s superseded; dropped", run.id, latest.plan_step, task_id)
        return None
    if latest.state != TaskStateName.STARTED or latest.celery_task_id != task_id:
        # Finished, failed (its rollback is queued) or taken under another message.
        log.warning("run %s: duplicate delivery of %s dropped", run.id, latest.plan_step)
        return None
    heartbeat = repo.as_utc(run.heartbeat_at)
    if heartbeat is None:
        return True
    if owner_gone_since is not None and heartbeat <= owner_gone_since:
        return True  # watched for a while and nobody beat: the first worker is gone
    age = (datetime.now(UTC) - heartbeat).total_seconds()
    if age >= settings.stale_after_seconds:
        return True
    return Contested(heartbeat)


def _start_attempt(
    session: Session,
    run: OrchestratorRun,
    step: StepName,
    task_id: str | None,
    latest: TaskState | None,
) -> int:
    """Mark this delivery STARTED (a lost attempt before it FAILURE); its attempt number."""
    attempt = latest.attempt if latest is not None else 1
    if latest is not None and latest.state == TaskStateName.STARTED:
        repo.mark_attempt_lost(session, latest)
        attempt += 1
    repo.record_task_state(
        session, run.id, step, TaskStateName.STARTED, celery_task_id=task_id, attempt=attempt
    )
    return attempt


def heartbeat_of(db: Database, run_id: uuid.UUID) -> datetime | None:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        return repo.as_utc(run.heartbeat_at) if run is not None else None


def _parked_at_gate(session: Session, run: OrchestratorRun, plan: Plan, step: StepName) -> bool:
    """A run that waited for its service goes through its gate (or on past it, a retry
    resumed there) only with an approval still valid: one that expired while it waited
    parks it at the gate again, and a new approval sends the step."""
    if run.cancel_requested_at is not None:
        return False  # cancelled: the step does not run, its patch is rolled back
    diff = plan.result(StepName.PATCH).get("diff_sha256")
    gate = policies.gate_reached(run, step, patched=diff is not None)
    if gate is None:
        return False
    parked = policies.park_unless_approved(session, run, gate, diff, after_waiting=True)
    if parked is not None:
        log.warning("run %s: %s", run.id, parked)
    return parked is not None


def _take_service(session: Session, run: OrchestratorRun) -> uuid.UUID | None:
    """Move a pending run to running unless another run holds its service or is ahead in
    line (higher priority, or the same priority and queued earlier): then that run."""
    project = context_of(run.action_plan).project
    repo.lock_service(session, project, run.target_service)
    holder = repo.active_run_for_service(session, project, run.target_service, exclude=run.id)
    if holder is not None:
        run.message = f"waiting for run {holder.id}, which holds {run.target_service}"
        return holder.id
    # A cancelled run only puts its patch back: it goes before the line, not to its end.
    ahead = None if run.cancel_requested_at else first_in_line(session, project, run.target_service)
    if ahead is not None and ahead.id != run.id:
        run.message = f"waiting behind run {ahead.id}, queued before it for {run.target_service}"
        return ahead.id
    if repo.transition_run(session, run.id, expected=[RunStatus.PENDING], new=RunStatus.RUNNING):
        run.status = RunStatus.RUNNING
        run.message = None  # no longer waiting
    return None


def first_in_line(session: Session, project: str, service: str) -> OrchestratorRun | None:
    """The pending run of a service that goes next: highest priority, then oldest."""
    waiting = [
        r
        for r in repo.service_runs(session, project, service)
        if r.status == RunStatus.PENDING and r.cancel_requested_at is None
    ]
    if not waiting:
        return None
    return min(
        waiting,
        key=lambda r: (PRIORITY_RANK.get(r.priority, 1), repo.as_utc(r.queued_at), str(r.id)),
    )


def context_for(settings: Settings, run: OrchestratorRun) -> StepContext:
    return StepContext(
        run_id=run.id,
        instruction=run.instruction,
        service=context_of(run.action_plan),
        plan=Plan.of(run.action_plan),
        store=ArtifactStore(settings.artifact_root_path),
        requested_patch=run.requested_patch,
        approved_diff=(run.approval or {}).get("diff_sha256"),
        agent_template=settings.patch_agent,
        agent_timeout_s=settings.patch_agent_timeout_seconds,
        build_timeout_s=settings.build_timeout_seconds,
        up_timeout_s=settings.up_timeout_seconds,
    )


def queued_next(db: Database, run_id: uuid.UUID, step: StepName) -> QueuedStep | None:
    """The next step's message, if it was recorded as queued but has not started."""
    with db.session() as session:
        run = repo.get_run(session, run_id)
        pending = repo.latest_task_state(session, run_id, step)
        if run is None or pending is None or pending.state != TaskStateName.PENDING:
            return None
        if pending.celery_task_id is None:
            return None
        return next_message(run, step, pending.celery_task_id)
