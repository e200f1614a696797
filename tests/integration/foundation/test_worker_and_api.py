"""Real worker and API processes against real brokers and databases (no eager mode)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from api_service.db import migrate
from api_service.db.base import Database
from moonmind.config import load_settings
from moonmind.workflows.orchestrator import repositories
from moonmind.workflows.orchestrator.dispatch import TASK_NAMES, QueuedStep, enqueue
from moonmind.workflows.orchestrator.enums import Priority, StepName, TaskStateName
from tests.support.factories import create_run
from tests.support.processes import start_api, start_worker

ANALYZE_TASK = TASK_NAMES[StepName.ANALYZE]


def _create_run(db: Database) -> uuid.UUID:
    with db.session() as session:
        return create_run(session, service=f"liveness-{uuid.uuid4().hex[:6]}").id


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _analyze_recorded(db: Database, run_id: uuid.UUID) -> bool:
    """The worker took the step and wrote its outcome (whatever it was) to the database."""
    with db.session() as session:
        row = repositories.latest_task_state(session, run_id, StepName.ANALYZE)
        return row is not None and row.state in (TaskStateName.SUCCESS, TaskStateName.FAILURE)


def _round_trip(
    env: dict[str, str], cwd: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _create_run(db)
    worker = start_worker(env, cwd)
    try:
        # The producer sees exactly the settings the worker sees.
        monkeypatch.chdir(cwd)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        enqueue(load_settings(), QueuedStep(run_id, StepName.ANALYZE, Priority.NORMAL, "liveness"))
        assert _wait_for(lambda: _analyze_recorded(db, run_id), timeout=60), worker.output()
        assert f"Task {ANALYZE_TASK}" in worker.output()
    finally:
        worker.stop()


def test_task_through_rabbitmq_lands_in_postgres(
    migrated_postgres: str,
    amqp_url: str,
    amqp_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "config.toml").write_text("")
    env = {
        "MOONMIND_CONFIG": str(tmp_path / "config.toml"),
        "MOONMIND_DATABASE_URL": migrated_postgres,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": amqp_queue,
    }
    db = Database(migrated_postgres)
    try:
        _round_trip(env, tmp_path, db, monkeypatch)
    finally:
        db.dispose()


def test_embedded_default_sqlite_and_local_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No settings at all: SQLite and the filesystem transport under ./var."""
    (tmp_path / "config.toml").write_text("")
    db_url = f"sqlite:///{tmp_path / 'var' / 'orchestrator.db'}"
    migrate.upgrade(db_url)
    db = Database(db_url)
    env = {"MOONMIND_CONFIG": str(tmp_path / "config.toml")}
    try:
        _round_trip(env, tmp_path, db, monkeypatch)
        assert (tmp_path / "var" / "celery" / "queue").is_dir()
    finally:
        db.dispose()


def test_api_serves_docs_and_empty_run_list(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    env = {"MOONMIND_CONFIG": str(tmp_path / "config.toml")}
    api, base = start_api(env, tmp_path)
    try:
        assert "listening on http://127.0.0.1:" in api.output()
        assert _fast_http(api.popen.pid)
        docs = httpx.get(f"{base}/docs", timeout=10)
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        runs = httpx.get(f"{base}/orchestrator/runs", timeout=10)
        assert runs.status_code == 200
        assert runs.json() == {"runs": []}
    finally:
        api.stop()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _serving(pid: int) -> list[int]:
    """The API processes under the supervisor ``pid`` (spawned children; uvicorn's
    resource tracker is a child too, but never serves)."""
    return [child for child in _children(pid) if "spawn_main" in _cmdline(child)]


def _fast_http(pid: int) -> bool:
    """The process serves on uvloop and httptools (their compiled modules are mapped),
    not on asyncio's loop and h11 (issue 9: P5)."""
    maps = (Path("/proc") / str(pid) / "maps").read_text()
    return "uvloop" in maps and "httptools" in maps


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_api_serves_from_as_many_processes_as_asked(
    migrated_postgres: str, tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text("")
    env = {
        "MOONMIND_CONFIG": str(tmp_path / "config.toml"),
        "MOONMIND_DATABASE_URL": migrated_postgres,
    }
    api, base = start_api(env, tmp_path, "--workers", "2")
    try:
        assert "2 processes)" in api.output()
        assert _wait_for(lambda: len(_serving(api.popen.pid)) == 2, timeout=30), _children(
            api.popen.pid
        )
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(20):
                assert http.get("/orchestrator/runs").status_code == 200
        workers = _serving(api.popen.pid)
        assert all(_fast_http(pid) for pid in workers)
    finally:
        api.stop()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # none left behind
