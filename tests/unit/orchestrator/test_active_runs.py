"""Which runs hold a service: running or parked at a gate, of this compose project only.

Both questions the worker asks (who holds my service before I take it; which services of
the project others hold before a restart) are read from one query, on real SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from api_service.db.base import get_database
from api_service.db.migrate import upgrade
from api_service.db.models import OrchestratorRun
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName
from moonmind.workflows.orchestrator.plan import PlanStep
from tests.support.steps import service_context

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOBODY = uuid.uuid4()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    upgrade(url)
    with get_database(url).session() as session:
        yield session


def _run(
    session: Session, project: str, service: str, status: RunStatus, started_min: int = 0
) -> OrchestratorRun:
    run = repo.create_run(
        session,
        instruction="fix",
        target_service=service,
        steps=[PlanStep(name=StepName.ANALYZE)],
        service_context=service_context(Path("/srv/stack"), project=project, service=service),
        artifact_root="var/artifacts",
    )
    run.status = status
    run.started_at = T0 + timedelta(minutes=started_min)
    session.flush()
    return run


def test_running_and_parked_runs_of_the_project_hold_their_services(session: Session) -> None:
    running = _run(session, "p", "api", RunStatus.RUNNING)
    parked = _run(session, "p", "db", RunStatus.AWAITING_APPROVAL)
    _run(session, "p", "cache", RunStatus.PENDING)  # waits for its service: holds nothing
    _run(session, "p", "web", RunStatus.FAILED)
    _run(session, "q", "queue", RunStatus.RUNNING)  # another compose project
    assert repo.services_held_by_others(session, "p", exclude=NOBODY) == {"api", "db"}
    assert repo.services_held_by_others(session, "p", exclude=running.id) == {"db"}
    assert repo.services_held_by_others(session, "q", exclude=NOBODY) == {"queue"}
    assert {r.id for r in repo.active_runs(session, "p", exclude=NOBODY)} == {
        running.id,
        parked.id,
    }


def test_the_holder_of_a_service_is_the_earliest_started_of_that_project(
    session: Session,
) -> None:
    later = _run(session, "p", "api", RunStatus.RUNNING, started_min=5)
    first = _run(session, "p", "api", RunStatus.AWAITING_APPROVAL, started_min=1)
    other = _run(session, "q", "api", RunStatus.RUNNING, started_min=0)  # same name, not ours
    assert repo.active_run_for_service(session, "p", "api", exclude=NOBODY) is first
    assert repo.active_run_for_service(session, "p", "api", exclude=first.id) is later
    assert repo.active_run_for_service(session, "q", "api", exclude=NOBODY) is other
    assert repo.active_run_for_service(session, "q", "api", exclude=other.id) is None
    assert repo.active_run_for_service(session, "p", "db", exclude=NOBODY) is None
