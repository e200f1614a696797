"""Structured event logs: one JSON object per line, always with run_id and step."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

EVENT_LOGGER = "moonmind.orchestrator.events"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        return json.dumps(payload, default=str)


def event_logger() -> logging.Logger:
    """The logger for run events, writing JSON lines to stderr and nowhere else."""
    logger = logging.getLogger(EVENT_LOGGER)
    if not any(isinstance(h.formatter, JsonLineFormatter) for h in logger.handlers):
        # sys.__stderr__: Celery workers replace sys.stderr with a logging proxy that
        # would wrap each JSON line in its own prefix.
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(JsonLineFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log_event(run_id: object, step: str, event: str, **fields: Any) -> None:
    event_logger().info(
        event, extra={"fields": {"event": event, "run_id": str(run_id), "step": step, **fields}}
    )
