"""Nothing stays stuck: the sweeper and the claim's compare-and-set, in the database alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator import sweeper, transitions
from moonmind.workflows.orchestrator.enums import (
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.plan import Plan
from moonmind.workflows.orchestrator.steps import StepFailed, StepResult
from tests.support.factories import create_run

NO_METRICS = Metrics("", 8125, "")
LATER = datetime.now(UTC) + timedelta(hours=1)  # every heartbeat is stale by then


def _queued(db: Database, service: str, **kwargs: object) -> tuple[uuid.UUID, str]:
    """A submitted run: its row and its first step recorded PENDING under a task id."""
    task_id = f"first-{uuid.uuid4().hex[:8]}"
    with db.session() as session:
        run = create_run(session, service=service, steps=list(StepName), **kwargs)  # type: ignore[arg-type]
        repo.record_task_state(
            session, run.id, StepName.ANALYZE, TaskStateName.PENDING, celery_task_id=task_id
        )
        return run.id, task_id


def _pending_id(db: Database, run_id: uuid.UUID, step: StepName) -> str:
    with db.session() as session:
        row = repo.latest_task_state(session, run_id, step)
        assert row is not None
        assert row.state == TaskStateName.PENDING, row
        assert row.celery_task_id is not None
        return row.celery_task_id


def _step(
    db: Database, settings: Settings, run_id: uuid.UUID, step: StepName, outcome: object = None
) -> transitions.Recorded:
    started = transitions.claim(db, settings, step, run_id, _pending_id(db, run_id, step))
    assert isinstance(started, transitions.Started), started
    result = outcome if outcome is not None else StepResult("ok")
    return transitions.record(db, NO_METRICS, started, result, 0.1)  # type: ignore[arg-type]


def _run(db: Database, run_id: uuid.UUID) -> tuple[RunStatus, Plan, str | None, list[dict]]:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        audit = list((run.metrics_snapshot or {}).get("audit", []))
        return run.status, Plan.of(run.action_plan), run.message, audit


def test_a_pending_run_whose_message_is_gone_is_sent_again_with_its_reason(
    db: Database, settings: Settings
) -> None:
    run_id, first_id = _queued(db, "lost")
    found = sweeper.find_stale(db, stale_after_s=60, now=LATER)
    assert [(f.run_id, f.step) for f in found] == [(run_id, StepName.ANALYZE)]
    assert "pending with no live message" in found[0].reason
    _, _, _, audit = _run(db, run_id)
    assert audit[-1]["action"] == "recovered"
    assert audit[-1]["reason"] == found[0].reason
    # The re-sent message carries a new id: the old one, should it still arrive, is dropped.
    assert found[0].task_id != first_id
    assert transitions.claim(db, settings, StepName.ANALYZE, run_id, first_id) is None
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, found[0].task_id)
    assert isinstance(started, transitions.Started)
    # Touched: an immediate second sweep leaves it alone.
    assert sweeper.find_stale(db, stale_after_s=60) == []


def test_a_pending_run_waiting_for_a_holder_is_left_alone_until_the_holder_ends(
    db: Database, settings: Settings
) -> None:
    holder, _ = _queued(db, "shared")
    waiter, _ = _queued(db, "shared")
    _step(db, settings, holder, StepName.ANALYZE)
    waiting = transitions.claim(
        db, settings, StepName.ANALYZE, waiter, _pending_id(db, waiter, StepName.ANALYZE)
    )
    assert isinstance(waiting, transitions.Waiting)
    # The holder is running: the waiter is not recovered (its holder is, if it is stale).
    found = sweeper.find_stale(db, stale_after_s=60, now=LATER)
    assert [f.run_id for f in found] == [holder]
    # The holder ends; the waiter's delayed message was lost: now the waiter is recovered.
    for step in (StepName.PATCH, StepName.BUILD, StepName.RESTART, StepName.VERIFY):
        _step(db, settings, holder, step)
    assert _run(db, holder)[0] == RunStatus.SUCCEEDED
    found = sweeper.find_stale(db, stale_after_s=60, now=LATER + timedelta(hours=1))
    assert [(f.run_id, f.step) for f in found] == [(waiter, StepName.ANALYZE)]


def test_a_lost_rollback_is_sent_again_as_a_rollback(db: Database, settings: Settings) -> None:
    run_id, _ = _queued(db, "rb")
    _step(db, settings, run_id, StepName.ANALYZE)
    _step(db, settings, run_id, StepName.PATCH)
    after = _step(db, settings, run_id, StepName.BUILD, StepFailed("build broke"))
    assert after.queued is not None
    assert after.queued.step == StepName.ROLLBACK
    # The rollback message is lost: the sweeper sends a rollback, not the plan's `restart`.
    found = sweeper.find_stale(db, stale_after_s=60, now=LATER)
    assert [f.step for f in found] == [StepName.ROLLBACK]
    assert "never arrived" in found[0].reason


def test_a_duplicate_delivery_of_a_failed_step_does_not_run_it_again(
    db: Database, settings: Settings
) -> None:
    run_id, _ = _queued(db, "dup")
    _step(db, settings, run_id, StepName.ANALYZE)
    _step(db, settings, run_id, StepName.PATCH)
    build_id = _pending_id(db, run_id, StepName.BUILD)
    _step(db, settings, run_id, StepName.BUILD, StepFailed("build broke"))
    assert transitions.claim(db, settings, StepName.BUILD, run_id, build_id) is None
    with db.session() as session:
        rows = [r for r in repo.list_task_states(session, run_id) if r.plan_step == "build"]
    assert [(r.attempt, r.state) for r in rows] == [(1, TaskStateName.FAILURE)]


def test_a_run_that_exhausts_its_attempts_after_a_patch_is_rolled_back(
    db: Database, settings: Settings
) -> None:
    run_id, _ = _queued(db, "exhaust")
    _step(db, settings, run_id, StepName.ANALYZE)
    _step(db, settings, run_id, StepName.PATCH)
    now = LATER
    for attempt in (1, 2, 3):
        task_id = _pending_id(db, run_id, StepName.BUILD)
        started = transitions.claim(db, settings, StepName.BUILD, run_id, task_id)
        assert isinstance(started, transitions.Started)
        assert started.attempt == attempt
        now += timedelta(hours=1)
        found = sweeper.find_stale(db, stale_after_s=60, now=now)
        assert len(found) == 1
    status, plan, message, audit = _run(db, run_id)
    assert found[0].step == StepName.ROLLBACK
    assert status == RunStatus.RUNNING  # not just marked failed: its rollback is queued
    assert plan.step(StepName.BUILD).status == StepStatus.FAILED
    assert message == "build was lost 3 times with its worker; giving up"
    assert audit[-1]["plan_step"] == "rollback"
    rollback = transitions.claim(db, settings, StepName.ROLLBACK, run_id, found[0].task_id)
    assert isinstance(rollback, transitions.Started)
    closed = transitions.record(db, NO_METRICS, rollback, StepResult("restored"), 0.1)
    assert closed.closed is not None
    assert closed.closed.status == RunStatus.ROLLED_BACK


def test_runs_of_one_service_start_in_submission_order_within_a_priority(
    db: Database, settings: Settings
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    first, _ = _queued(db, "line", queued_at=base)
    second, _ = _queued(db, "line", queued_at=base + timedelta(seconds=1))
    urgent, _ = _queued(db, "line", queued_at=base + timedelta(seconds=2), priority=Priority.HIGH)
    # The second run's message arrives first: it waits behind the run ahead of it.
    for run_id in (second, first):
        waiting = transitions.claim(
            db, settings, StepName.ANALYZE, run_id, _pending_id(db, run_id, StepName.ANALYZE)
        )
        assert isinstance(waiting, transitions.Waiting)
        assert waiting.holder == urgent  # a high-priority run goes before both
    order: list[uuid.UUID] = []
    for run_id in (urgent, second, first, second):
        if run_id in order:
            continue
        got = transitions.claim(
            db, settings, StepName.ANALYZE, run_id, _pending_id(db, run_id, StepName.ANALYZE)
        )
        if isinstance(got, transitions.Started):
            order.append(run_id)
            transitions.record(db, NO_METRICS, got, StepFailed("no patch derived"), 0.1)
    assert order == [urgent, first, second]


def test_after_a_failed_sweep_the_sweeper_waits_for_the_database_then_a_grace() -> None:
    """No heartbeat could be written while the database was away: sweeping right after it
    returns would take every live step for dead."""
    import threading
    import time

    calls: list[str] = []
    database_up = threading.Event()

    def sweep() -> None:
        calls.append("sweep")
        if not database_up.is_set():
            raise ConnectionError("database down")

    def probe() -> None:
        calls.append("probe")
        if not database_up.is_set():
            raise ConnectionError("database down")

    thread = sweeper.SweeperThread(sweep, 0.01, grace_s=0.3, probe=probe)
    thread.start()
    try:
        time.sleep(0.1)
        assert calls[0] == "sweep"
        assert set(calls[1:]) == {"probe"}  # blind: only probing
        database_up.set()
        back = time.monotonic()
        while "sweep" not in calls[1:]:
            time.sleep(0.01)
        assert time.monotonic() - back >= 0.3
    finally:
        thread.stop()
        thread.join()


def test_a_step_queued_again_under_a_reused_attempt_number_is_claimed(
    db: Database, settings: Settings
) -> None:
    """A build that was taken over once (attempts 1 lost, 2 done) and is queued again, as
    an approval or a retry does, under attempt 1: its message is the one expected."""
    run_id, _ = _queued(db, "again")
    _step(db, settings, run_id, StepName.ANALYZE)
    _step(db, settings, run_id, StepName.PATCH)
    build_id = _pending_id(db, run_id, StepName.BUILD)
    first = transitions.claim(db, settings, StepName.BUILD, run_id, build_id)
    assert isinstance(first, transitions.Started)
    taken = transitions.claim(db, settings, StepName.BUILD, run_id, build_id, LATER)
    assert isinstance(taken, transitions.Started)
    assert taken.attempt == 2
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        repo.update_step(session, run, StepName.BUILD, status=StepStatus.PENDING)
        repo.record_task_state(
            session, run_id, StepName.BUILD, TaskStateName.PENDING, celery_task_id="again-1"
        )
    again = transitions.claim(db, settings, StepName.BUILD, run_id, "again-1")
    assert isinstance(again, transitions.Started)
    assert again.attempt == 3
