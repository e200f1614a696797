"""Verification probes: HTTP health with exponential backoff, and container stability.

Both are deadline-bound and report every attempt/check so the audit trail shows exactly
why a service was (or was not) declared healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_MIN_FINAL_REQUEST_TIMEOUT_S = 1.0
_TERMINAL_STATUSES = frozenset({"exited", "dead"})


@dataclass(frozen=True)
class Attempt:
    """One HTTP probe attempt, as recorded in the run's audit log."""

    number: int
    at: str
    elapsed_s: float
    status_code: int | None
    error: str | None
    ok: bool


@dataclass
class ProbeResult:
    """Outcome of a probe: ok if any attempt succeeded before the deadline."""

    ok: bool
    attempts: list[Attempt] = field(default_factory=list)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def probe_http(
    url: str,
    *,
    expected_status: int = 200,
    deadline_s: float,
    initial_delay_s: float = 0.2,
    factor: float = 2.0,
    max_delay_s: float = 5.0,
    request_timeout_s: float = 3.0,
    on_attempt: Callable[[Attempt], None] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> ProbeResult:
    """GET ``url`` until it answers ``expected_status`` or ``deadline_s`` has passed.

    Delays grow geometrically (capped at ``max_delay_s``); the last sleep is cut short so
    the final attempt happens at the deadline rather than after it.
    """
    start = clock()
    deadline = start + deadline_s
    delay = initial_delay_s
    result = ProbeResult(ok=False)
    with httpx.Client(follow_redirects=False) as client:
        prober = _Prober(client, url, expected_status, start, deadline, request_timeout_s, clock)
        while True:
            attempt = prober.attempt(len(result.attempts) + 1)
            result.attempts.append(attempt)
            if on_attempt is not None:
                on_attempt(attempt)
            if attempt.ok:
                result.ok = True
                return result
            remaining = deadline - clock()
            if remaining <= 0:
                return result
            sleep(min(delay, remaining))
            delay = min(delay * factor, max_delay_s)


@dataclass(frozen=True)
class _Prober:
    """Fixed parameters of one probe run, so each attempt is a one-argument call."""

    client: httpx.Client
    url: str
    expected_status: int
    start: float
    deadline: float
    request_timeout_s: float
    clock: Clock

    def attempt(self, number: int) -> Attempt:
        """Issue one GET whose timeout never runs (much) past the deadline."""
        remaining = self.deadline - self.clock()
        timeout = min(self.request_timeout_s, max(remaining, _MIN_FINAL_REQUEST_TIMEOUT_S))
        at = _now_iso()
        status: int | None = None
        error: str | None = None
        try:
            status = self.client.get(self.url, timeout=timeout).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ok = status == self.expected_status
        if status is not None and not ok:
            error = f"unexpected status {status} (expected {self.expected_status})"
        return Attempt(number, at, round(self.clock() - self.start, 3), status, error, ok)


@dataclass
class _Stability:
    """Tracks how long the same container has continuously looked the same."""

    since: float | None = None
    key: tuple[str, str, int, str] | None = None

    def observe(self, now: float, key: tuple[str, str, int, str]) -> float:
        """Return how long ``key`` has been observed unchanged (0 on change)."""
        if key != self.key or self.since is None:
            self.key, self.since = key, now
        return now - self.since

    def reset(self) -> None:
        self.since, self.key = None, None


def _assess(info: ContainerInfo | None, require_healthy: bool) -> tuple[bool, bool, str]:
    """(good, terminal, reason) for one observation; terminal states won't fix themselves."""
    if info is None:
        return False, False, "no container for the service"
    base = f"{info.name}: status={info.status} restarts={info.restart_count} health={info.health}"
    if info.status in _TERMINAL_STATUSES:
        oom = ", OOM-killed" if info.oom_killed else ""
        return False, True, f"{base}; exited with code {info.exit_code}{oom}"
    if info.status != "running":
        return False, False, base
    if require_healthy and info.health is None:
        return False, True, f"{base}; health required but the container has no healthcheck"
    if require_healthy and info.health != "healthy":
        return False, False, base
    return True, False, base


def wait_container_stable(
    get_info: Callable[[], ContainerInfo | None],
    *,
    require_healthy: bool,
    deadline_s: float,
    stable_for_s: float = 2.0,
    poll_s: float = 0.5,
    on_check: Callable[[str], None],
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> tuple[bool, str]:
    """Wait until the container runs (and is healthy if required) without restarting.

    Success needs the same container, same start time and same restart count for
    ``stable_for_s``. A terminal state (exited, or no healthcheck when one is required)
    that persists equally long fails early instead of burning the whole deadline.
    """
    start = clock()
    deadline = start + deadline_s
    good_run, bad_run = _Stability(), _Stability()
    reason = "not checked"
    while True:
        info = get_info()
        good, terminal, reason = _assess(info, require_healthy)
        on_check(reason)
        now = clock()
        key = _stability_key(info)
        if good:
            bad_run.reset()
            if good_run.observe(now, key) >= stable_for_s:
                return True, f"stable for {stable_for_s:g}s: {reason}"
        else:
            good_run.reset()
            held = bad_run.observe(now, key) if terminal else 0.0
            if terminal and held >= stable_for_s:
                return False, reason
        remaining = deadline - now
        if remaining <= 0:
            return False, f"not stable within {deadline_s:g}s: {reason}"
        sleep(min(poll_s, remaining))


def _stability_key(info: ContainerInfo | None) -> tuple[str, str, int, str]:
    """Identity of a container incarnation: any restart or recreate changes it."""
    if info is None:
        return "", "", -1, ""
    return info.id, info.started_at, info.restart_count, info.status
