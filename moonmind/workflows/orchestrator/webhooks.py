"""Run events for ``[[orchestrator.webhooks]]`` receivers: what is sent, and its signature.

When a run's status changes (``repositories.transition_run``), :func:`emit` adds one
``orchestrator_webhook_deliveries`` row per receiver that wants the event, in the same
transaction: the event exists exactly when the status change does. Nothing is sent from
here; a worker thread (``webhook_delivery``) posts the rows, so a slow or dead receiver
never holds a run, an API request or a step.

The body is JSON; ``X-MoonMind-Signature: sha256=<hex>`` is the HMAC-SHA256 of the raw
body bytes under the receiver's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api_service.db.models import OrchestratorRun, WebhookDelivery
from moonmind.config import SettingsError, get_settings
from moonmind.webhook_settings import WebhookConfig
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.plan import context_of

log = logging.getLogger("moonmind.orchestrator")

SIGNATURE_HEADER = "X-MoonMind-Signature"
EVENT_HEADER = "X-MoonMind-Event"
DELIVERY_HEADER = "X-MoonMind-Delivery"
TIMESTAMP_HEADER = "X-MoonMind-Timestamp"

EVENT_OF_STATUS = {
    RunStatus.AWAITING_APPROVAL: "run.awaiting_approval",
    RunStatus.SUCCEEDED: "run.succeeded",
    RunStatus.FAILED: "run.failed",
    RunStatus.ROLLED_BACK: "run.rolled_back",
    RunStatus.CANCELLED: "run.cancelled",
}


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for these exact bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _receivers(event: str) -> list[WebhookConfig]:
    try:
        hooks = get_settings().webhooks
    except SettingsError:  # a broken config is reported where it is loaded, not here
        return []
    return [hook for hook in hooks if hook.wants(event)]


def emit(session: Session, run_id: uuid.UUID, values: Mapping[str, Any], result: Any) -> bool:
    """Queue the event of a status change for its receivers; whether the run moved.

    ``values`` are the columns the transition wrote (its status, message, times) and
    ``result`` is its compare-and-set UPDATE's result: no row changed, no event."""
    moved = bool(getattr(result, "rowcount", 0))
    status = values.get("status")
    event = EVENT_OF_STATUS.get(status) if moved and isinstance(status, RunStatus) else None
    receivers = _receivers(event) if event is not None else []
    if event is None or not receivers:
        return moved
    run = session.get(OrchestratorRun, run_id)
    if run is None:
        return moved
    now = datetime.now(UTC)
    for hook in receivers:
        delivery_id = uuid.uuid4()
        body = payload(run, event, values, delivery_id, now)
        session.add(
            WebhookDelivery(
                id=delivery_id,
                run_id=run_id,
                event=event,
                url=hook.url,
                body=body,
                status="pending",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
        )
    session.flush()
    return moved


def payload(
    run: OrchestratorRun,
    event: str,
    values: Mapping[str, Any],
    delivery_id: uuid.UUID,
    now: datetime,
) -> str:
    """The JSON body: the event, the run in a few fields, and links to its page and API."""
    base = get_settings().public_url.rstrip("/")
    message = values.get("message")
    body = {
        "event": event,
        "delivery_id": str(delivery_id),
        "occurred_at": now.isoformat(),
        "run_id": str(run.id),
        "service": run.target_service,
        "project": context_of(run.action_plan).project,
        "status": str(values["status"].value),
        "requested_by": run.requested_by,
        "instruction": run.instruction,
        "dry_run": bool(run.dry_run),  # a dry run changed nothing: its diff is only a plan
        "message": message if isinstance(message, str) else run.message,
        "links": {
            "run_page": f"{base}/runs/{run.id}",
            "api": f"{base}/orchestrator/runs/{run.id}",
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def list_deliveries(session: Session, run_id: uuid.UUID) -> list[WebhookDelivery]:
    """A run's deliveries, oldest first (the run detail shows them)."""
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.run_id == run_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    )
    return list(session.scalars(stmt))
