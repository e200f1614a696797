"""StatsD counters and timers. Unset or unreachable StatsD is a no-op and never fails a run."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

log = logging.getLogger(__name__)


class _Client(Protocol):
    def incr(self, stat: str, count: int = 1, rate: float = 1) -> None: ...
    def timing(self, stat: str, delta: float, rate: float = 1) -> None: ...


class Metrics:
    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.prefix = prefix
        self._client: _Client | None = None
        if not host:
            return
        try:
            import statsd

            self._client = statsd.StatsClient(host, port, prefix=prefix or None)
        except Exception as exc:  # DNS failure, bad port: keep running without metrics
            log.warning("statsd disabled: cannot reach %s:%s (%s)", host, port, exc)

    def incr(self, name: str, count: int = 1) -> None:
        self._send("incr", name, count)

    def timing_ms(self, name: str, milliseconds: float) -> None:
        self._send("timing", name, milliseconds)

    def _send(self, method: str, name: str, value: float) -> None:
        if self._client is None:
            return
        try:
            getattr(self._client, method)(name, value)
        except Exception as exc:  # a metrics hiccup must never surface in a run
            log.debug("statsd %s %s dropped: %s", method, name, exc)


_NOOP = Metrics("", 0, "")


@lru_cache(maxsize=8)
def metrics_from_settings(host: str, port: int, prefix: str) -> Metrics:
    """One client (one UDP socket) per destination and process, not one per event."""
    return Metrics(host, port, prefix) if host else _NOOP
