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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.orchestrator.conftest import (  # noqa: F401 (fixtures)
    TERMINAL,
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

    def wait_ended(
        self,
        orchestrator: Orchestrator,
        run_ids: Sequence[str],
        timeout: float = 300,
        stuck_is_lost: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Each run's detail once all have ended (in ``run_ids`` order). ``ended`` counts
        those that did, ``stuck`` the rest (``lost_runs`` too with ``stuck_is_lost``); a run
        still going after ``timeout`` fails the test."""
        details: dict[str, dict[str, Any]] = {}
        last: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        try:
            while True:
                for run_id in run_ids:
                    if run_id not in details:
                        last[run_id] = orchestrator.run_detail(run_id)
                        if last[run_id]["status"] in TERMINAL:
                            details[run_id] = last[run_id]
                if len(details) == len(run_ids):
                    return {run_id: details[run_id] for run_id in run_ids}
                if time.monotonic() >= deadline:
                    stuck = {
                        r: (d["status"], d.get("message"))
                        for r, d in last.items()
                        if r not in details
                    }
                    raise AssertionError(
                        f"not finished after {timeout}s: {stuck}\n"
                        f"{orchestrator.worker_output()[-4000:]}"
                    )
                time.sleep(1)
        finally:
            self.ended = len(details)
            self.stuck = len(run_ids) - len(details)
            if stuck_is_lost:
                self.lost_runs = self.stuck

    def wait_end(self, orchestrator: Orchestrator, run_id: str, **kw: Any) -> dict[str, Any]:
        """One run's detail once it has ended: see wait_ended."""
        return self.wait_ended(orchestrator, [run_id], **kw)[run_id]


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


def slow_compose(directory: Path, pause_s: float = 4.0) -> dict[str, str]:
    """The environment of a worker whose builds and ups pause after they are done: a window
    in which the effect has happened and the step has not yet recorded it.

    ORCHESTRATOR_COMPOSE_COMMAND runs the real compose, then pauses after a build or an up;
    PATH starts with a `docker` that pauses after a `docker build` (the build step runs the
    `docker build` compose v1 would run, adapters/native_build.py). Each wrapper carries the
    real command's name (v1 `docker-compose` names things its way)."""
    real = compose_cmd()
    folder = directory / "slow-compose"
    folder.mkdir(exist_ok=True)
    script = _pausing(folder, real, "{'build', 'up'} & set(sys.argv[1:])", pause_s)
    if Path(real[0]).name != "docker":  # the v2 plugin builds itself (no native build)
        _pausing(folder, ["docker"], "sys.argv[1:2] == ['build']", pause_s)
    return {
        "ORCHESTRATOR_COMPOSE_COMMAND": str(script),
        "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _pausing(folder: Path, real: list[str], when: str, pause_s: float) -> Path:
    """A wrapper of ``real`` that sleeps ``pause_s`` after it when ``when`` holds of argv."""
    script = folder / Path(real[0]).name
    binary = shutil.which(real[0]) or real[0]
    # Python, not sh: the real command must die with this wrapper as it would die with the
    # worker (PR_SET_PDEATHSIG, kept across exec, is set again for the grandchild).
    script.write_text(
        f"#!{sys.executable}\n"
        "import ctypes, signal, subprocess, sys, time\n"
        "def die_with_parent():\n"
        "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)\n"
        f"argv = {[binary, *real[1:]]!r} + sys.argv[1:]\n"
        "code = subprocess.call(argv, preexec_fn=die_with_parent)\n"
        f"if {when}:\n"
        f"    time.sleep({pause_s})\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)
    return script


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
