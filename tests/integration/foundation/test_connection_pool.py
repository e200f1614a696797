"""A burst of requests keeps its PostgreSQL connections: the pool holds up to POOL_SIZE open
connections, so the next burst opens no new server connection (SQLAlchemy's default of
five closed every connection beyond five, and opened it again on the next request)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api_service.db.base import PING_AFTER_IDLE_S, POOL_SIZE, Database

BURST = 12  # more than SQLAlchemy's default pool of 5, fewer than ours


def _backend_pids(db: Database) -> set[int]:
    """The server process of each connection of a burst of BURST concurrent sessions."""
    pids: set[int] = set()
    lock = threading.Lock()
    everyone_in = threading.Barrier(BURST)

    def request() -> None:
        with db.session() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            everyone_in.wait(timeout=30)  # all BURST sessions hold a connection at once
            with lock:
                pids.add(int(pid))

    threads = [threading.Thread(target=request) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return pids


def test_a_second_burst_reuses_the_first_bursts_connections(migrated_postgres: str) -> None:
    assert BURST <= POOL_SIZE
    db = Database(migrated_postgres)
    try:
        first = _backend_pids(db)
        assert len(first) == BURST
        assert db.engine.pool.checkedin() == BURST  # all kept, none closed
        assert _backend_pids(db) == first  # the same server connections, none opened
    finally:
        db.dispose()


def _terminate(url: str, pid: int) -> None:
    """Kill one server connection from outside the pool, as a server restart or an idle
    timeout does."""
    admin = Database(url)
    try:
        with admin.session() as session:
            # wait=5000 ms: returns once the backend has exited, not when it was signalled.
            session.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        admin.dispose()


def _backend_pid(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_idle_past_the_ping_age_is_pinged_and_replaced(
    migrated_postgres: str,
) -> None:
    db = Database(migrated_postgres)
    try:
        gone = _backend_pid(db)
        _terminate(migrated_postgres, gone)
        time.sleep(PING_AFTER_IDLE_S + 0.2)
        assert _backend_pid(db) != gone  # the ping noticed; no request failed
    finally:
        db.dispose()


def test_a_connection_used_within_the_ping_age_is_not_pinged(migrated_postgres: str) -> None:
    """No round trip before every request under load: a connection killed right after its
    last use fails the next request (no ping caught it), and the pool then starts afresh."""
    db = Database(migrated_postgres)
    try:
        gone = _backend_pid(db)
        _terminate(migrated_postgres, gone)
        with pytest.raises(OperationalError):
            _backend_pid(db)
        assert _backend_pid(db) != gone
    finally:
        db.dispose()
