"""How a run moves: claim a step, record its outcome, stop at a gate, close the run.

Database only: no broker, no Docker. Each function runs one transaction and returns
what the caller (the Celery shell in ``tasks``) must do next as a typed value; nothing
is published from here, so a message only ever names rows that are already committed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.config import Settings
from moonmind.workflows.orchestrator import cancellation, policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.dispatch import QueuedStep, new_task_id, queue_of
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.plan import Plan, context_of
from moonmind.workflows.orchestrator.steps import StepContext, StepFailed, StepOutcome
from moonmind.workflows.orchestrator.storage import ArtifactStore

log = logging.getLogger("moonmind.orchestrator")


def next_step(plan: Plan, step: StepName) -> StepName | None:
    """The planned step after ``step`` on the forward path (rollback only follows a failure)."""
    forward = [s.name for s in plan.steps if s.name != StepName.ROLLBACK]
    if step not in forward:
        return None
    later = forward[forward.index(step) + 1 :]
    return later[0] if later else None


# ------------------------------------------------------------------------ claiming


@dataclass(frozen=True)
class Started:
    """This delivery owns the step: run it with this context."""

    context: StepContext
    queued: QueuedStep
    attempt: int
    cancel_requested: bool = False  # the run was cancelled: do not start the work


@dataclass(frozen=True)
class Waiting:
    """Another run holds the service: deliver this same step again a little later."""

    queued: QueuedStep
    holder: uuid.UUID


@dataclass(frozen=True)
class AlreadyDone:
    """The step finished before (its worker died before acking): the next one may be lost."""

    next_step: StepName


Claim = Started | Waiting | AlreadyDone | None  # None: nothing to do (ended, gone, duplicate)


def claim(
    db: Database,
    settings: Settings,
    step: StepName,
    run_id: uuid.UUID,
    task_id: str | None,
    redelivered: bool = False,
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
        queued = QueuedStep(run_id, step, run.priority, task_id or new_task_id(), queue_of(run))
        if run.status == RunStatus.PENDING:
            holder = _take_service(session, run)
            if holder is not None:
                return Waiting(queued, holder)
            if run.status != RunStatus.RUNNING:
                return None
        attempt = _claim_attempt(session, settings, run, step, task_id, redelivered)
        if attempt is None:
            return None
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
        return Started(_context(settings, run), queued, attempt, cancelled)


def _take_service(session: Session, run: OrchestratorRun) -> uuid.UUID | None:
    """Move a pending run to running unless another run holds its service (then: that run)."""
    project = context_of(run.action_plan).project
    repo.lock_service(session, project, run.target_service)
    holder = repo.active_run_for_service(session, project, run.target_service, exclude=run.id)
    if holder is not None:
        run.message = f"waiting for run {holder.id}, which holds {run.target_service}"
        return holder.id
    if repo.transition_run(session, run.id, expected=[RunStatus.PENDING], new=RunStatus.RUNNING):
        run.status = RunStatus.RUNNING
        run.message = None  # no longer waiting
    return None


def _claim_attempt(
    session: Session,
    settings: Settings,
    run: OrchestratorRun,
    step: StepName,
    task_id: str | None,
    redelivered: bool,
) -> int | None:
    """Mark this delivery STARTED and return its attempt number, or None for a duplicate.

    A STARTED row left behind means a worker died mid-step, unless the run's heartbeat
    is still fresh and the broker did not flag this delivery as a redelivery: then
    another worker is on it right now."""
    latest = repo.latest_task_state(session, run.id, step)
    attempt = latest.attempt if latest is not None else 1
    if latest is not None and latest.state == TaskStateName.STARTED:
        heartbeat = repo.as_utc(run.heartbeat_at)
        alive = heartbeat is not None and (
            (datetime.now(UTC) - heartbeat).total_seconds() < settings.stale_after_seconds
        )
        if alive and not redelivered:
            log.warning("run %s: %s is already running elsewhere; duplicate dropped", run.id, step)
            return None
        repo.mark_attempt_lost(session, latest)
        attempt += 1
    elif latest is not None and latest.state != TaskStateName.PENDING:
        attempt += 1
    repo.record_task_state(
        session, run.id, step, TaskStateName.STARTED, celery_task_id=task_id, attempt=attempt
    )
    return attempt


def _context(settings: Settings, run: OrchestratorRun) -> StepContext:
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
        return QueuedStep(run_id, step, run.priority, pending.celery_task_id, queue_of(run))


# ----------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Closed:
    status: RunStatus
    message: str


@dataclass(frozen=True)
class Recorded:
    """What follows a recorded outcome: at most one of a next step, a gate or the end."""

    queued: QueuedStep | None = None
    closed: Closed | None = None
    gated: str | None = None


def record(
    db: Database,
    metrics: Metrics,
    started: Started,
    outcome: StepOutcome,
    duration_s: float,
) -> Recorded:
    """Store the outcome and decide what comes next, in one transaction."""
    step = started.queued.step
    with db.session() as session:
        run = repo.get_run(session, started.context.run_id, for_update=True)
        if run is None:
            return Recorded()
        _store_outcome(session, run, started, outcome, duration_s)
        _emit_step_metrics(metrics, step, outcome, duration_s)
        after = _decide(session, run, step, outcome, metrics)
        if after.queued is None:
            return after
        nxt = after.queued
        repo.record_task_state(
            session, run.id, nxt.step, TaskStateName.PENDING, celery_task_id=nxt.task_id
        )
        return after


def _store_outcome(
    session: Session,
    run: OrchestratorRun,
    started: Started,
    outcome: StepOutcome,
    duration_s: float,
) -> None:
    ctx, step = started.context, started.queued.step
    refs = [
        str(
            repo.add_artifact(
                session, run, p.stored, type=p.type, kind=p.kind, content_type=p.content_type
            ).id
        )
        for p in ctx.produced
    ]
    for missing in ctx.missing:
        repo.note_missing_artifact(session, run, missing)
    repo.set_metrics(session, run, step_durations_seconds={step.value: round(duration_s, 3)})
    failed = isinstance(outcome, StepFailed)
    repo.update_step(
        session,
        run,
        step,
        status=StepStatus.FAILED if failed else StepStatus.SUCCEEDED,
        completed_at=datetime.now(UTC),
        message=outcome.message,
        artifact_refs=refs,
        result=outcome.result,
    )
    repo.record_task_state(
        session,
        run.id,
        step,
        TaskStateName.FAILURE if failed else TaskStateName.SUCCESS,
        celery_task_id=started.queued.task_id,
        message=outcome.message,
        artifact_refs=refs,
        attempt=started.attempt,
    )


def _emit_step_metrics(
    metrics: Metrics, step: StepName, outcome: StepOutcome, duration_s: float
) -> None:
    failed = isinstance(outcome, StepFailed)
    metrics.incr(f"steps.{step.value}.{'failed' if failed else 'succeeded'}")
    metrics.timing_ms(f"steps.{step.value}.duration", duration_s * 1000)
    if step == StepName.VERIFY:
        metrics.incr("verify.attempts", int(outcome.result.get("probe_attempts") or 0))
    if step == StepName.ROLLBACK:
        metrics.timing_ms("rollback.duration", duration_s * 1000)


def _decide(
    session: Session, run: OrchestratorRun, step: StepName, outcome: StepOutcome, metrics: Metrics
) -> Recorded:
    if step == StepName.ROLLBACK:
        return _after_rollback(session, run, outcome, metrics)
    if run.cancel_requested_at is not None:
        return _after_cancel(session, run, step, metrics)
    if isinstance(outcome, StepFailed):
        if outcome.rollback and Plan.of(run.action_plan).succeeded(StepName.PATCH):
            run.message = outcome.message
            session.flush()
            return Recorded(queued=_queued(run, StepName.ROLLBACK))
        _skip_pending(session, run)
        return _close(session, run, RunStatus.FAILED, outcome.message, metrics)
    nxt = next_step(Plan.of(run.action_plan), step)
    if nxt is None:
        _skip_pending(session, run)
        return _close(session, run, RunStatus.SUCCEEDED, outcome.message, metrics)
    gated = _stop_at_gate(session, run, nxt, outcome.result.get("diff_sha256"))
    if gated is not None:
        return Recorded(gated=gated)
    return Recorded(queued=_queued(run, nxt))


UNVERIFIED = "rollback_unverified"


def _after_rollback(
    session: Session, run: OrchestratorRun, outcome: StepOutcome, metrics: Metrics
) -> Recorded:
    """A rollback that failed, or did not bring a healthy service back, fails the run."""
    reason = run.message or "a step failed"
    if isinstance(outcome, StepFailed):
        detail = outcome.message
        if not detail.startswith(UNVERIFIED):
            detail = f"rollback failed: {detail}"
        return _close(session, run, RunStatus.FAILED, f"{reason}; {detail}", metrics)
    if run.cancel_requested_at is not None:
        return _close(session, run, RunStatus.CANCELLED, f"{reason}; {outcome.message}", metrics)
    return _close(session, run, RunStatus.ROLLED_BACK, f"{reason}; rolled back", metrics)


def _after_cancel(
    session: Session, run: OrchestratorRun, step: StepName, metrics: Metrics
) -> Recorded:
    """A cancelled run rolls back what it changed, or ends at once if it changed nothing."""
    if cancellation.needs_rollback(Plan.of(run.action_plan)):
        run.message = f"cancelled during {step.value}"
        session.flush()
        return Recorded(queued=_queued(run, StepName.ROLLBACK))
    _skip_pending(session, run)
    message = f"cancelled during {step.value}; nothing had been changed"
    return _close(session, run, RunStatus.CANCELLED, message, metrics)


def _queued(run: OrchestratorRun, step: StepName) -> QueuedStep:
    return QueuedStep(run.id, step, run.priority, new_task_id(), queue_of(run))


def _stop_at_gate(
    session: Session, run: OrchestratorRun, nxt: StepName, diff_sha256: str | None
) -> str | None:
    """Park the run before a gated step unless a valid approval already covers it."""
    gate = policies.gate_for(context_of(run.action_plan).profile)
    if gate is not None:
        gate = policies.effective_gate(
            gate, operator_patch=bool(run.requested_patch), patched=diff_sha256 is not None
        )
    if gate is None or gate.step != nxt:
        return None
    diff_sha = diff_sha256 if nxt == StepName.BUILD else None
    if policies.approval_valid(run, now=policies.utcnow(), diff_sha256=diff_sha):
        return None
    what = f"the diff {diff_sha}" if diff_sha else "this run"
    message = (
        f"awaiting approval of {what} by one of: {', '.join(gate.roles)} "
        f"(POST /orchestrator/runs/{run.id}/approvals)"
    )
    repo.transition_run(
        session,
        run.id,
        expected=[RunStatus.RUNNING],
        new=RunStatus.AWAITING_APPROVAL,
        message=message,
    )
    repo.set_metrics(session, run, approval_requested_at=policies.utcnow().isoformat())
    return message


def _skip_pending(session: Session, run: OrchestratorRun) -> None:
    for step in Plan.of(run.action_plan).steps:
        if step.status == StepStatus.PENDING:
            repo.update_step(session, run, step.name, status=StepStatus.SKIPPED)


def _close(
    session: Session, run: OrchestratorRun, status: RunStatus, message: str, metrics: Metrics
) -> Recorded:
    repo.transition_run(session, run.id, expected=[RunStatus.RUNNING], new=status, message=message)
    metrics.incr(f"runs.status.{status.value}")
    queued = repo.as_utc(run.queued_at)
    if queued is not None:
        elapsed = (datetime.now(UTC) - queued).total_seconds()
        metrics.timing_ms(f"runs.duration.{status.value}", elapsed * 1000)
    return Recorded(closed=Closed(status, message))
