"""Posting webhook deliveries, from a thread of the worker's main process.

A :class:`WebhookDispatcher` takes due ``pending`` rows (a compare-and-set that also
leases the row, so two workers never send the same attempt and a row whose sender died
is taken again after :data:`LEASE_SECONDS`), posts each from a small thread pool with
short timeouts, and records the attempt. A failed attempt is tried again after a backoff
(1 s, 2 s, 4 s, ... capped at :data:`MAX_BACKOFF_SECONDS`), :data:`MAX_ATTEMPTS` times in
all; a 4xx answer other than 408 or 429 fails it at once. Steps never wait for any of it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from api_service.db.base import Database
from api_service.db.models import WebhookDelivery
from moonmind.config import Settings
from moonmind.webhook_settings import display_url
from moonmind.workflows.orchestrator.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

log = logging.getLogger("moonmind.orchestrator")

POLL_SECONDS = 0.25
SENDERS = 4
MAX_ATTEMPTS = 5
BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
LEASE_SECONDS = 60.0
TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
SENDER_PREFIX = "webhook-"


class _QuietSenders(logging.Filter):
    """httpx logs each request's full URL (a query string may hold a token): not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName or not record.threadName.startswith(SENDER_PREFIX)


logging.getLogger("httpx").addFilter(_QuietSenders())


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: an HTTP status, or an error that got no answer."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def final(self) -> bool:
        """No point trying again: the receiver refused the request itself."""
        code = self.status_code
        return code is not None and 400 <= code < 500 and code not in (408, 429)


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return float(min(BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


def take_due(db: Database, limit: int, now: datetime | None = None) -> list[uuid.UUID]:
    """Lease up to ``limit`` due deliveries for this process; their ids."""
    now = now or datetime.now(UTC)
    taken: list[uuid.UUID] = []
    with db.session() as session:
        due = session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
        for delivery_id in due:
            result = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                taken.append(delivery_id)
    return taken


def post(url: str, secret: str, event: str, delivery_id: uuid.UUID, body: bytes) -> Attempt:
    """One POST of the signed body; never raises."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "moonmind-orchestrator",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: event,
        DELIVERY_HEADER: str(delivery_id),
        TIMESTAMP_HEADER: str(int(time.time())),
    }
    try:
        with (
            httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client,
            # The status line is the answer: the body is never read, so a receiver that
            # trickles one cannot hold a sender (or outlive the row's lease).
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            code = response.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}".replace(url, display_url(url))
        return Attempt(None, error[:500])
    return Attempt(code, None if 200 <= code < 300 else f"HTTP {code}")


def deliver(db: Database, settings: Settings, delivery_id: uuid.UUID) -> Attempt:
    """Send one leased delivery once and record the attempt."""
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None or row.status != "pending":
            return Attempt(None, "gone")
        url, event, body = row.url, row.event, row.body.encode()
    hook = next((h for h in settings.webhooks if h.url == url), None)
    if hook is None:
        attempt = Attempt(None, "no [[orchestrator.webhooks]] entry for this url in the worker")
    else:
        attempt = post(url, hook.secret.get_secret_value(), event, delivery_id, body)
    _record(db, delivery_id, attempt, give_up=hook is None)
    if not attempt.delivered:
        log.warning("webhook %s to %s: %s", event, display_url(url), attempt.error)
    return attempt


def _record(db: Database, delivery_id: uuid.UUID, attempt: Attempt, give_up: bool) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return
        row.attempts += 1
        row.last_attempt_at = now
        row.response_status = attempt.status_code
        row.last_error = attempt.error
        if attempt.delivered:
            row.status, row.delivered_at = "delivered", now
        elif give_up or attempt.final or row.attempts >= MAX_ATTEMPTS:
            row.status = "failed"
        else:
            row.next_attempt_at = now + timedelta(seconds=backoff(row.attempts))


class WebhookDispatcher(threading.Thread):
    """Takes due deliveries every :data:`POLL_SECONDS` and hands them to :data:`SENDERS`
    daemon threads (a receiver that hangs holds one sender, never the worker's exit)."""

    def __init__(self, database: Callable[[], Database], settings: Settings) -> None:
        super().__init__(name="orchestrator-webhooks", daemon=True)
        self._database = database
        self._settings = settings
        self._stop_event = threading.Event()
        self._queue: queue.Queue[uuid.UUID] = queue.Queue()
        self._busy = 0  # taken and not yet recorded
        self._lock = threading.Lock()

    def run(self) -> None:
        for number in range(SENDERS):
            threading.Thread(
                target=self._sender, name=f"{SENDER_PREFIX}{number}", daemon=True
            ).start()
        while not self._stop_event.wait(POLL_SECONDS):
            try:
                self._round()
            except Exception:  # the database may be away for a moment; next round
                log.exception("webhook round failed")

    def _round(self) -> None:
        with self._lock:
            free = SENDERS - self._busy
        if free <= 0:
            return
        for delivery_id in take_due(self._database(), free):
            with self._lock:
                self._busy += 1
            self._queue.put(delivery_id)

    def _sender(self) -> None:
        while True:
            delivery_id = self._queue.get()
            try:
                deliver(self._database(), self._settings, delivery_id)
            except Exception:
                log.exception("webhook delivery %s failed", delivery_id)
            finally:
                with self._lock:
                    self._busy -= 1

    def stop(self) -> None:
        self._stop_event.set()


def start_dispatcher(database: Callable[[], Database], settings: Settings) -> None:
    """Start posting deliveries in this process, if any webhook is configured."""
    if settings.webhooks:
        WebhookDispatcher(database, settings).start()
