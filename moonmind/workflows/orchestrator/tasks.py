"""The worker entry point: one Celery task per step, a thin shell over ``transitions``.

Each task claims its step in the database, runs the step function outside any
transaction (with a heartbeat), records the outcome, and only then publishes what comes
next. The database is the truth; Celery only delivers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from celery import Task
from celery.signals import worker_ready
from sqlalchemy.exc import InterfaceError, OperationalError

from api_service.db.base import Database, get_database
from moonmind.config import Settings, get_settings
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator import transitions
from moonmind.workflows.orchestrator.adapters.process import ChildScope, step_scope
from moonmind.workflows.orchestrator.cleanup import prune_rollback_tags
from moonmind.workflows.orchestrator.dispatch import TASK_NAMES, enqueue, producer
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.metrics import Metrics, metrics_from_settings
from moonmind.workflows.orchestrator.retention import periodic_prune
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepFailed, StepOutcome
from moonmind.workflows.orchestrator.sweeper import SweeperThread, database_answers, sweep_once
from moonmind.workflows.orchestrator.webhook_delivery import start_dispatcher

log = logging.getLogger("moonmind.orchestrator")

WAIT_SECONDS = 3.0  # how soon a step waiting for its service's lock is delivered again
CANCEL_POLL_SECONDS = 1.0  # how soon a running step notices that its run was cancelled
DATABASE_RETRY_SECONDS = 900.0  # how long a step waits for its database to come back
T = TypeVar("T")

app = producer(get_settings())


def _database() -> Database:
    return get_database(get_settings().database_url)


@lru_cache(maxsize=1)
def _metrics() -> Metrics:
    settings = get_settings()
    return metrics_from_settings(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)


@contextmanager
def _heartbeat(
    db: Database, run_id: uuid.UUID, every_s: float, children: ChildScope | None = None
) -> Iterator[None]:
    """Keep the run's heartbeat fresh while a long step (a build) works.

    With ``children``, also watch for a cancel of the run: its step's child processes
    (the build, the agent) are killed as soon as one is seen."""
    stop = threading.Event()

    def beat() -> None:
        last = time.monotonic()
        while not stop.wait(min(every_s, CANCEL_POLL_SECONDS)):
            try:
                with db.session() as session:
                    if children is not None and repo.cancel_requested(session, run_id):
                        children.stop()
                    if time.monotonic() - last >= every_s:
                        repo.touch_heartbeat(session, run_id)
                        last = time.monotonic()
            except Exception:  # a missed beat is only a missed beat
                log.debug("heartbeat for %s failed", run_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _run_step(step: StepName, started: transitions.Started, every_s: float) -> StepOutcome:
    """The step function's result, or the failure that ends it; never an exception."""
    if started.cancel_requested:
        return StepFailed("cancelled before it started")
    with step_scope() as children:
        watched = children if step != StepName.ROLLBACK else None  # a rollback is never cut
        outcome = _call_step(step, started, every_s, watched)
    if not children.stopped.is_set() or step == StepName.PATCH:
        return outcome  # a patch that went in stays recorded: the rollback takes it out
    return StepFailed(f"cancelled: {outcome.message}", result=outcome.result)


def _call_step(
    step: StepName, started: transitions.Started, every_s: float, children: ChildScope | None
) -> StepOutcome:
    try:
        with _heartbeat(_database(), started.context.run_id, every_s, children):
            return STEP_FUNCTIONS[step](started.context)
    except StepFailed as exc:
        return exc
    except Exception as exc:  # an adapter bug must still end the step with a reason
        log.exception("step %s of run %s crashed", step.value, started.context.run_id)
        return StepFailed(f"{step.value} crashed: {type(exc).__name__}: {exc}")


def _owner_gone(db: Database, run_id: uuid.UUID, seen: datetime, every_s: float) -> bool:
    """Watch a run's heartbeat for two beats: True if it did not move (its worker is gone)."""
    deadline = time.monotonic() + 2 * every_s + 1
    while time.monotonic() < deadline:
        time.sleep(min(0.5, every_s))
        beat = transitions.heartbeat_of(db, run_id)
        if beat is None or beat > seen:
            return False
    return True


def _until_database(what: str, call: Callable[[], T]) -> T:
    """Run one transaction, again and again while the database cannot be reached: an
    outage only delays a step (its outcome is recorded when the database is back)."""
    delay = 0.25
    deadline = time.monotonic() + DATABASE_RETRY_SECONDS
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unreachable (%s: %s); retrying", what, type(exc).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


Taken = transitions.Started | transitions.Waiting | transitions.AlreadyDone | None


def _claim(
    db: Database, settings: Settings, step: StepName, run_id: uuid.UUID, task_id: str | None
) -> Taken:
    """Claim; a message a live-looking worker already took is watched before taken over."""
    claimed = transitions.claim(db, settings, step, run_id, task_id)
    if not isinstance(claimed, transitions.Contested):
        return claimed
    if not _owner_gone(db, run_id, claimed.heartbeat, settings.heartbeat_seconds):
        log.warning("run %s: %s is running elsewhere; duplicate dropped", run_id, step.value)
        return None
    again = transitions.claim(db, settings, step, run_id, task_id, claimed.heartbeat)
    if isinstance(again, transitions.Contested):
        return None  # it moved again meanwhile: the other worker is alive after all
    return again


def execute_step(step: StepName, run_id: uuid.UUID, task_id: str | None) -> None:
    settings = get_settings()
    db = _database()
    claimed = _until_database("claim", lambda: _claim(db, settings, step, run_id, task_id))
    if isinstance(claimed, transitions.AlreadyDone):
        lost = transitions.queued_next(db, run_id, claimed.next_step)
        if lost is not None:
            enqueue(settings, lost)
        return
    if isinstance(claimed, transitions.Waiting):
        enqueue(settings, claimed.queued, countdown=WAIT_SECONDS)
        return
    if claimed is None:
        return
    log_event(run_id, step.value, "step_started", celery_task_id=task_id)
    _metrics().incr(f"steps.{step.value}.started")
    began = time.monotonic()
    outcome = _run_step(step, claimed, settings.heartbeat_seconds)
    duration = time.monotonic() - began
    started = claimed
    with _heartbeat(db, run_id, settings.heartbeat_seconds):  # alive while it waits to record
        after = _until_database(
            "record", lambda: transitions.record(db, _metrics(), started, outcome, duration)
        )
    if after.queued is not None:  # the next step goes out right after the commit
        enqueue(settings, after.queued)
    log_event(
        run_id,
        step.value,
        "step_finished",
        outcome="failed" if isinstance(outcome, StepFailed) else "succeeded",
        message=outcome.message,
        duration_s=round(duration, 3),
    )
    if after.closed is not None:
        log_event(
            run_id,
            "run",
            "run_finished",
            status=after.closed.status.value,
            message=after.closed.message,
        )
        prune_rollback_tags(db, settings.rollback_tags_keep, run_id)
    if after.gated is not None:
        log_event(run_id, "run", "approval_required", message=after.gated)


def _register(step: StepName) -> Task:
    @app.task(name=TASK_NAMES[step], bind=True)
    def _step_task(self: Task, run_id: str) -> None:
        execute_step(step, uuid.UUID(run_id), self.request.id)

    return _step_task


STEP_TASKS = {step: _register(step) for step in StepName}


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    settings = get_settings()
    SweeperThread(
        lambda: sweep_once(_database(), settings),
        settings.sweep_interval_seconds,
        grace_s=settings.stale_after_seconds,
        probe=lambda: database_answers(_database()),
    ).start()
    start_dispatcher(_database, settings)  # webhook deliveries, off the steps' path
    if settings.prune_older_than is not None:  # retention, every prune_interval
        SweeperThread(
            lambda: periodic_prune(_database(), settings), settings.prune_interval
        ).start()
