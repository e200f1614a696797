"""Celery tasks: one per step. Each reloads the run by id, moves its state with
compare-and-set, runs the step outside any transaction, records the outcome, and only
then enqueues the next step. The database is the truth; Celery only delivers."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

from api_service.db.base import Database, get_database
from moonmind.config import Settings, get_settings
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.action_plan import ServiceContext
from moonmind.workflows.orchestrator.celery_app import app
from moonmind.workflows.orchestrator.enums import (
    TERMINAL_STATUSES,
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.metrics import Metrics, metrics_from_settings
from moonmind.workflows.orchestrator.names import (
    TASK_ANALYZE,
    TASK_BUILD,
    TASK_HEARTBEAT,
    TASK_PATCH,
    TASK_RESTART,
    TASK_ROLLBACK,
    TASK_VERIFY,
)
from moonmind.workflows.orchestrator.steps import (
    STEP_FUNCTIONS,
    StepContext,
    StepFailed,
    StepResult,
)
from moonmind.workflows.orchestrator.storage import ArtifactStore
from moonmind.workflows.orchestrator.sweeper import SweeperThread, find_stale

log = logging.getLogger("moonmind.orchestrator")

TASK_NAMES = {
    StepName.ANALYZE: TASK_ANALYZE,
    StepName.PATCH: TASK_PATCH,
    StepName.BUILD: TASK_BUILD,
    StepName.RESTART: TASK_RESTART,
    StepName.VERIFY: TASK_VERIFY,
    StepName.ROLLBACK: TASK_ROLLBACK,
}
NEXT_STEP = {
    StepName.ANALYZE: StepName.PATCH,
    StepName.PATCH: StepName.BUILD,
    StepName.BUILD: StepName.RESTART,
    StepName.RESTART: StepName.VERIFY,
}
WAIT_SECONDS = 3.0
PRIORITY_VALUES = {Priority.NORMAL: 0, Priority.HIGH: 9}


def _database() -> Database:
    return get_database(get_settings().database_url)


@lru_cache(maxsize=1)
def _metrics() -> Metrics:
    settings = get_settings()
    return metrics_from_settings(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)


_event = log_event


def enqueue_step(
    celery: Celery,
    settings: Settings,
    step: StepName,
    run_id: uuid.UUID,
    priority: Priority,
    task_id: str | None = None,
    countdown: float | None = None,
) -> None:
    """Publish a step; task_id is the one its PENDING task-state row already names."""
    celery.send_task(
        TASK_NAMES[step],
        args=[str(run_id)],
        task_id=task_id,
        countdown=countdown,
        queue=settings.queue,
        routing_key=settings.queue,
        priority=PRIORITY_VALUES[priority],
    )


@dataclass(frozen=True)
class _Waiting:
    """Another run holds the service; this step is delivered again a little later."""

    priority: Priority


@dataclass(frozen=True)
class _Started:
    context: StepContext
    priority: Priority
    attempt: int


def _begin(
    step: StepName, run_id: uuid.UUID, task_id: str | None, redelivered: bool = False
) -> _Started | _Waiting | StepName | None:
    """Claim the step. Returns what to run, the next step when this one already ran, or None."""
    settings = get_settings()
    with _database().session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            log.warning("run %s no longer exists; %s ignored", run_id, step.value)
            return None
        if run.status in TERMINAL_STATUSES:
            return None
        state = next(s for s in run.action_plan.steps if s["name"] == step.value)
        if state["status"] == StepStatus.SUCCEEDED.value:  # a redelivery of a finished step
            return NEXT_STEP.get(step)
        if run.status == RunStatus.PENDING:
            project = ServiceContext.from_json(run.action_plan.service_context).project
            repo.lock_service(session, project, run.target_service)
            holder = repo.active_run_for_service(
                session, project, run.target_service, exclude=run_id
            )
            if holder is not None:
                run.message = f"waiting for run {holder.id}, which holds {run.target_service}"
                return _Waiting(run.priority)
            if not repo.transition_run(
                session, run_id, expected=[RunStatus.PENDING], new=RunStatus.RUNNING
            ):
                return None
            run.message = None  # no longer waiting
        attempt = _claim_attempt(session, run, step, task_id, redelivered, settings)
        if attempt is None:
            return None
        repo.update_step(
            session,
            run,
            step,
            status=StepStatus.IN_PROGRESS.value,
            started_at=datetime.now(UTC),
            celery_task_id=task_id,
        )
        repo.touch_heartbeat(session, run_id)
        previous = {s["name"]: s.get("result") or {} for s in run.action_plan.steps}
        context = StepContext(
            run_id=run_id,
            instruction=run.instruction,
            service=ServiceContext.from_json(run.action_plan.service_context),
            store=ArtifactStore(settings.artifact_root_path),
            previous=previous,
            requested_patch=run.requested_patch,
            agent_template=settings.patch_agent,
            agent_timeout_s=settings.patch_agent_timeout_seconds,
        )
        return _Started(context, run.priority, attempt)


def _claim_attempt(
    session: Any,
    run: Any,
    step: StepName,
    task_id: str | None,
    redelivered: bool,
    settings: Settings,
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


def _finish(
    step: StepName,
    started: _Started,
    task_id: str | None,
    outcome: StepResult | StepFailed,
    duration_s: float,
) -> tuple[tuple[StepName, str] | None, tuple[RunStatus, str] | None, str | None]:
    """Record the outcome in one transaction; say what comes next and whether the run ended."""
    with _database().session() as session:
        nxt = _record(session, step, started, task_id, outcome, duration_s)
        queued = None
        if nxt is not None:
            queued = (nxt, str(uuid.uuid4()))
            repo.record_task_state(
                session,
                started.context.run_id,
                nxt,
                TaskStateName.PENDING,
                celery_task_id=queued[1],
            )
        return queued, session.info.get("closed"), session.info.get("gated")


def _record(
    session: Any,
    step: StepName,
    started: _Started,
    task_id: str | None,
    outcome: StepResult | StepFailed,
    duration_s: float,
) -> StepName | None:
    ctx = started.context
    metrics = _metrics()
    run = repo.get_run(session, ctx.run_id, for_update=True)
    if run is None:
        return None
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
    status = StepStatus.FAILED if failed else StepStatus.SUCCEEDED
    repo.update_step(
        session,
        run,
        step,
        status=status.value,
        completed_at=datetime.now(UTC),
        message=outcome.message,
        artifact_refs=refs,
        result=outcome.result,
    )
    repo.record_task_state(
        session,
        ctx.run_id,
        step,
        TaskStateName.FAILURE if failed else TaskStateName.SUCCESS,
        celery_task_id=task_id,
        message=outcome.message,
        artifact_refs=refs,
        attempt=started.attempt,
    )
    metrics.incr(f"steps.{step.value}.{'failed' if failed else 'succeeded'}")
    metrics.timing_ms(f"steps.{step.value}.duration", duration_s * 1000)
    if step == StepName.VERIFY:
        metrics.incr("verify.attempts", int(outcome.result.get("probe_attempts") or 0))
    if step == StepName.ROLLBACK:
        metrics.timing_ms("rollback.duration", duration_s * 1000)
        final = RunStatus.FAILED if failed else RunStatus.ROLLED_BACK
        reason = run.message or "a step failed"
        note = (
            f"{reason}; rollback failed: {outcome.message}" if failed else f"{reason}; rolled back"
        )
        _close(session, run, final, note, metrics)
        return None
    if not failed:
        nxt = NEXT_STEP.get(step)
        if nxt is not None and _stop_at_gate(session, run, nxt, outcome):
            return None
        if nxt is None:
            _skip_pending(session, run)
            _close(session, run, RunStatus.SUCCEEDED, outcome.message, metrics)
        return nxt
    assert isinstance(outcome, StepFailed)
    patched = any(
        s["name"] == StepName.PATCH.value and s["status"] == StepStatus.SUCCEEDED.value
        for s in run.action_plan.steps
    )
    if outcome.rollback and patched:
        run.message = outcome.message
        session.flush()
        return StepName.ROLLBACK
    _skip_pending(session, run)
    _close(session, run, RunStatus.FAILED, outcome.message, metrics)
    return None


def _stop_at_gate(session: Any, run: Any, nxt: StepName, outcome: StepResult | StepFailed) -> bool:
    """Park the run before a gated step unless a valid approval already covers it."""
    gate = policies.gate_from_context(run.action_plan.service_context)
    if gate is None or gate.step != nxt:
        return False
    diff_sha = outcome.result.get("diff_sha256") if nxt == StepName.BUILD else None
    if policies.approval_valid(run, now=policies.utcnow(), diff_sha256=diff_sha):
        return False
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
    session.info["gated"] = message
    return True


def _skip_pending(session: Any, run: Any) -> None:
    for state in list(run.action_plan.steps):
        if state["status"] == StepStatus.PENDING.value:
            repo.update_step(session, run, StepName(state["name"]), status=StepStatus.SKIPPED.value)


def _close(session: Any, run: Any, status: RunStatus, message: str, metrics: Metrics) -> None:
    repo.transition_run(session, run.id, expected=[RunStatus.RUNNING], new=status, message=message)
    metrics.incr(f"runs.status.{status.value}")
    queued = repo.as_utc(run.queued_at)
    if queued is not None:
        elapsed = (datetime.now(UTC) - queued).total_seconds()
        metrics.timing_ms(f"runs.duration.{status.value}", elapsed * 1000)
    session.info["closed"] = (status, message)


@contextmanager
def _heartbeat(run_id: uuid.UUID, every_s: float) -> Iterator[None]:
    """Keep the run's heartbeat fresh while a long step (a build) works."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                with _database().session() as session:
                    repo.touch_heartbeat(session, run_id)
            except Exception:  # a missed beat is only a missed beat
                log.debug("heartbeat for %s failed", run_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def execute_step(
    step: StepName, run_id: uuid.UUID, task_id: str | None, redelivered: bool = False
) -> None:
    claimed = _begin(step, run_id, task_id, redelivered)
    if claimed is None:
        return
    settings = get_settings()
    if isinstance(claimed, StepName):
        _enqueue_for(run_id, claimed, settings)
        return
    if isinstance(claimed, _Waiting):
        enqueue_step(
            app, settings, step, run_id, claimed.priority, task_id=task_id, countdown=WAIT_SECONDS
        )
        return
    _event(run_id, step.value, "step_started", celery_task_id=task_id)
    _metrics().incr(f"steps.{step.value}.started")
    began = time.monotonic()
    outcome: StepResult | StepFailed
    try:
        with _heartbeat(run_id, settings.heartbeat_seconds):
            outcome = STEP_FUNCTIONS[step](claimed.context)
    except StepFailed as exc:
        outcome = exc
    except Exception as exc:  # an adapter bug must still end the step with a reason
        log.exception("step %s of run %s crashed", step.value, run_id)
        outcome = StepFailed(f"{step.value} crashed: {type(exc).__name__}: {exc}")
    duration = time.monotonic() - began
    queued, closed, gated = _finish(step, claimed, task_id, outcome, duration)
    _event(
        run_id,
        step.value,
        "step_finished",
        outcome="failed" if isinstance(outcome, StepFailed) else "succeeded",
        message=outcome.message,
        duration_s=round(duration, 3),
    )
    if closed is not None:
        _event(run_id, "run", "run_finished", status=closed[0].value, message=closed[1])
    if gated is not None:
        _event(run_id, "run", "approval_required", message=gated)
    if queued is not None:
        enqueue_step(app, settings, queued[0], run_id, claimed.priority, task_id=queued[1])


def _enqueue_for(run_id: uuid.UUID, step: StepName, settings: Settings) -> None:
    """A finished step came again (its worker died before acking): make sure the next
    step is queued, unless it has already started."""
    with _database().session() as session:
        run = repo.get_run(session, run_id)
        pending = repo.latest_task_state(session, run_id, step)
        if run is None or pending is None or pending.state != TaskStateName.PENDING:
            return
        priority, task_id = run.priority, pending.celery_task_id
    enqueue_step(app, settings, step, run_id, priority, task_id=task_id)


def _register(step: StepName) -> Task:
    @app.task(name=TASK_NAMES[step], bind=True)
    def _step_task(self: Task, run_id: str) -> None:
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        execute_step(step, uuid.UUID(run_id), self.request.id, redelivered)

    return _step_task


STEP_TASKS = {step: _register(step) for step in StepName}


@app.task(name=TASK_HEARTBEAT)
def heartbeat(run_id: str) -> bool:
    """Mark a run as seen by a live worker; used by liveness checks and the sweeper."""
    with _database().session() as session:
        found = repo.touch_heartbeat(session, uuid.UUID(run_id))
    if not found:
        log.info("heartbeat for unknown run %s ignored", run_id)
    return found


def sweep_once() -> int:
    """Deliver again the steps that dead workers left behind; the number re-sent."""
    settings = get_settings()
    found = find_stale(_database(), stale_after_s=settings.stale_after_seconds)
    for item in found:
        if item.task_id is None:
            _event(item.run_id, item.step.value, "run_abandoned")
            continue
        _event(item.run_id, item.step.value, "step_redelivered", celery_task_id=item.task_id)
        enqueue_step(app, settings, item.step, item.run_id, item.priority, task_id=item.task_id)
    return sum(1 for item in found if item.task_id)


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    settings = get_settings()
    SweeperThread(sweep_once, settings.sweep_interval_seconds).start()
