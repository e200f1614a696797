"""A guessed package name on a protected service waits for an approval of its diff."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api_service.db.base import Database
from moonmind.config import Settings
from moonmind.workflows.orchestrator import policies, transitions
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName
from moonmind.workflows.orchestrator.metrics import Metrics
from moonmind.workflows.orchestrator.steps import StepResult
from tests.support.factories import create_run

NO_METRICS = Metrics("", 8125, "")
GUESS = {"package": "frobnicator", "why": "'frobnicator' is not in the known table"}

# settings and db: tests/unit/orchestrator/conftest.py (SQLite in tmp_path, migrated)


def _patched(
    db: Database, settings: Settings, result: dict[str, object], **kw: object
) -> tuple[uuid.UUID, str]:
    """A run whose analyze passed (and whose pre-run approval, if any, was given), then
    whose patch step recorded ``result``: what the transitions say next."""
    with db.session() as session:
        run = create_run(session, service=f"svc-{uuid.uuid4().hex[:6]}", **kw)  # type: ignore[arg-type]
        run_id = run.id
        expires = policies.utcnow() + timedelta(minutes=10)
        run.approval = {"expires_at": expires.isoformat(), "diff_sha256": None}
    task_id = "t-analyze"
    for step, outcome in ((StepName.ANALYZE, {}), (StepName.PATCH, result)):
        started = transitions.claim(db, settings, step, run_id, task_id)
        assert isinstance(started, transitions.Started)
        after = transitions.record(db, NO_METRICS, started, StepResult("ok", outcome), 0.1)
        task_id = after.queued.task_id if after.queued else ""
    if after.gated:
        return run_id, f"gated: {after.gated}"
    assert after.queued is not None
    return run_id, f"queued: {after.queued.step.value}"


PRE_RUN = {"protected": {"approval_requirement": "pre-run"}}


def test_a_guess_on_a_protected_service_waits_for_the_diff(
    db: Database, settings: Settings
) -> None:
    diff = "a" * 64
    run_id, said = _patched(db, settings, {"diff_sha256": diff, "guesses": [GUESS]}, **PRE_RUN)
    assert said.startswith(f"gated: awaiting approval of the diff {diff}")
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        assert run.status == RunStatus.AWAITING_APPROVAL


def test_without_a_guess_the_run_approval_covers_the_build(
    db: Database, settings: Settings
) -> None:
    _, said = _patched(db, settings, {"diff_sha256": "a" * 64, "guesses": []}, **PRE_RUN)
    assert said == "queued: build"


def test_an_unprotected_service_records_the_guess_and_goes_on(
    db: Database, settings: Settings
) -> None:
    _, said = _patched(db, settings, {"diff_sha256": "a" * 64, "guesses": [GUESS]})
    assert said == "queued: build"
