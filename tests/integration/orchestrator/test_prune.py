"""Retention (issue 13, point 4): `moonmind orchestrator prune` and the worker's periodic
prune, on a private PostgreSQL database and on SQLite, with real artifact folders and
real rollback tags (on the busybox test image) in the real Docker engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from api_service.db.base import Database, normalize_url
from api_service.db.migrate import upgrade
from api_service.db.models import (
    ActionPlan,
    OrchestratorRun,
    RunArtifact,
    TaskState,
    WebhookDelivery,
)
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import (
    ArtifactType,
    RunStatus,
    StepName,
    TaskStateName,
)
from moonmind.workflows.orchestrator.steps.build import ROLLBACK_REPOSITORY, rollback_tag
from moonmind.workflows.orchestrator.storage import ArtifactStore
from tests.conftest import POSTGRES_URL
from tests.support.factories import add_artifact, create_run
from tests.support.processes import REPO_ROOT, start_worker

BASE_IMAGE = "moonmind/busybox:1"
NOW = datetime.now(UTC)
DAY = timedelta(days=1)

# label: (service a/b, status, days since it ended (or was queued, if not ended), tagged)
SEEDS: dict[str, tuple[str, RunStatus, int, bool]] = {
    "a_succeeded_40d": ("a", RunStatus.SUCCEEDED, 40, True),
    "a_failed_35d": ("a", RunStatus.FAILED, 35, True),
    "a_rolled_back_31d": ("a", RunStatus.ROLLED_BACK, 31, True),
    "a_succeeded_2d": ("a", RunStatus.SUCCEEDED, 2, True),
    "a_running_60d": ("a", RunStatus.RUNNING, 60, True),
    "a_awaiting_50d": ("a", RunStatus.AWAITING_APPROVAL, 50, False),
    "b_cancelled_45d": ("b", RunStatus.CANCELLED, 45, False),
    "b_succeeded_40d": ("b", RunStatus.SUCCEEDED, 40, True),
    "b_pending_90d": ("b", RunStatus.PENDING, 90, False),
}
OLD_ENDED = {"a_succeeded_40d", "a_failed_35d", "a_rolled_back_31d"} | {
    "b_cancelled_45d",
    "b_succeeded_40d",
}
NOT_ENDED = {"a_running_60d", "a_awaiting_50d", "b_pending_90d"}


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own: prune removes every old ended run it sees."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
        upgrade(url)
        yield url
        return
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"moonmind_prune_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(POSTGRES_URL)).set(database=name)
    try:
        upgrade(url.render_as_string(hide_password=False))
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Seeded:
    db: Database
    url: str
    artifact_root: Path
    ids: dict[str, uuid.UUID]
    services: dict[str, str]

    def repository(self, key: str) -> str:
        return f"{ROLLBACK_REPOSITORY}/p-{self.services[key]}"

    def ref(self, label: str) -> str:
        return f"{self.repository(label[0])}:{rollback_tag(self.ids[label])}"


def _seed_run(session: Session, label: str, service: str, store: ArtifactStore) -> uuid.UUID:
    _, status, days, _ = SEEDS[label]
    when = NOW - days * DAY
    ended = status in (
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.ROLLED_BACK,
        RunStatus.CANCELLED,
    )
    run = create_run(
        session,
        service=service,
        status=status,
        queued_at=when - timedelta(minutes=5),
        started_at=when - timedelta(minutes=4) if status != RunStatus.PENDING else None,
        completed_at=when if ended else None,
    )
    add_artifact(
        session,
        store,
        run,
        relpath="analyze.log",
        data=f"log of {label}\n".encode(),
        type=ArtifactType.ANALYZE_LOG,
        kind="analyze",
    )
    repo.record_task_state(
        session,
        run.id,
        StepName.ANALYZE,
        TaskStateName.SUCCESS,
        celery_task_id=f"t-{label}",
    )
    session.add(
        WebhookDelivery(run_id=run.id, event="run.succeeded", url="http://127.0.0.1:9/h", body="{}")
    )
    return run.id


@pytest.fixture
def seeded(database_url: str, tmp_path: Path) -> Iterator[Seeded]:
    db = Database(database_url)
    root = tmp_path / "artifacts"
    store = ArtifactStore(root)
    suffix = uuid.uuid4().hex[:8]
    services = {"a": f"app{suffix}", "b": f"web{suffix}"}
    ids: dict[str, uuid.UUID] = {}
    with db.session() as session:
        for label, (key, *_) in SEEDS.items():
            ids[label] = _seed_run(session, label, services[key], store)
    state = Seeded(db, database_url, root, ids, services)
    for label, (*_, tagged) in SEEDS.items():
        if tagged:
            _docker("tag", BASE_IMAGE, state.ref(label))
    try:
        yield state
    finally:
        for label in SEEDS:
            subprocess.run(["docker", "rmi", state.ref(label)], capture_output=True, check=False)
        db.dispose()


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _images(state: Seeded) -> list[str]:
    """`docker image ls` of the seeded rollback repositories."""
    lines: list[str] = []
    for key in ("a", "b"):
        fmt = "{{.Repository}}:{{.Tag}} {{.ID}}"
        lines += _docker("image", "ls", "--format", fmt, state.repository(key)).splitlines()
    return sorted(lines)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _rows(state: Seeded) -> dict[str, tuple[int, int, int, int]]:
    """Per seeded run: (run rows, task states, artifact rows, deliveries)."""
    found = {}
    with state.db.session() as session:
        for label, run_id in state.ids.items():
            counts = tuple(
                session.scalar(select(func.count()).select_from(model).where(column == run_id)) or 0
                for model, column in (
                    (OrchestratorRun, OrchestratorRun.id),
                    (TaskState, TaskState.run_id),
                    (RunArtifact, RunArtifact.run_id),
                    (WebhookDelivery, WebhookDelivery.run_id),
                )
            )
            found[label] = counts
    return found  # type: ignore[return-value]


def _prune(state: Seeded, *args: str) -> subprocess.CompletedProcess[str]:
    config = state.artifact_root.parent / "empty.toml"
    config.write_text("")
    env = {
        **os.environ,
        "MOONMIND_CONFIG": str(config),
        "MOONMIND_DATABASE_URL": state.url,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(state.artifact_root),
    }
    done = subprocess.run(
        [sys.executable, "-m", "moonmind.cli", "orchestrator", "prune", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _named(state: Seeded, output: str, verb: str) -> set[str]:
    """The seeded runs a prune's output says it removed (or would remove)."""
    lines = [line for line in output.splitlines() if line.startswith(f"{verb} run ")]
    return {
        label for label, run_id in state.ids.items() if any(str(run_id) in line for line in lines)
    }


def _gone(state: Seeded, labels: set[str], before: dict[str, tuple[int, int, int, int]]) -> None:
    """Exactly ``labels`` lost their rows, folders and tags; every other run kept all."""
    rows, files, images = _rows(state), _files(state.artifact_root), _images(state)
    for label in SEEDS:
        folder = f"{state.ids[label]}/analyze.log"
        if label in labels:
            assert rows[label] == (0, 0, 0, 0), label
            assert folder not in files, label
            assert not (state.artifact_root / str(state.ids[label])).exists(), label
            assert not any(line.startswith(state.ref(label) + " ") for line in images), label
        else:
            assert rows[label] == before[label] == (1, 1, 1, 1), label
            assert folder in files, label
            if SEEDS[label][3]:
                assert any(line.startswith(state.ref(label) + " ") for line in images), label


@pytest.mark.docker
def test_dry_run_names_the_old_ended_runs_and_removes_nothing(seeded: Seeded) -> None:
    rows, files, images = _rows(seeded), _files(seeded.artifact_root), _images(seeded)
    with seeded.db.session() as session:
        plans = session.scalar(select(func.count()).select_from(ActionPlan))
    done = _prune(seeded, "--older-than", "30d", "--dry-run")
    assert _named(seeded, done.stdout, "would remove") == OLD_ENDED
    assert "would remove 5 runs, 5 artifact folders, 4 rollback tags" in done.stdout
    assert "nothing was removed" in done.stdout
    assert _rows(seeded) == rows
    assert _files(seeded.artifact_root) == files
    assert _images(seeded) == images
    with seeded.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ActionPlan)) == plans


@pytest.mark.docker
def test_prune_removes_exactly_the_old_ended_runs(seeded: Seeded) -> None:
    before = _rows(seeded)
    assert len(_images(seeded)) == 6
    # --keep-last 2: service a keeps its two newest ended runs (2 and 31 days), b both of its.
    kept = _prune(seeded, "--older-than", "30d", "--keep-last", "2")
    first = {"a_failed_35d", "a_succeeded_40d"}
    assert _named(seeded, kept.stdout, "removed") == first
    assert "removed 2 runs, 2 artifact folders, 2 rollback tags" in kept.stdout
    _gone(seeded, first, before)

    done = _prune(seeded, "--older-than", "30d")
    assert _named(seeded, done.stdout, "removed") == OLD_ENDED - first
    _gone(seeded, OLD_ENDED, before)
    with seeded.db.session() as session:  # the pruned runs' plan snapshots went too
        assert session.scalar(select(func.count()).select_from(ActionPlan)) == len(SEEDS) - 5
    again = _prune(seeded, "--older-than", "30d")
    assert "removed 0 runs" in again.stdout
    assert _named(seeded, _prune(seeded, "--older-than", "1d").stdout, "removed") == {
        "a_succeeded_2d"
    }
    assert {label for label, counts in _rows(seeded).items() if counts[0]} == NOT_ENDED


@pytest.mark.docker
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_worker_prunes_on_its_own_when_asked(seeded: Seeded, tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('[orchestrator]\nprune_older_than = "30d"\nprune_interval = "1s"\n')
    worker = start_worker(
        {
            "MOONMIND_CONFIG": str(config),
            "MOONMIND_DATABASE_URL": seeded.url,
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_BROKER_FOLDER": str(tmp_path / "celery"),
            "ORCHESTRATOR_QUEUE": f"orchestrator.run.test-{uuid.uuid4().hex[:10]}",
            "ORCHESTRATOR_ARTIFACT_ROOT": str(seeded.artifact_root),
        },
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(_rows(seeded)[label][0] == 0 for label in OLD_ENDED):
                break
            time.sleep(0.5)
    finally:
        worker.stop()
    _gone(seeded, OLD_ENDED, dict.fromkeys(SEEDS, (1, 1, 1, 1)))
