"""HTTP probe backoff/deadline behaviour and container stability checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.probe import (
    Attempt,
    probe_http,
    wait_container_stable,
)
from tests.support.containers import container_info


class _FlakyServer(ThreadingHTTPServer):
    """Answers 503 ``failures`` times, then 200."""

    def __init__(self, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.hits = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _FlakyServer

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        with self.server.lock:
            self.server.hits += 1
            failing = self.server.hits <= self.server.failures
        body = b"not yet" if failing else b"ok"
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""


def _serve(failures: int) -> Iterator[_FlakyServer]:
    server = _FlakyServer(failures)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def flaky() -> Iterator[_FlakyServer]:
    yield from _serve(failures=3)


@pytest.fixture
def broken() -> Iterator[_FlakyServer]:
    yield from _serve(failures=10**6)


def _url(server: _FlakyServer, path: str = "/health") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeTime:
    """Deterministic clock: only sleeping advances time."""

    now: float = 1000.0

    def __post_init__(self) -> None:
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_succeeds_after_503s_with_real_server(flaky: _FlakyServer) -> None:
    seen: list[Attempt] = []
    result = probe_http(_url(flaky), deadline_s=10, initial_delay_s=0.05, on_attempt=seen.append)
    assert result.ok
    assert [a.status_code for a in result.attempts] == [503, 503, 503, 200]
    assert [a.number for a in result.attempts] == [1, 2, 3, 4]
    assert seen == result.attempts
    assert result.attempts[0].error is not None
    assert "503" in result.attempts[0].error
    assert result.attempts[-1].ok
    assert result.attempts[-1].error is None


def test_backoff_grows_exponentially_and_is_capped(broken: _FlakyServer) -> None:
    fake = FakeTime()
    result = probe_http(
        _url(broken),
        deadline_s=20,
        initial_delay_s=0.5,
        factor=2.0,
        max_delay_s=4.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert not result.ok
    assert fake.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert sum(fake.sleeps) == pytest.approx(20.0)
    assert fake.sleeps[-1] <= 4.0
    assert len(result.attempts) == len(fake.sleeps) + 1
    assert broken.hits == len(result.attempts)
    assert all(a.status_code == 503 for a in result.attempts)


def test_never_sleeps_past_deadline() -> None:
    fake = FakeTime()
    url = f"http://127.0.0.1:{_closed_port()}/"
    result = probe_http(
        url, deadline_s=1.0, initial_delay_s=0.3, clock=fake.clock, sleep=fake.sleep
    )
    assert not result.ok
    assert fake.sleeps == pytest.approx([0.3, 0.6, 0.1])
    assert fake.now == pytest.approx(1001.0)
    assert all(a.status_code is None and a.error for a in result.attempts)


def test_real_deadline_is_respected() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/"
    started = time.monotonic()
    result = probe_http(url, deadline_s=1.0, initial_delay_s=0.1, request_timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert 1.0 <= elapsed < 2.0
    assert result.attempts[-1].elapsed_s >= 1.0


def test_expected_status_other_than_200(flaky: _FlakyServer) -> None:
    result = probe_http(_url(flaky), expected_status=503, deadline_s=5)
    assert result.ok
    assert len(result.attempts) == 1


# --- wait_container_stable -------------------------------------------------------------

_RUNNING = container_info(name="proj_web_1", started_at="2024-01-01T00:00:00.000000001Z")


def _wait(
    states: list[ContainerInfo | None],
    fake: FakeTime,
    *,
    require_healthy: bool,
    deadline_s: float = 10.0,
) -> tuple[bool, str, list[str]]:
    """Feed ``states`` one per poll (the last one repeats)."""
    checks: list[str] = []
    feed = iter(states)
    last: list[ContainerInfo | None] = [None]

    def get_info() -> ContainerInfo | None:
        last[0] = next(feed, last[0])
        return last[0]

    ok, reason = wait_container_stable(
        get_info,
        require_healthy=require_healthy,
        on_check=checks.append,
        clock=fake.clock,
        sleep=fake.sleep,
        deadline_s=deadline_s,
        stable_for_s=2.0,
        poll_s=0.5,
    )
    return ok, reason, checks


def test_stable_running_container() -> None:
    fake = FakeTime()
    ok, reason, checks = _wait([_RUNNING], fake, require_healthy=False)
    assert ok, reason
    assert fake.now - 1000.0 == pytest.approx(2.0)
    assert len(checks) == 5


def test_restart_resets_the_stability_window() -> None:
    fake = FakeTime()
    restarted = replace(_RUNNING, restart_count=1, started_at="2024-01-01T00:00:09Z")
    ok, _, _ = _wait([_RUNNING, _RUNNING, restarted], fake, require_healthy=False)
    assert ok
    assert fake.now - 1000.0 == pytest.approx(3.0)


def test_crash_loop_never_stable() -> None:
    fake = FakeTime()
    states: list[ContainerInfo | None] = [
        replace(_RUNNING, restart_count=i, started_at=f"t{i}") for i in range(100)
    ]
    ok, reason, _ = _wait(states, fake, require_healthy=False)
    assert not ok
    assert "not stable within 10s" in reason
    assert fake.now - 1000.0 == pytest.approx(10.0)


def test_requires_healthy() -> None:
    fake = FakeTime()
    starting = replace(_RUNNING, health="starting")
    healthy = replace(_RUNNING, health="healthy")
    ok, reason, _ = _wait([starting, starting, healthy], fake, require_healthy=True)
    assert ok
    assert "health=healthy" in reason


def test_missing_healthcheck_fails_when_required() -> None:
    fake = FakeTime()
    ok, reason, _ = _wait([_RUNNING], fake, require_healthy=True)
    assert not ok
    assert "no healthcheck" in reason
    assert fake.now - 1000.0 < 10.0


def test_exited_container_fails_early_with_exit_code() -> None:
    fake = FakeTime()
    exited = replace(_RUNNING, status="exited", exit_code=137, oom_killed=True)
    ok, reason, _ = _wait([exited], fake, require_healthy=False)
    assert not ok
    assert "code 137" in reason
    assert "OOM" in reason
    assert fake.now - 1000.0 == pytest.approx(2.0)


def test_missing_container_times_out() -> None:
    fake = FakeTime()
    ok, reason, _ = _wait([None], fake, require_healthy=False, deadline_s=3.0)
    assert not ok
    assert "no container" in reason
    assert fake.now - 1000.0 == pytest.approx(3.0)
