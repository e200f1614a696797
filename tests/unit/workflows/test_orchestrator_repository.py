"""repositories.list_runs against real PostgreSQL: filters, order, limit and keyset cursors.

Each test runs inside one outer transaction that is rolled back afterwards, and uses its
own service name, so it neither leaves rows behind nor sees rows of other tests.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from api_service.db.base import make_engine
from api_service.db.models import OrchestratorRun
from api_service.main import create_app
from moonmind.config import load_settings
from moonmind.workflows.orchestrator import repositories
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.errors import InvalidCursor
from tests.support.factories import create_run

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(migrated_postgres: str) -> Iterator[Engine]:
    engine = make_engine(migrated_postgres)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose every write disappears with the outer transaction's rollback."""
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def service() -> str:
    return f"repo-{uuid.uuid4().hex[:10]}"


def make_runs(
    session: Session,
    service: str,
    count: int,
    *,
    start: datetime = T0,
    step: timedelta = timedelta(seconds=1),
    status: RunStatus = RunStatus.PENDING,
) -> list[OrchestratorRun]:
    """`count` runs queued `step` apart from `start`, oldest first."""
    return [
        create_run(session, service=service, status=status, queued_at=start + step * index)
        for index in range(count)
    ]


def walk(
    session: Session, *, service: str, limit: int, status: RunStatus | None = None
) -> list[list[uuid.UUID]]:
    """Every page of a listing, following next_cursor to the end."""
    pages: list[list[uuid.UUID]] = []
    cursor: str | None = None
    while True:
        page = repositories.list_runs(
            session, service=service, status=status, limit=limit, cursor=cursor
        )
        pages.append([run.id for run in page.runs])
        if page.next_cursor is None:
            return pages
        assert len(pages) < 100, "cursor does not advance"
        cursor = page.next_cursor


def ids(runs: list[OrchestratorRun]) -> list[uuid.UUID]:
    return [run.id for run in runs]


def cursor_of(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


class TestListRuns:
    def test_newest_first(self, session: Session, service: str) -> None:
        runs = make_runs(session, service, 4)
        page = repositories.list_runs(session, service=service)
        assert ids(page.runs) == ids(runs)[::-1]
        assert page.next_cursor is None

    def test_filters_by_service(self, session: Session, service: str) -> None:
        mine = make_runs(session, service, 2)
        make_runs(session, f"{service}-other", 3)
        page = repositories.list_runs(session, service=service)
        assert set(ids(page.runs)) == set(ids(mine))

    def test_filters_by_status_and_service(self, session: Session, service: str) -> None:
        failed = make_runs(session, service, 2, status=RunStatus.FAILED)
        make_runs(session, service, 2, start=T0 + timedelta(hours=1), status=RunStatus.SUCCEEDED)
        make_runs(session, f"{service}-other", 2, status=RunStatus.FAILED)
        page = repositories.list_runs(session, service=service, status=RunStatus.FAILED)
        assert ids(page.runs) == ids(failed)[::-1]

    def test_status_without_matches_is_empty(self, session: Session, service: str) -> None:
        make_runs(session, service, 2)
        page = repositories.list_runs(session, service=service, status=RunStatus.ROLLED_BACK)
        assert page.runs == []
        assert page.next_cursor is None

    def test_limit_caps_the_page_and_offers_a_cursor(self, session: Session, service: str) -> None:
        runs = make_runs(session, service, 5)
        page = repositories.list_runs(session, service=service, limit=3)
        assert ids(page.runs) == ids(runs)[::-1][:3]
        assert page.next_cursor is not None

    def test_exactly_full_page_has_no_cursor(self, session: Session, service: str) -> None:
        make_runs(session, service, 3)
        page = repositories.list_runs(session, service=service, limit=3)
        assert len(page.runs) == 3
        assert page.next_cursor is None


class TestCursorPagination:
    @pytest.mark.parametrize("limit", [1, 2, 5, 7, 23, 24])
    def test_pages_visit_every_run_exactly_once(
        self, session: Session, service: str, limit: int
    ) -> None:
        runs = make_runs(session, service, 23)
        pages = walk(session, service=service, limit=limit)
        visited = [run_id for page in pages for run_id in page]
        assert visited == ids(runs)[::-1]
        assert all(len(page) == limit for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= limit

    def test_pages_with_status_filter(self, session: Session, service: str) -> None:
        failed = make_runs(session, service, 7, status=RunStatus.FAILED)
        make_runs(session, service, 7, start=T0 + timedelta(seconds=30))
        pages = walk(session, service=service, limit=3, status=RunStatus.FAILED)
        assert [run_id for page in pages for run_id in page] == ids(failed)[::-1]

    def test_newer_runs_between_fetches_neither_appear_nor_shift(
        self, session: Session, service: str
    ) -> None:
        runs = make_runs(session, service, 9)
        expected = ids(runs)[::-1]
        first = repositories.list_runs(session, service=service, limit=3)
        assert ids(first.runs) == expected[:3]
        newer = make_runs(session, service, 2, start=T0 + timedelta(hours=1))

        rest: list[uuid.UUID] = []
        cursor = first.next_cursor
        while cursor is not None:
            page = repositories.list_runs(session, service=service, limit=3, cursor=cursor)
            rest.extend(ids(page.runs))
            cursor = page.next_cursor
        assert rest == expected[3:]
        assert not set(ids(newer)) & set(rest)
        # A fresh listing does start with them.
        assert (
            ids(repositories.list_runs(session, service=service, limit=2).runs) == ids(newer)[::-1]
        )

    def test_same_timestamp_ties_are_ordered_by_id(self, session: Session, service: str) -> None:
        runs = make_runs(session, service, 7, step=timedelta(0))
        pages = walk(session, service=service, limit=2)
        visited = [run_id for page in pages for run_id in page]
        assert visited == sorted(ids(runs), reverse=True)

    def test_tie_inserted_between_fetches_goes_where_its_id_sorts(
        self, session: Session, service: str
    ) -> None:
        """Same queued_at as the cursor: a higher id sorts before it (already passed, so not
        shown), a lower id sorts after it (shown once, in id order)."""
        low, high = uuid.UUID(int=1), uuid.UUID(int=(1 << 128) - 1)
        runs = [
            create_run(session, service=service, queued_at=T0, run_id=uuid.UUID(int=n << 64))
            for n in range(2, 8)
        ]
        first = repositories.list_runs(session, service=service, limit=3)
        assert ids(first.runs) == sorted(ids(runs), reverse=True)[:3]
        create_run(session, service=service, queued_at=T0, run_id=high)
        create_run(session, service=service, queued_at=T0, run_id=low)
        rest = repositories.list_runs(session, service=service, limit=10, cursor=first.next_cursor)
        assert ids(rest.runs) == [*sorted(ids(runs), reverse=True)[3:], low]
        assert high not in ids(rest.runs)

    def test_cursor_survives_a_round_trip_through_its_text(
        self, session: Session, service: str
    ) -> None:
        runs = make_runs(session, service, 3)
        cursor = repositories.encode_cursor(runs[1])
        queued, run_id = repositories.decode_cursor(cursor)
        assert (queued, run_id) == (runs[1].queued_at, runs[1].id)
        page = repositories.list_runs(session, service=service, cursor=cursor)
        assert ids(page.runs) == [runs[0].id]

    @pytest.mark.parametrize(
        "cursor",
        [
            pytest.param("garbage", id="garbage"),
            pytest.param("!!!!", id="not-base64"),
            pytest.param(cursor_of({"queued_at": "2024-01-01"}), id="object"),
            pytest.param(cursor_of(["2024-01-01T00:00:00+00:00"]), id="one-part"),
            pytest.param(cursor_of(["yesterday", str(uuid.uuid4())]), id="bad-time"),
            pytest.param(cursor_of(["2024-01-01T00:00:00+00:00", "x"]), id="bad-id"),
            pytest.param(cursor_of(["2024-01-01T00:00:00+00:00", 5]), id="numeric-id"),
            pytest.param(cursor_of([None, None]), id="nulls"),
            pytest.param(
                cursor_of(["9999-12-31T23:59:59-05:00", str(uuid.uuid4())]), id="overflow"
            ),
            pytest.param(base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not-utf8"),
        ],
    )
    def test_invalid_cursor_raises(self, session: Session, service: str, cursor: str) -> None:
        with pytest.raises(InvalidCursor):
            repositories.list_runs(session, service=service, cursor=cursor)

    def test_every_cursor_of_the_pattern_is_accepted(self, session: Session, service: str) -> None:
        """The API declares CURSOR_PATTERN: any string of it pages, none is refused."""
        runs = make_runs(session, service, 3)
        micros = (runs[1].queued_at.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // (
            timedelta(microseconds=1)
        )
        cursor = f"{micros:016d}-{runs[1].id.hex}"
        assert re.fullmatch(repositories.CURSOR_PATTERN, cursor)
        assert repositories.encode_cursor(runs[1]) == cursor
        page = repositories.list_runs(session, service=service, cursor=cursor)
        assert ids(page.runs) == [runs[0].id]
        for extreme in ("0" * 16 + "-" + "0" * 32, "9" * 16 + "-" + "f" * 32):
            repositories.list_runs(session, service=service, cursor=extreme)


# -- the plan PostgreSQL picks for a page --------------------------------------------------


def _bulk_runs(session: Session, service: str, count: int) -> OrchestratorRun:
    """One run through the factory, then ``count`` copies sharing its plan (fast): 50
    services, one run in 20 failed, as a long-lived installation's history would be."""
    first = create_run(session, service=service, queued_at=T0)
    session.execute(
        text(
            "INSERT INTO orchestrator_runs (id, instruction, target_service, status, priority, "
            "action_plan_id, queued_at, metrics_snapshot, missing_artifacts, artifact_root) "
            "SELECT gen_random_uuid(), 'bulk', CASE WHEN n % 50 = 0 THEN :service "
            "ELSE :service || '-' || (n % 50) END, CASE WHEN n % 20 = 0 THEN 'failed' "
            "ELSE 'succeeded' END, 'normal', :plan, :t0 + n * interval '1 second', "
            "'{}', '[]', 'var' FROM generate_series(1, :count) AS n"
        ),
        {"service": service, "plan": first.action_plan_id, "t0": T0, "count": count},
    )
    session.execute(text("ANALYZE orchestrator_runs"))
    return first


def _plan_of(session: Session, **filters: object) -> str:
    page = repositories.list_runs(session, limit=100, **filters)  # type: ignore[arg-type]
    stmt = repositories.list_runs_statement(limit=100, **filters)  # type: ignore[arg-type]
    compiled = stmt.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    rows = session.execute(text(f"EXPLAIN {compiled}")).scalars()
    assert page.runs
    return "\n".join(rows)


class TestListRunsUsesAnIndex:
    def test_first_page(self, session: Session, service: str) -> None:
        _bulk_runs(session, service, 20_000)
        plan = _plan_of(session)
        assert "Index Scan Backward using ix_orchestrator_runs_queued_at_id" in plan, plan
        assert "Sort" not in plan, plan

    def test_filtered_pages(self, session: Session, service: str) -> None:
        _bulk_runs(session, service, 20_000)
        by_status = _plan_of(session, status=RunStatus.FAILED)
        assert "ix_orchestrator_runs_status_queued_at_id" in by_status, by_status
        assert "Sort" not in by_status, by_status
        by_service = _plan_of(session, service=service)
        assert "ix_orchestrator_runs_target_service_queued_at_id" in by_service, by_service
        assert "Sort" not in by_service, by_service

    def test_a_page_after_a_cursor(self, session: Session, service: str) -> None:
        _bulk_runs(session, service, 20_000)
        cursor = repositories.list_runs(session, service=service, limit=100).next_cursor
        assert cursor is not None
        plan = _plan_of(session, service=service, cursor=cursor)
        assert "ix_orchestrator_runs_target_service_queued_at_id" in plan, plan
        assert "Sort" not in plan, plan


# -- the API's handling of bad filters -----------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(
    migrated_postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    monkeypatch.setenv("MOONMIND_DATABASE_URL", migrated_postgres)
    transport = httpx.ASGITransport(app=create_app(load_settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as c:
        yield c


@pytest.mark.anyio
class TestListRunsEndpointFilters:
    @pytest.mark.parametrize(
        ("params", "error"),
        [
            pytest.param({"status": "bogus"}, "invalid_request", id="status-bogus"),
            pytest.param({"limit": "0"}, "invalid_request", id="limit-0"),
            pytest.param({"limit": "101"}, "invalid_request", id="limit-101"),
            pytest.param({"limit": "ten"}, "invalid_request", id="limit-not-int"),
            pytest.param({"service": ""}, "invalid_request", id="service-empty"),
            # The schema declares the cursor's pattern: anything else is refused by it.
            pytest.param({"cursor": "garbage"}, "invalid_request", id="cursor-garbage"),
            pytest.param(
                {"cursor": cursor_of(["2024-01-01T00:00:00+00:00", 5])},
                "invalid_request",
                id="cursor-numeric-id",
            ),
            pytest.param({"cursor": "a" * 513}, "invalid_request", id="cursor-too-long"),
        ],
    )
    async def test_bad_filter_is_400_error_response(
        self, client: httpx.AsyncClient, params: dict[str, str], error: str
    ) -> None:
        response = await client.get("/orchestrator/runs", params=params)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == error
        assert set(body) <= {"error", "detail", "remediation", "request_id"}
        assert isinstance(body.get("detail"), str)

    @pytest.mark.parametrize("limit", ["1", "100"])
    async def test_limit_bounds_are_accepted(self, client: httpx.AsyncClient, limit: str) -> None:
        response = await client.get(
            "/orchestrator/runs", params={"limit": limit, "service": f"none-{uuid.uuid4()}"}
        )
        assert response.status_code == 200
        assert response.json() == {"runs": []}
