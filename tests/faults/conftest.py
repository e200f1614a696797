"""The fault matrix: real worker processes, Docker, PostgreSQL and RabbitMQ, and counts.

Every fault test records one row per repetition through ``fault_report``: the fault, whether
the run(s) ended, how many stayed stuck, how many effects happened twice and how many
bytes were lost. `make faults` runs the matrix ``FAULTS_N`` times and prints the rows as a
table (scripts/faults_table.py); `make test` runs it once (the quick form).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.orchestrator.conftest import (  # noqa: F401 (fixtures)
    Orchestrator,
    broken_stack,
    start_orchestrator,
)
from tests.support.stack import Stack, compose_cmd

REPETITIONS = max(1, int(os.environ.get("FAULTS_N", "1")))
FULL = os.environ.get("FAULTS_FULL") == "1"  # `make faults`: the long forms (30 s outage)
REPORT = os.environ.get("FAULTS_REPORT", "")

# Fast failure detection for every worker the matrix starts.
FAST_WORKER = {
    "ORCHESTRATOR_HEARTBEAT_SECONDS": "1",
    "ORCHESTRATOR_STALE_AFTER_SECONDS": "6",
    "ORCHESTRATOR_SWEEP_INTERVAL_SECONDS": "1",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "repetition" in metafunc.fixturenames:
        metafunc.parametrize("repetition", range(REPETITIONS))


@dataclass
class FaultRow:
    fault: str
    runs: int = 0
    ended: int = 0
    stuck: int = 0
    duplicated: int = 0
    bytes_lost: int = 0
    lost_runs: int = 0


@pytest.fixture
def fault_report() -> Iterator[Callable[..., FaultRow]]:
    """``row = fault_report("worker SIGKILL during build")``; fill it; it is written at the end."""
    rows: list[FaultRow] = []

    def _new(fault: str) -> FaultRow:
        rows.append(FaultRow(fault))
        return rows[-1]

    yield _new
    if REPORT:
        Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
        with open(REPORT, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(asdict(row)) + "\n")


def slow_compose(directory: Path, pause_s: float = 4.0) -> str:
    """A compose command that runs the real `docker compose`, then pauses after a build or
    an up: a window in which the effect has happened and the step has not yet recorded it.

    The script carries the real command's name (v1 `docker-compose` names things its way)."""
    real = compose_cmd()
    folder = directory / "slow-compose"
    folder.mkdir(exist_ok=True)
    script = folder / Path(real[0]).name
    binary = shutil.which(real[0]) or real[0]
    # Python, not sh: the real compose must die with this wrapper as it would die with the
    # worker (PR_SET_PDEATHSIG, kept across exec, is set again for the grandchild).
    script.write_text(
        f"#!{sys.executable}\n"
        "import ctypes, signal, subprocess, sys, time\n"
        "def die_with_parent():\n"
        "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)\n"
        f"argv = {[binary, *real[1:]]!r} + sys.argv[1:]\n"
        "code = subprocess.call(argv, preexec_fn=die_with_parent)\n"
        "if {'build', 'up'} & set(sys.argv[1:]):\n"
        f"    time.sleep({pause_s})\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)
    return str(script)


def wait_step(orchestrator: Orchestrator, run_id: str, step: str, timeout: float = 180) -> None:
    """Poll until ``step`` is in progress (fails if the run ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = orchestrator.run_detail(run_id)
        status = {s["name"]: s["status"] for s in detail["steps"]}
        if status.get(step) == "in_progress":
            return
        assert detail["status"] not in {"succeeded", "failed", "rolled_back", "cancelled"}, (
            f"run ended before {step} was caught: {orchestrator.explain(detail)}"
        )
        time.sleep(0.05)
    raise AssertionError(f"{step} never started: {detail}\n{orchestrator.worker_output()[-3000:]}")


def kill_worker(orchestrator: Orchestrator) -> None:
    """SIGKILL the whole worker: its main process, its pool and their children."""
    assert orchestrator.worker is not None
    os.killpg(orchestrator.worker.popen.pid, 9)
    orchestrator.worker.popen.wait(timeout=30)


def docker_events(stack: Stack, since: datetime, service: str = "app") -> dict[str, Any]:
    """What the engine did to one service since ``since``: containers created, images
    tagged with the service's image name."""
    client = docker.from_env()
    try:
        until = datetime.now(UTC)
        created = list(
            client.events(
                since=since,
                until=until,
                decode=True,
                filters={
                    "type": "container",
                    "event": "create",
                    "label": [
                        f"com.docker.compose.project={stack.project}",
                        f"com.docker.compose.service={service}",
                    ],
                },
            )
        )
        tagged = [
            e
            for e in client.events(
                since=since, until=until, decode=True, filters={"type": "image", "event": "tag"}
            )
            if f"{stack.project}" in (e.get("Actor", {}).get("Attributes", {}).get("name") or "")
            and "moonmind-rollback" not in (e["Actor"]["Attributes"]["name"])
        ]
        return {"created": len(created), "image_ids": {e["id"] for e in tagged}}
    finally:
        client.close()
