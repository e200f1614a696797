"""`make bench`: costs of the orchestrator's hot paths, then issue 9's speed table (the
run list at 100k runs, fix runs against the demo stack beside the same fix by hand, hand-off
and POST latencies), then issue 12's two Docker hosts' workers against one (bench_hosts);
needs Docker, PostgreSQL and RabbitMQ as the integration tests do.

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
from pathlib import Path

from moonmind.utils.redaction import Redactor
from moonmind.workflows.orchestrator.adapters.workspace import Snapshot


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


def speed_table() -> None:
    """Issue 9's table: per line the figure, the goal and whether it holds (and JSON)."""
    from bench import speed, speed_report

    lines = speed.measure()
    print()
    speed_report.show(lines)
    print(f"figures written to {speed_report.write(lines)}")


def hosts_line() -> None:
    """Issue 12: two Docker hosts' workers on two compose projects against one worker."""
    from bench import bench_hosts

    print(bench_hosts.measure().row())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="moonmind-bench-") as tmp:
        root = Path(tmp)
        bench_snapshot(root)
    bench_redaction()
    speed_table()
    hosts_line()
    try:
        from bench import bench_diagnosis
    except ImportError:
        return
    bench_diagnosis.main()


if __name__ == "__main__":
    main()
