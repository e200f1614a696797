"""The run list: keyset pages of run summaries, newest first, one index range scan each."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, select, tuple_
from sqlalchemy.orm import Session

from api_service.db.models import OrchestratorRun
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.errors import InvalidCursor


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunPage:
    runs: list[Row[Any]]  # the summary's columns, read by name (run.id, run.status, ...)
    next_cursor: str | None


# A page builds no ORM objects and leaves out what no summary shows (the audit JSON, a
# patch body, a token hash): plain rows cost a fraction of mapped objects per run.
SUMMARY_COLUMNS = tuple(
    column
    for column in OrchestratorRun.__table__.columns
    if column.key not in {"metrics_snapshot", "requested_patch", "approval_token", "artifact_root"}
)


# A cursor is the (queued_at, id) of the last run of a page: queued_at as 16 digits of
# microseconds since the epoch, then the run id's 32 hex digits. Every string of this
# pattern is a cursor the server accepts, so the API's schema says exactly what it takes.
CURSOR_PATTERN = r"^[0-9]{16}-[0-9a-f]{32}$"
CURSOR_LENGTH = 49
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(run: OrchestratorRun | Row[Any]) -> str:
    queued = _as_utc(run.queued_at)
    return f"{(queued - _EPOCH) // _MICROSECOND:016d}-{run.id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (queued_at, id) a cursor points after; InvalidCursor for anything else."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidCursor("cursor is not one this server issued")
    micros, run_hex = cursor.split("-")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=run_hex)


def list_runs_statement(
    *,
    status: RunStatus | None = None,
    service: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    sqlite: bool = False,
) -> Select[Any]:
    """One page: ``limit + 1`` rows after ``cursor``, newest first; each filter has an
    index ending in (queued_at, id) and the summary needs no plan: one index range scan."""
    stmt = select(*SUMMARY_COLUMNS)
    if status is not None:
        stmt = stmt.where(OrchestratorRun.status == status)
    if service is not None:
        stmt = stmt.where(OrchestratorRun.target_service == service)
    if cursor:
        queued, run_id = decode_cursor(cursor)
        if sqlite:
            queued = queued.astimezone(UTC).replace(tzinfo=None)
        stmt = stmt.where(tuple_(OrchestratorRun.queued_at, OrchestratorRun.id) < (queued, run_id))
    order = (OrchestratorRun.queued_at.desc(), OrchestratorRun.id.desc())
    return stmt.order_by(*order).limit(limit + 1)


def list_runs(
    session: Session,
    *,
    status: RunStatus | None = None,
    service: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> RunPage:
    """Newest first, keyset-paginated on (queued_at, id) so new arrivals never shift a page."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    stmt = list_runs_statement(
        status=status, service=service, limit=limit, cursor=cursor, sqlite=sqlite
    )
    rows = list(session.execute(stmt).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return RunPage(runs=rows, next_cursor=encode_cursor(rows[-1]) if more and rows else None)
