"""The step protocol in the database alone: claim, record, gate, close; no broker, no Docker."""

from __future__ import annotations

import uuid

import pytest

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import cancellation, transitions
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.cleanup import stale_tags
from moonmind.workflows.orchestrator.dispatch import QueuedStep
from moonmind.workflows.orchestrator.enums import RunStatus, StepName, StepStatus, TaskStateName
from moonmind.workflows.orchestrator.errors import CancelConflict
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.plan import Plan
from moonmind.workflows.orchestrator.steps import StepFailed, StepResult
from tests.support.factories import create_run

NO_METRICS = Metrics("", 8125, "")


def _pending_run(db: Database, **kwargs: object) -> uuid.UUID:
    with db.session() as session:
        return create_run(session, service=f"svc-{uuid.uuid4().hex[:6]}", **kwargs).id  # type: ignore[arg-type]


def _queued_id(db: Database, run_id: uuid.UUID, step: StepName) -> str:
    """The task id the step's message carries: the one its PENDING row names (claims
    compare it), or a fresh one for a step nothing has queued yet."""
    with db.session() as session:
        row = repo.latest_task_state(session, run_id, step)
        if row is not None and row.state == TaskStateName.PENDING and row.celery_task_id:
            return row.celery_task_id
    return f"t-{step.value}-{uuid.uuid4().hex[:6]}"


def _plan(db: Database, run_id: uuid.UUID) -> tuple[RunStatus, Plan, str | None]:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        return run.status, Plan.of(run.action_plan), run.message


def test_claim_runs_a_pending_run_and_a_second_delivery_is_dropped(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db)
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1")
    assert isinstance(started, transitions.Started)
    assert started.attempt == 1
    assert started.context.plan.step(StepName.ANALYZE).status == StepStatus.IN_PROGRESS
    status, plan, _ = _plan(db, run_id)
    assert status == RunStatus.RUNNING
    assert plan.step(StepName.ANALYZE).celery_task_id == "task-1"
    # The same message again while the heartbeat is fresh: contested, not run. The broker's
    # redelivered flag is not asked: only a heartbeat that did not move gives the step away.
    contested = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1")
    assert isinstance(contested, transitions.Contested)
    # Another message for a step already taken is a duplicate, whatever the heartbeat says.
    assert transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-other") is None
    # Watched and found still: the first worker is gone; attempt 2 takes over, once.
    again = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1", contested.heartbeat)
    assert isinstance(again, transitions.Started)
    assert again.attempt == 2
    late = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1", contested.heartbeat)
    assert isinstance(late, transitions.Contested)  # attempt 2's heartbeat is newer


def test_success_queues_the_next_step_and_records_it_pending(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db)
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1")
    assert isinstance(started, transitions.Started)
    after = transitions.record(db, NO_METRICS, started, StepResult("fine", {"x": 1}), 0.5)
    assert after.closed is None
    assert after.gated is None
    assert after.queued is not None
    assert after.queued.step == StepName.PATCH
    _, plan, _ = _plan(db, run_id)
    assert plan.step(StepName.ANALYZE).status == StepStatus.SUCCEEDED
    assert plan.result(StepName.ANALYZE) == {"x": 1}
    with db.session() as session:
        row = repo.latest_task_state(session, run_id, StepName.PATCH)
        assert row is not None
        assert row.state == TaskStateName.PENDING
        assert row.celery_task_id == after.queued.task_id
    # The same analyze delivered again is already done: its successor may have been lost.
    done = transitions.claim(db, settings, StepName.ANALYZE, run_id, "task-1")
    assert done == transitions.AlreadyDone(StepName.PATCH)
    assert transitions.queued_next(db, run_id, StepName.PATCH) == after.queued


def test_failure_before_a_patch_closes_the_run_and_skips_the_rest(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db)
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, "t")
    assert isinstance(started, transitions.Started)
    after = transitions.record(db, NO_METRICS, started, StepFailed("engine down"), 0.1)
    assert after.closed == transitions.Closed(RunStatus.FAILED, "engine down")
    status, plan, _ = _plan(db, run_id)
    assert status == RunStatus.FAILED
    assert [s.status for s in plan.steps][1:] == [StepStatus.SKIPPED] * 4


def test_failure_after_a_patch_queues_the_rollback(db: Database, settings: Settings) -> None:
    run_id = _pending_run(db, steps=list(StepName))
    for step in (StepName.ANALYZE, StepName.PATCH):
        started = transitions.claim(db, settings, step, run_id, _queued_id(db, run_id, step))
        assert isinstance(started, transitions.Started)
        transitions.record(db, NO_METRICS, started, StepResult("ok"), 0.1)
    started = transitions.claim(
        db, settings, StepName.BUILD, run_id, _queued_id(db, run_id, StepName.BUILD)
    )
    assert isinstance(started, transitions.Started)
    after = transitions.record(db, NO_METRICS, started, StepFailed("build broke"), 0.1)
    assert after.queued is not None
    assert after.queued.step == StepName.ROLLBACK
    status, _, message = _plan(db, run_id)
    assert status == RunStatus.RUNNING
    assert message == "build broke"
    started = transitions.claim(db, settings, StepName.ROLLBACK, run_id, after.queued.task_id)
    assert isinstance(started, transitions.Started)
    closed = transitions.record(db, NO_METRICS, started, StepResult("restored"), 0.1)
    assert closed.closed == transitions.Closed(RunStatus.ROLLED_BACK, "build broke; rolled back")


def test_a_protected_service_stops_at_its_gate(db: Database, settings: Settings) -> None:
    run_id = _pending_run(db, protected={"approval_requirement": "pre-run"})
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, "t")
    assert isinstance(started, transitions.Started)
    after = transitions.record(db, NO_METRICS, started, StepResult("ok"), 0.1)
    assert after.queued is None
    assert after.gated is not None
    assert "awaiting approval of this run" in after.gated
    status, _, _ = _plan(db, run_id)
    assert status == RunStatus.AWAITING_APPROVAL


def test_a_second_run_for_the_same_service_waits_for_the_holder(
    db: Database, settings: Settings
) -> None:
    with db.session() as session:
        first = create_run(session, service="shared").id
        second = create_run(session, service="shared").id
    assert isinstance(
        transitions.claim(db, settings, StepName.ANALYZE, first, "a"), transitions.Started
    )
    waiting = transitions.claim(db, settings, StepName.ANALYZE, second, "b")
    assert isinstance(waiting, transitions.Waiting)
    assert waiting.holder == first
    assert waiting.queued.task_id == "b"
    status, _, message = _plan(db, second)
    assert status == RunStatus.PENDING
    assert message == f"waiting for run {first}, which holds shared"


def test_a_plan_that_ends_early_closes_the_run_after_its_last_step(
    db: Database, settings: Settings
) -> None:
    """A plan of analyze alone (what a diagnosis-only run stores) ends after analyze."""
    run_id = _pending_run(db, steps=[StepName.ANALYZE])
    started = transitions.claim(db, settings, StepName.ANALYZE, run_id, "t")
    assert isinstance(started, transitions.Started)
    after = transitions.record(db, NO_METRICS, started, StepResult("diagnosed"), 0.1)
    assert after.queued is None
    assert after.closed == transitions.Closed(RunStatus.SUCCEEDED, "diagnosed")


# ---------------------------------------------------------------------- cancelling


def _cancel(db: Database, run_id: uuid.UUID) -> QueuedStep | None:
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        assert run is not None
        return cancellation.request_cancel(session, run, by="alice")


def _run_through(db: Database, settings: Settings, run_id: uuid.UUID, *steps: StepName) -> None:
    for step in steps:
        started = transitions.claim(db, settings, step, run_id, _queued_id(db, run_id, step))
        assert isinstance(started, transitions.Started)
        transitions.record(db, NO_METRICS, started, StepResult("ok"), 0.1)


def test_a_pending_run_is_cancelled_at_once_and_its_queued_step_is_dropped(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db)
    assert _cancel(db, run_id) is None
    status, plan, message = _plan(db, run_id)
    assert status == RunStatus.CANCELLED
    assert message == "cancelled while pending; nothing had been changed"
    assert {s.status for s in plan.steps} == {StepStatus.SKIPPED}
    assert transitions.claim(db, settings, StepName.ANALYZE, run_id, "late") is None
    with pytest.raises(CancelConflict):
        _cancel(db, run_id)


def test_a_run_parked_at_its_gate_after_the_patch_rolls_back_then_ends_cancelled(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(
        db, steps=list(StepName), protected={"approval_requirement": "pre-verify"}
    )
    _run_through(db, settings, run_id, StepName.ANALYZE, StepName.PATCH)
    assert _plan(db, run_id)[0] == RunStatus.AWAITING_APPROVAL
    queued = _cancel(db, run_id)
    assert queued is not None
    assert queued.step == StepName.ROLLBACK
    assert _plan(db, run_id)[0] == RunStatus.RUNNING
    started = transitions.claim(db, settings, StepName.ROLLBACK, run_id, queued.task_id)
    assert isinstance(started, transitions.Started)
    assert not started.cancel_requested  # the rollback itself always runs
    after = transitions.record(db, NO_METRICS, started, StepResult("restored 1 file(s)"), 0.1)
    assert after.closed == transitions.Closed(
        RunStatus.CANCELLED,
        "cancelled while awaiting_approval; rolling back the patch; restored 1 file(s)",
    )


def test_a_running_run_cancelled_during_build_rolls_back_and_ends_cancelled(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db, steps=list(StepName))
    _run_through(db, settings, run_id, StepName.ANALYZE, StepName.PATCH)
    build = transitions.claim(
        db, settings, StepName.BUILD, run_id, _queued_id(db, run_id, StepName.BUILD)
    )
    assert isinstance(build, transitions.Started)
    assert _cancel(db, run_id) is None  # running: the worker stops it
    assert _plan(db, run_id)[0] == RunStatus.RUNNING
    with db.session() as session:
        assert repo.cancel_requested(session, run_id)
    after = transitions.record(db, NO_METRICS, build, StepFailed("cancelled"), 0.1)
    assert after.queued is not None
    assert after.queued.step == StepName.ROLLBACK
    rollback = transitions.claim(db, settings, StepName.ROLLBACK, run_id, after.queued.task_id)
    assert isinstance(rollback, transitions.Started)
    closed = transitions.record(db, NO_METRICS, rollback, StepResult("restored"), 0.1)
    assert closed.closed == transitions.Closed(
        RunStatus.CANCELLED, "cancelled during build; restored"
    )


def test_a_running_run_cancelled_before_its_patch_ends_cancelled_without_rollback(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db, steps=list(StepName))
    analyze = transitions.claim(db, settings, StepName.ANALYZE, run_id, "t")
    assert isinstance(analyze, transitions.Started)
    _cancel(db, run_id)
    after = transitions.record(db, NO_METRICS, analyze, StepResult("diagnosed"), 0.1)
    assert after.queued is None
    assert after.closed == transitions.Closed(
        RunStatus.CANCELLED, "cancelled during analyze; nothing had been changed"
    )


def test_a_step_delivered_after_the_cancel_is_claimed_as_cancelled(
    db: Database, settings: Settings
) -> None:
    run_id = _pending_run(db, steps=list(StepName))
    _run_through(db, settings, run_id, StepName.ANALYZE)
    _cancel(db, run_id)
    patch = transitions.claim(
        db, settings, StepName.PATCH, run_id, _queued_id(db, run_id, StepName.PATCH)
    )
    assert isinstance(patch, transitions.Started)
    assert patch.cancel_requested


def test_an_unverified_rollback_fails_the_run(db: Database, settings: Settings) -> None:
    run_id = _pending_run(db, steps=list(StepName))
    _run_through(db, settings, run_id, StepName.ANALYZE, StepName.PATCH)
    build = transitions.claim(
        db, settings, StepName.BUILD, run_id, _queued_id(db, run_id, StepName.BUILD)
    )
    assert isinstance(build, transitions.Started)
    after = transitions.record(db, NO_METRICS, build, StepFailed("build broke"), 0.1)
    assert after.queued is not None
    rollback = transitions.claim(db, settings, StepName.ROLLBACK, run_id, after.queued.task_id)
    assert isinstance(rollback, transitions.Started)
    unverified = StepFailed("rollback_unverified: app is not healthy", rollback=False)
    closed = transitions.record(db, NO_METRICS, rollback, unverified, 0.1)
    assert closed.closed == transitions.Closed(
        RunStatus.FAILED, "build broke; rollback_unverified: app is not healthy"
    )


def test_only_the_newest_rollback_tags_of_ended_runs_are_stale() -> None:
    runs = [("new", True), ("active", False), ("mid", True), ("old", True), ("older", True)]
    existing = {"new", "active", "mid", "old", "older", "not-ours"}
    assert stale_tags(runs, existing, keep=3) == ["old", "older"]
    assert stale_tags(runs, existing - {"new"}, keep=1) == ["mid", "old", "older"]
    assert stale_tags(runs, {"older"}, keep=1) == []
