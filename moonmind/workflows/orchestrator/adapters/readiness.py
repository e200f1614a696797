"""Readiness of a restarted service: HTTP health and container stability, side by side.

One loop watches both. The container's stability is counted from its own start
(``State.StartedAt``), so the window runs while the HTTP probe waits for the service to
answer, never before it. The probe polls at a short fixed interval first and backs off
after; every attempt and the stability evidence are kept for the audit trail.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo
from moonmind.workflows.orchestrator.adapters.probe import Attempt, Clock, Sleep, _assess, _Prober

_REQUEST_TIMEOUT_S = 1.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: loading the CA bundle costs
    ~20 ms, which every verify's first probe would wait for otherwise."""
    return httpx.create_ssl_context()


# Once the URL has answered, the container is looked at this often until its window ends.
WATCH_AFTER_ANSWER_S = 0.1


@dataclass(frozen=True)
class Schedule:
    """When to look again: ``fast_s`` apart for ``fast_for_s``, then growing by ``factor``."""

    fast_s: float = 0.02
    fast_for_s: float = 3.0
    initial_s: float = 0.2
    factor: float = 2.0
    max_s: float = 5.0

    def delays(self, elapsed: float, slow_step: int) -> float:
        if elapsed < self.fast_for_s:
            return self.fast_s
        return min(self.initial_s * self.factor**slow_step, self.max_s)


@dataclass(frozen=True)
class Target:
    """What "ready" means for one service."""

    health_url: str | None
    expected_status: int = 200
    require_healthy: bool = False
    stable_s: float = 3.0
    deadline_s: float = 120.0


@dataclass
class Readiness:
    """The verdict with its evidence: each probe attempt and how long the container stayed up."""

    ok: bool = False
    reason: str = "not checked"
    attempts: list[Attempt] = field(default_factory=list)
    stability: dict[str, Any] = field(default_factory=dict)
    info: ContainerInfo | None = None  # the container as last seen (no re-read after)

    def evidence(self) -> dict[str, Any]:
        return {
            "probe_attempts": len(self.attempts),
            "attempts": [asdict(a) for a in self.attempts],
            "stability": self.stability,
        }


def started_epoch(started_at: str) -> float | None:
    """Docker's RFC3339Nano ``StartedAt`` as a Unix time (None when never started)."""
    if not started_at or started_at.startswith("0001-"):
        return None
    base, _, frac = started_at.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{base}.{(frac or '0')[:6].ljust(6, '0')}+00:00").timestamp()
    except ValueError:
        return None


def _incarnation(info: ContainerInfo) -> tuple[str, str, int]:
    return info.id, info.started_at, info.restart_count


@dataclass
class _Watch:
    target: Target
    prober: _Prober | None
    on_line: Callable[[str], None]
    wall: Clock
    result: Readiness = field(default_factory=Readiness)
    answered_by: tuple[str, str, int] | None = None  # the incarnation the URL answered from
    last_reason: str = ""
    good: bool = False  # the last look found it running (and Docker-healthy if required)

    def look(self, info: ContainerInfo | None) -> bool | None:
        """One observation: True ready, False failed for good, None not yet."""
        self.result.info = info
        good, terminal, reason = _assess(info, self.target.require_healthy)
        if reason != self.last_reason:
            self.on_line(f"container: {reason}")
            self.last_reason = reason
        self.result.reason = reason
        self.good = good
        if terminal or info is None:
            return False if terminal else None
        if not good:
            self.answered_by = None
            return None
        key = _incarnation(info)
        if self.answered_by not in (None, key):
            self.answered_by = None  # restarted since it answered: ask again
        if self.prober is not None and self.answered_by is None:
            attempt = self.prober.attempt(len(self.result.attempts) + 1)
            self.result.attempts.append(attempt)
            self.on_line(_attempt_line(attempt))
            if attempt.ok:
                self.answered_by = key
        return self._settle(info, key)

    def _settle(self, info: ContainerInfo, key: tuple[str, str, int]) -> bool | None:
        began = started_epoch(info.started_at)
        up_for = max(self.wall() - began, 0.0) if began is not None else 0.0
        self.result.stability = {
            "container_id": info.id,
            "started_at": info.started_at,
            "restart_count": info.restart_count,
            "up_for_seconds": round(up_for, 3),
            "required_seconds": self.target.stable_s,
        }
        if self.prober is not None and self.answered_by != key:
            return None
        return True if up_for >= self.target.stable_s else None

    def until_stable(self) -> float | None:
        """Seconds left in the stability window once the URL has answered (else None)."""
        if self.answered_by is None and self.prober is not None:
            return None
        left = self.target.stable_s - float(self.result.stability.get("up_for_seconds", 0.0))
        return max(left, 0.001)


def _attempt_line(attempt: Attempt) -> str:
    outcome = attempt.status_code if attempt.status_code is not None else attempt.error
    return (
        f"probe #{attempt.number} at {attempt.at} (+{attempt.elapsed_s:.3f}s): "
        f"{outcome} {'ok' if attempt.ok else 'not ready'}"
    )


def watch_ready(
    get_info: Callable[[], ContainerInfo | None],
    target: Target,
    schedule: Schedule,
    on_line: Callable[[str], None],
    *,
    clock: Clock = time.monotonic,
    wall: Clock = time.time,
    sleep: Sleep = time.sleep,
) -> Readiness:
    """Ready once the URL answered from the current container and it has been up
    ``stable_s`` since its start; an exited container fails at once."""
    start = clock()
    deadline = start + target.deadline_s
    with httpx.Client(follow_redirects=False, verify=_tls()) as client:
        prober = None
        if target.health_url:
            prober = _Prober(
                client, target.health_url, target.expected_status, start, deadline,
                _REQUEST_TIMEOUT_S, clock,
            )  # fmt: skip
        watch = _Watch(target, prober, on_line, wall)
        slow_step = 0
        while True:
            verdict = watch.look(get_info())
            if verdict is not None:
                return _verdict(watch, verdict)
            now = clock()
            if now >= deadline:
                return _verdict(watch, False, timed_out=True)
            delay = schedule.delays(now - start, slow_step)
            left = watch.until_stable()  # answered: only the container is watched now
            delay = min(max(delay, WATCH_AFTER_ANSWER_S), left) if left is not None else delay
            slow_step += 0 if now - start < schedule.fast_for_s else 1
            sleep(min(delay, deadline - now))


def _verdict(watch: _Watch, ok: bool, *, timed_out: bool = False) -> Readiness:
    """Settle the result and write the two audit lines: the container, then the URL."""
    result, target = watch.result, watch.target
    result.ok = ok
    stability = result.stability
    up = float(stability.get("up_for_seconds", 0.0))
    container_ok = watch.good and up >= target.stable_s
    where = (
        f"container {str(stability['container_id'])[:12]} started {stability['started_at']}, "
        f"up {up:g}s (window {target.stable_s:g}s)"
        if stability
        else "no running container"
    )
    watch.on_line(
        f"container check: {'ok' if container_ok else 'failed'}: {result.reason}; {where}"
    )
    answered = watch.answered_by is not None
    if target.health_url:
        said = "answered" if answered else "did not answer"
        within = (
            ""
            if answered
            else f" within {target.deadline_s:g}s"
            if timed_out
            else " before the container failed"
        )
        watch.on_line(
            f"health check: {'ok' if answered else 'failed'}: {target.health_url} {said} "
            f"{target.expected_status}{within}"
        )
    if ok:
        url = (
            f"{target.health_url} answered {target.expected_status}; " if target.health_url else ""
        )
        result.reason = (
            f"{url}up {up:g}s since its start (>= {target.stable_s:g}s): {result.reason}"
        )
    elif timed_out and container_ok and target.health_url:
        result.reason = (
            f"{target.health_url} did not answer {target.expected_status} "
            f"within {target.deadline_s:g}s: {result.reason}"
        )
    elif timed_out:
        result.reason = f"not ready within {target.deadline_s:g}s: {result.reason}"
    return result
