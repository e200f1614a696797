"""Two Docker hosts' workers run in parallel (issue 12): two compose projects, one worker
each (ORCHESTRATOR_HOST east / west), finish twice the runs of one worker in about the
same time (>= 1.8x the throughput). This machine has one Docker engine: both "hosts"
drive it, so the figure also includes the engine's own contention.

Each run is an operator patch to a healthy demo `app` (ENV BENCH_RUN=<i> at the end of
its Dockerfile): patch, a one-layer build, recreate, verify; runs on one stack follow
each other, the two stacks run side by side. Needs PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api_service.db.base import normalize_url
from api_service.db.migrate import upgrade
from bench.speed import AMQP_URL
from bench.speed_list import POSTGRES_URL
from bench.speed_report import Line
from bench.speed_runs import TERMINAL, cleanup, tmp_home
from moonmind.demo import Stack, compose, make_stack
from tests.support.broker import delete_queues
from tests.support.processes import Process, start_api, start_worker

GOAL = 1.8


def _prepare(stack: Stack) -> None:
    """The demo app fixed, with a line each run bumps, committed, built and started."""
    for name, line in (("requirements.txt", "PyYAML\n"), ("Dockerfile", "ENV BENCH_RUN=0\n")):
        path = stack.root / "app" / name
        path.write_text(path.read_text() + line)
    subprocess.run(["git", "commit", "-qam", "bench base"], cwd=stack.root, check=True)
    for args in (("build", "app"), ("up", "-d")):
        done = compose(stack, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def _patch(stack: Stack, run: int) -> str:
    lines = (stack.root / "app" / "Dockerfile").read_text().splitlines()
    count = len(lines)
    return (
        f"--- a/app/Dockerfile\n+++ b/app/Dockerfile\n@@ -{count - 1},2 +{count - 1},2 @@\n"
        f" {lines[-2]}\n-ENV BENCH_RUN={run - 1}\n+ENV BENCH_RUN={run}\n"
    )


def _runs(api: str, stack: Stack, first: int, count: int) -> None:
    for run in range(first, first + count):
        body = {"instruction": "bump", "target_service": "app", "patch": _patch(stack, run)}
        response = httpx.post(f"{api}/orchestrator/runs", json=body, timeout=60)
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        while True:
            detail = httpx.get(f"{api}/orchestrator/runs/{run_id}", timeout=30).json()
            if detail["status"] in TERMINAL:
                break
            time.sleep(0.05)
        assert detail["status"] == "succeeded", detail.get("message")


def _config(stack: Stack, host: str) -> str:
    return (
        f'[orchestrator.services.app]\nhost = "{host}"\nstable_seconds = 0\n'
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
    )


def _measure(home: Path, env: dict[str, str], per_stack: int) -> tuple[float, float]:
    stacks = {
        h: make_stack(home / h, project=f"mmhost{h}{uuid.uuid4().hex[:6]}")
        for h in ("east", "west")
    }
    processes: list[Process] = []
    apis: dict[str, str] = {}
    try:
        for host, stack in stacks.items():
            _prepare(stack)
            (home / f"{host}.toml").write_text(_config(stack, host))
            api_env = {
                **env,
                "MOONMIND_CONFIG": str(home / f"{host}.toml"),
                "ORCHESTRATOR_WORKSPACE": str(stack.root),
                "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
            }
            api, apis[host] = start_api(api_env, home)
            processes.append(api)
        processes.append(start_worker({**env, "ORCHESTRATOR_HOST": "east"}, home))
        _runs(apis["east"], stacks["east"], 1, 1)  # warm-up: the first build's cache
        began = time.perf_counter()
        _runs(apis["east"], stacks["east"], 2, per_stack)
        one = time.perf_counter() - began
        processes.append(start_worker({**env, "ORCHESTRATOR_HOST": "west"}, home))
        _runs(apis["west"], stacks["west"], 1, 1)
        threads = [
            threading.Thread(target=_runs, args=(apis[h], stacks[h], first, per_stack))
            for h, first in (("east", 2 + per_stack), ("west", 2))
        ]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        two = time.perf_counter() - began
    finally:
        for process in processes:
            process.stop()
        for stack in stacks.values():
            cleanup(stack, home / "unused")
            kept = subprocess.run(
                ["docker", "images", "-q", f"moonmind-rollback/{stack.project}-*"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if kept:
                subprocess.run(["docker", "rmi", "-f", *kept], capture_output=True, check=False)
    return one, two


def measure(per_stack: int = 4) -> Line:
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"moonmind_bench_{uuid.uuid4().hex[:8]}"
    queue = f"orchestrator.run.bench-{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(normalize_url(POSTGRES_URL)).set(database=name)
    home = tmp_home()
    try:
        upgrade(db_url.render_as_string(hide_password=False))
        env = {
            "MOONMIND_DATABASE_URL": db_url.render_as_string(hide_password=False),
            "CELERY_BROKER_URL": AMQP_URL,
            "ORCHESTRATOR_QUEUE": queue,
            "ORCHESTRATOR_ARTIFACT_ROOT": str(home / "artifacts"),
        }
        one, two = _measure(home, env, per_stack)
    finally:
        delete_queues(AMQP_URL, queue, f"{queue}.east", f"{queue}.west")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    ratio = (2 * per_stack / two) / (per_stack / one)
    return Line(
        "two hosts' workers, two compose projects: throughput vs one",
        f"{ratio:.2f}x ({per_stack} runs in {one:.1f} s; {2 * per_stack} in {two:.1f} s)",
        f">= {GOAL}x",
        ratio >= GOAL,
        {"one_worker_s": one, "two_workers_s": two, "runs_per_stack": per_stack},
    )


if __name__ == "__main__":
    print(measure().row())
