"""A burst of requests keeps its PostgreSQL connections: the pool holds up to POOL_SIZE open
connections, so the next burst opens no new server connection (SQLAlchemy's default of
five closed every connection beyond five, and opened it again on the next request)."""

from __future__ import annotations

import threading

from sqlalchemy import text

from api_service.db.base import POOL_SIZE, Database

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
