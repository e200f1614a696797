"""How a run moves: record a step's outcome, stop at a gate, close the run.

Database only: no broker, no Docker. Each function runs one transaction and returns
what the caller (the Celery shell in ``tasks``) must do next as a typed value; nothing
is published from here, so a message only ever names rows that are already committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.workflows.orchestrator import cancellation, policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.claims import (  # claiming lives in claims.py
    AlreadyDone,
    Claim,
    Contested,
    Started,
    Waiting,
    claim,
    heartbeat_of,
    next_step,
    queued_next,
)
from moonmind.workflows.orchestrator.dispatch import QueuedStep, next_message
from moonmind.workflows.orchestrator.enums import (
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.plan import Plan
from moonmind.workflows.orchestrator.steps import StepFailed, StepOutcome

log = logging.getLogger("moonmind.orchestrator")

__all__ = [
    "AlreadyDone",
    "Claim",
    "Closed",
    "Contested",
    "Recorded",
    "Started",
    "Waiting",
    "claim",
    "heartbeat_of",
    "next_step",
    "queued_next",
    "record",
]


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
        earlier = repo.latest_task_state(session, run.id, nxt.step)  # e.g. before a retry
        repo.record_task_state(
            session,
            run.id,
            nxt.step,
            TaskStateName.PENDING,
            celery_task_id=nxt.task_id,
            attempt=earlier.attempt + 1 if earlier is not None else 1,
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
            return Recorded(queued=next_message(run, StepName.ROLLBACK))
        _skip_pending(session, run)
        return _close(session, run, RunStatus.FAILED, outcome.message, metrics)
    nxt = next_step(Plan.of(run.action_plan), step)
    if nxt is None:
        _skip_pending(session, run)
        return _close(session, run, RunStatus.SUCCEEDED, outcome.message, metrics)
    gated = _stop_at_gate(session, run, nxt, outcome.result.get("diff_sha256"))
    if gated is not None:
        return Recorded(gated=gated)
    return Recorded(queued=next_message(run, nxt))


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
        return Recorded(queued=next_message(run, StepName.ROLLBACK))
    _skip_pending(session, run)
    message = f"cancelled during {step.value}; nothing had been changed"
    return _close(session, run, RunStatus.CANCELLED, message, metrics)


def _stop_at_gate(
    session: Session, run: OrchestratorRun, nxt: StepName, diff_sha256: str | None
) -> str | None:
    """Park the run before a gated step unless a valid approval already covers it."""
    gate = policies.gate_at(run, nxt, patched=diff_sha256 is not None)
    if gate is None:
        return None
    return policies.park_unless_approved(session, run, gate, diff_sha256)


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
