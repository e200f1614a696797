"""P4: GET /orchestrator/runs?limit=100 at 100,000 runs, on PostgreSQL and on SQLite."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api_service.db.base import Database, normalize_url
from api_service.db.migrate import upgrade
from bench.speed_report import Line, ms, pct, skipped
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus

RUNS = 100_000
POSTGRES_URL = os.environ.get(
    "MOONMIND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
GOAL_PG, GOAL_SQLITE = 0.025, 0.050


def _fill(db: Database, sqlite: bool) -> None:
    """RUNS runs over 50 services, one in 20 failed, through one plan row (FK only)."""
    from tests.support.factories import create_run

    with db.session() as session:
        first = create_run(session, service="svc0", queued_at=datetime(2026, 1, 1, tzinfo=UTC))
        plan = first.action_plan_id
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def when(n: int) -> object:
        at = start + timedelta(seconds=n)
        return at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at

    rows = [
        {
            "id": uuid.uuid4().hex if sqlite else uuid.uuid4(),
            "svc": f"svc{n % 50}",
            "status": "failed" if n % 20 == 0 else "succeeded",
            "plan": plan.hex if sqlite else plan,
            "at": when(n),
        }
        for n in range(1, RUNS)
    ]
    insert = text(
        "INSERT INTO orchestrator_runs (id, instruction, target_service, status, priority, "
        "action_plan_id, queued_at, metrics_snapshot, missing_artifacts, artifact_root) "
        "VALUES (:id, 'bench', :svc, :status, 'normal', :plan, :at, '{}', '[]', 'var')"
    )
    with db.session() as session:
        session.execute(insert, rows)
        session.execute(text("ANALYZE" if sqlite else "ANALYZE orchestrator_runs"))


def _p99(get: Callable[[dict[str, str]], httpx.Response], params: dict[str, str]) -> float:
    """Steady state: the first requests of a query shape (statement compilation, the
    server-side prepare after psycopg's fifth execution) are run first, not counted."""
    for _ in range(10):
        get(params)
    samples = []
    for _ in range(200):
        began = time.perf_counter()
        response = get(params)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
    return pct(samples, 99)


def _measure(url: str, label: str, goal: float, sqlite: bool) -> Line:
    from tests.support.processes import start_api

    upgrade(url)
    db = Database(url)
    _fill(db, sqlite)
    with db.session() as session:
        cursor = None
        for _ in range(499):  # page 500 via the cursor
            cursor = repo.list_runs(session, limit=100, cursor=cursor).next_cursor
    db.dispose()
    with tempfile.TemporaryDirectory(prefix="moonmind-bench-api-") as tmp:
        (Path(tmp) / "config.toml").write_text("")
        env = {"MOONMIND_DATABASE_URL": url, "MOONMIND_CONFIG": f"{tmp}/config.toml"}
        api, base = start_api(env, Path(tmp))
        try:
            with httpx.Client(base_url=base, timeout=30) as client:

                def get(params: dict[str, str]) -> httpx.Response:
                    return client.get("/orchestrator/runs", params={"limit": "100", **params})

                figures = {
                    "first page": _p99(get, {}),
                    "filtered (service)": _p99(get, {"service": "svc7"}),
                    "filtered (status)": _p99(get, {"status": RunStatus.FAILED.value}),
                    "page 500": _p99(get, {"cursor": cursor or ""}),
                }
        finally:
            api.stop()
    worst = max(figures.values())
    figure = " / ".join(ms(v) for v in figures.values())
    return Line(label, f"p99 {figure}", f"<= {ms(goal)} p99", worst <= goal, figures)


def bench_list_postgres() -> Line:
    label = "P4 list, 100k runs, PostgreSQL (first/svc/status/page500)"
    admin_url = normalize_url(POSTGRES_URL)
    name = f"moonmind_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no PostgreSQL here: say so, measure the rest
        return skipped(label, f"<= {ms(GOAL_PG)} p99", f"PostgreSQL: {type(exc).__name__}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        return _measure(url, label, GOAL_PG, sqlite=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench_list_sqlite() -> Line:
    label = "list, 100k runs, SQLite (first/svc/status/page500)"
    with tempfile.TemporaryDirectory(prefix="moonmind-bench-sqlite-") as tmp:
        return _measure(f"sqlite:///{tmp}/bench.db", label, GOAL_SQLITE, sqlite=True)
