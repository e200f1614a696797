"""P1, P6, P5, P3 and analyze-on-exited against the bundled demo stack and real processes."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import httpx

from bench.speed_report import Line, median, ms, pct
from moonmind.demo import Stack, compose, compose_down, make_stack
from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.readiness import Schedule, Target, watch_ready
from tests.support.processes import Process, start_api, start_worker

TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}


def _epoch(stamp: str | None) -> float:
    assert stamp is not None
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class Orchestrator:
    api: Process
    worker: Process
    base: str
    artifacts: Path

    def post(self, **body: object) -> tuple[float, str]:
        began = time.time()
        response = httpx.post(f"{self.base}/orchestrator/runs", json=body, timeout=60)
        assert response.status_code == 202, response.text
        return began, str(response.json()["run_id"])

    def wait(self, run_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = httpx.get(f"{self.base}/orchestrator/runs/{run_id}", timeout=30).json()
            if detail["status"] in TERMINAL:
                return dict(detail)
            time.sleep(0.05)
        raise TimeoutError(f"run {run_id} did not finish")

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()


def start(
    stack: Stack, home: Path, config: str, env: dict[str, str], *api_args: str
) -> Orchestrator:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)
    full = {
        "MOONMIND_CONFIG": str(home / "config.toml"),
        "ORCHESTRATOR_WORKSPACE": str(stack.root),
        "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(home / "artifacts"),
        **env,
    }
    api, base = start_api(full, home, *api_args)
    return Orchestrator(api, start_worker(full, home), base, home / "artifacts")


def app_config(stack: Stack, stable: float | None) -> str:
    window = f"stable_seconds = {stable:g}\n" if stable is not None else ""
    return (
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        f"health_timeout_seconds = 60\n{window}"
    )


def _status(stack: Stack) -> str:
    client = docker.from_env()
    try:
        labels = [f"com.docker.compose.project={stack.project}", "com.docker.compose.service=app"]
        found = client.containers.list(all=True, filters={"label": labels})
        return str(found[0].attrs["State"]["Status"]) if found else "none"
    finally:
        client.close()


def break_app(stack: Stack) -> None:
    """Back to the broken state: requirements without PyYAML, `app` built and exited."""
    import subprocess

    subprocess.run(["git", "checkout", "--", "."], cwd=stack.root, check=True)
    for args in (("build", "app"), ("up", "-d")):
        result = compose(stack, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 60
    while _status(stack) != "exited":
        assert time.monotonic() < deadline, "app never crashed"
        time.sleep(0.1)


def fix_by_hand(stack: Stack) -> float:
    """Append the dependency, build, recreate, poll the health URL every 50 ms."""
    began = time.perf_counter()
    with (stack.root / "app" / "requirements.txt").open("a") as requirements:
        requirements.write("PyYAML\n")
    assert compose(stack, "build", "app").returncode == 0
    assert compose(stack, "up", "-d", "--no-deps", "app").returncode == 0
    url = f"http://127.0.0.1:{stack.app_port}/health"
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def fix_by_orchestrator(orch: Orchestrator) -> tuple[float, dict[str, Any]]:
    began, run_id = orch.post(instruction="fix the missing dependency", target_service="app")
    detail = orch.wait(run_id)
    assert detail["status"] == "succeeded", detail.get("message")
    return _epoch(detail["completed_at"]) - began, detail


def step_times(detail: dict[str, Any]) -> dict[str, float]:
    return {
        s["name"]: round(_epoch(s["completed_at"]) - _epoch(s["started_at"]), 3)
        for s in detail["steps"]
        if s.get("started_at") and s.get("completed_at")
    }


def first_step_delay(began: float, detail: dict[str, Any]) -> float:
    return _epoch(detail["steps"][0]["started_at"]) - began


def p6(orch: Orchestrator, samples: int = 15) -> tuple[list[float], list[float]]:
    """(POST accepted → analyze started, POST round trip), over diagnose runs of `app`."""
    found, posts = [], []
    for _ in range(samples):
        began, run_id = orch.post(instruction="why?", target_service="app", mode="diagnose")
        accepted = time.time()
        posts.append(accepted - began)
        found.append(first_step_delay(accepted, orch.wait(run_id)))
    return found, posts


def p5(orch: Orchestrator, seconds: float = 10, threads: int = 8) -> tuple[float, float]:
    """Sustained POSTs from `threads` clients: (runs accepted per second, p99 latency)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=orch.base, timeout=30) as http:
            while time.monotonic() < stop:
                began = time.perf_counter()
                body = {"instruction": "load", "target_service": "app"}
                response = http.post("/orchestrator/runs", json=body)
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 202, response.text

    workers = [threading.Thread(target=client) for _ in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(latencies) / (time.monotonic() - began), pct(latencies, 99)


def p3(samples: int = 30) -> list[float]:
    """Delay between a service's first answer and verify's verdict (real HTTP, inspected
    container state stubbed: a running container that started long ago)."""
    answering = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if answering.is_set() else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    info = ContainerInfo("c", "c", "running", 0, 0, None, "2020-01-01T00:00:00Z", "i", False)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    found = []
    try:
        for index in range(samples):
            answering.clear()
            flip: list[float] = []

            def later(delay: float = 0.2 + (index % 7) * 0.113, flip: list[float] = flip) -> None:
                time.sleep(delay)
                flip.append(time.perf_counter())
                answering.set()

            threading.Thread(target=later).start()
            result = watch_ready(lambda: info, Target(url, stable_s=0), Schedule(), _drop)
            assert result.ok
            found.append(time.perf_counter() - flip[0])
    finally:
        server.shutdown()
        server.server_close()
    return found


def _drop(line: str) -> None:
    return


def demo_stack(root: Path) -> Stack:
    return make_stack(root / "workspace", project=f"mmbench{uuid.uuid4().hex[:8]}")


def cleanup(stack: Stack, home: Path) -> None:
    compose_down(stack)
    shutil.rmtree(home, ignore_errors=True)


Measure = Callable[[], list[Line]]


def lines_p6(label: str, measured: tuple[list[float], list[float]]) -> Line:
    samples, posts = measured
    figure = f"p50 {ms(median(samples))}, p95 {ms(pct(samples, 95))}"
    data = {"samples": samples, "post_round_trip_s": posts}
    return Line(label, figure, "<= 50 ms p50", median(samples) <= 0.050, data)


def tmp_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="moonmind-bench-run-"))
