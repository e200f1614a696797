"""Verify's readiness watch: HTTP probe and stability window side by side (fake clock)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.readiness import (
    WATCH_AFTER_ANSWER_S,
    Readiness,
    Schedule,
    Target,
    started_epoch,
    watch_ready,
)
from tests.support.containers import container_info

STARTED = "2026-01-01T00:00:00.000000001Z"
T0 = started_epoch(STARTED) or 0.0
RUNNING = container_info(name="proj-web-1", started_at=STARTED)
EXITED = replace(RUNNING, status="exited", exit_code=1)


class _Handler(BaseHTTPRequestHandler):
    answering = False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ok = type(self).answering
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"answering": False})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/health", handler
    httpd.shutdown()
    httpd.server_close()


class Time:
    """Monotonic and wall clock advanced only by sleeping; ``watch`` runs the readiness watch
    on them and keeps its log lines."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.lines: list[str] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def watch(
        self,
        info: Callable[[], ContainerInfo],
        target: Target,
        schedule: Schedule | None = None,
    ) -> Readiness:
        return watch_ready(
            info,
            target,
            schedule or Schedule(),
            self.lines.append,
            clock=self.clock,
            wall=self.wall,
            sleep=self.sleep,
        )


def test_healthy_on_the_first_probe_after_it_answers(
    server: tuple[str, type[_Handler]],
) -> None:
    url, handler = server
    time = Time()
    looks = iter(range(1000))

    def info() -> ContainerInfo:
        if next(looks) == 4:  # the service starts answering before the 5th look
            handler.answering = True
        return RUNNING

    result = time.watch(info, Target(health_url=url, stable_s=0.0, deadline_s=30))
    assert result.ok, result.reason
    assert [a.ok for a in result.attempts] == [False] * 4 + [True]
    assert time.sleeps == [Schedule().fast_s] * 4  # a short fixed interval first
    assert Schedule().fast_s <= 0.02
    assert sum("probe #" in line for line in time.lines) == 5


def test_the_window_counts_from_the_container_start_alongside_the_probe(
    server: tuple[str, type[_Handler]],
) -> None:
    url, handler = server
    handler.answering = True
    time = Time()
    result = time.watch(lambda: RUNNING, Target(health_url=url, stable_s=1.0, deadline_s=30))
    assert result.ok, result.reason
    assert len(result.attempts) == 1  # answered at once; then only the window is awaited
    assert result.stability["container_id"] == "c1"
    assert result.stability["started_at"] == STARTED
    assert result.stability["up_for_seconds"] >= 1.0
    assert time.now == pytest.approx(1.0, abs=0.06)
    assert any(
        line.startswith("container check: ok:") and "c1 started" in line for line in time.lines
    )
    assert any(line.startswith("health check: ok:") for line in time.lines)


def test_after_the_url_answers_the_container_is_looked_at_on_its_own_cadence(
    server: tuple[str, type[_Handler]],
) -> None:
    """Once answered, only the container is watched: every WATCH_AFTER_ANSWER_S (not at the
    probe's faster interval, not once at the window's end), so an exit is seen one look on."""
    url, handler = server
    handler.answering = True
    time = Time()
    looked_at: list[float] = []
    exits_at = 3.5 * WATCH_AFTER_ANSWER_S  # between the 4th and the 5th look

    def info() -> ContainerInfo:
        looked_at.append(time.now)
        return RUNNING if time.now < exits_at else EXITED

    assert Schedule().fast_s < WATCH_AFTER_ANSWER_S  # else this could not tell them apart
    result = time.watch(info, Target(health_url=url, stable_s=3.0, deadline_s=30))
    assert not result.ok
    assert "exited with code 1" in result.reason
    assert [a.ok for a in result.attempts] == [True]  # answered at the first look
    gaps = [later - earlier for earlier, later in zip(looked_at, looked_at[1:], strict=False)]
    assert gaps == pytest.approx([WATCH_AFTER_ANSWER_S] * 4)
    assert looked_at[-1] == pytest.approx(4 * WATCH_AFTER_ANSWER_S)


def test_exit_inside_the_window_is_not_healthy(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.answering = True
    time = Time()
    states = iter([RUNNING] * 3)
    result = time.watch(
        lambda: next(states, EXITED),
        Target(health_url=url, stable_s=3.0, deadline_s=30),
    )
    assert not result.ok
    assert "exited with code 1" in result.reason
    assert result.attempts
    assert result.attempts[0].ok
    assert result.stability["up_for_seconds"] < 3.0


def test_a_restart_after_answering_asks_again(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.answering = True
    time = Time()
    restarted = replace(RUNNING, id="c2")
    states = iter([RUNNING, restarted])
    result = time.watch(
        lambda: next(states, restarted),
        Target(health_url=url, stable_s=0.0, deadline_s=30),
    )
    assert result.ok
    assert result.stability["container_id"] == "c1"  # stable_s 0: the first look suffices


def test_backs_off_after_the_fast_period_and_stops_at_the_deadline(
    server: tuple[str, type[_Handler]],
) -> None:
    url, _ = server
    time = Time()
    result = time.watch(
        lambda: RUNNING,
        Target(health_url=url, stable_s=0.0, deadline_s=10),
        Schedule(fast_s=0.5, fast_for_s=1.0, initial_s=1.0, factor=2.0, max_s=4.0),
    )
    assert not result.ok
    assert "did not answer 200 within 10s" in result.reason
    assert time.sleeps[:5] == [0.5, 0.5, 1.0, 2.0, 4.0]
    assert time.now == pytest.approx(10.0)


def test_started_at_parsing() -> None:
    assert started_epoch("0001-01-01T00:00:00Z") is None
    assert started_epoch("") is None
    epoch = started_epoch("2026-01-01T00:00:01.5Z")
    assert epoch == pytest.approx(T0 + 1.5, abs=1e-3)


def test_an_exited_container_fails_at_once_and_the_log_does_not_claim_a_timeout(
    server: tuple[str, type[_Handler]],
) -> None:
    url, _ = server
    time = Time()
    result = time.watch(lambda: EXITED, Target(health_url=url, stable_s=0.0, deadline_s=60))
    assert not result.ok
    assert time.now == 0.0  # no wait for the deadline
    health = [line for line in time.lines if line.startswith("health check:")]
    assert health == [f"health check: failed: {url} did not answer 200 before the container failed"]
