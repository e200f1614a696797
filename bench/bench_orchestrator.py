"""`make bench`: baseline costs of the orchestrator's own hot paths (no Docker needed).

Prints one line per measurement. Targets belong here, not in timed tests; compare runs
on the same machine only.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api_service.db.base import Database
from api_service.db.migrate import upgrade
from moonmind.utils.redaction import Redactor
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.adapters.workspace import Snapshot
from moonmind.workflows.orchestrator.enums import RunStatus


def _timed(label: str, fn: Callable[[], object], repeat: int = 5) -> None:
    samples = []
    tracemalloc.start()
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{label:<48} median {statistics.median(samples) * 1000:9.2f} ms"
        f"   peak {peak / 1_048_576:7.1f} MiB"
    )


def bench_run_listing(root: Path, runs: int = 5000) -> None:
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade(url)
    db = Database(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with db.session() as session:
        for index in range(runs):
            run = repo.create_run(
                session,
                instruction="bench",
                target_service=f"svc{index % 10}",
                steps=[{"name": "analyze"}],
                service_context={},
                artifact_root="var/artifacts",
            )
            run.queued_at = start + timedelta(seconds=index)
            run.status = RunStatus.SUCCEEDED if index % 3 else RunStatus.FAILED

    def walk_all_pages() -> None:
        cursor = None
        with db.session() as session:
            while True:
                page = repo.list_runs(session, limit=100, cursor=cursor)
                if page.next_cursor is None:
                    return
                cursor = page.next_cursor

    def filtered_first_page() -> None:
        with db.session() as session:
            repo.list_runs(session, status=RunStatus.FAILED, service="svc3", limit=20)

    _timed(f"list {runs} runs, 100 a page (SQLite)", walk_all_pages)
    _timed("first filtered page (status+service)", filtered_first_page)
    db.dispose()


def bench_snapshot(root: Path, files: int = 3000) -> None:
    workspace = root / "workspace"
    for index in range(files):
        path = workspace / f"dir{index % 50}" / f"file{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(uuid.uuid4().bytes * 64)
    _timed(f"workspace snapshot, {files} files of 1 KiB", lambda: Snapshot.take(workspace))


def bench_redaction(lines: int = 20000) -> None:
    redactor = Redactor.from_environ(
        {"REGISTRY_TOKEN": "tok-" + "x" * 30, "DB_URL": "postgresql://u:hunter22@db/x"}
    )
    text = "\n".join(
        f"Step {i}/9 : RUN pip install --no-index -r requirements.txt  # layer {i}"
        for i in range(lines)
    )
    _timed(f"redact a {lines}-line build log", lambda: redactor.redact(text))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="moonmind-bench-") as tmp:
        root = Path(tmp)
        bench_run_listing(root)
        bench_snapshot(root)
    bench_redaction()


if __name__ == "__main__":
    main()
