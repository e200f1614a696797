"""Queue a step: task names, priorities and routing, shared by the API and the worker.

Producers (the API's submit/approve/retry, the worker between steps, the sweeper) all
publish through ``enqueue``; only the worker entry point imports the task bodies.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

from celery import Celery

from moonmind.config import Settings
from moonmind.workflows.orchestrator.celery_app import create_celery
from moonmind.workflows.orchestrator.enums import Priority, StepName

TASK_NAMES = {step: f"orchestrator.{step.value}" for step in StepName}
PRIORITY_VALUES = {Priority.NORMAL: 0, Priority.HIGH: 9}


@dataclass(frozen=True)
class QueuedStep:
    """A step whose PENDING task-state row is committed and whose message is still to send."""

    run_id: uuid.UUID
    step: StepName
    priority: Priority
    task_id: str


def new_task_id() -> str:
    return str(uuid.uuid4())


_producers: dict[tuple[str, str], Celery] = {}
_lock = threading.Lock()


def producer(settings: Settings) -> Celery:
    """One Celery app per broker and queue, made on first use (a producer only)."""
    key = (settings.broker_url, settings.queue)
    with _lock:
        if key not in _producers:
            _producers[key] = create_celery(settings)
        return _producers[key]


def enqueue(settings: Settings, queued: QueuedStep, *, countdown: float | None = None) -> None:
    """Publish a step; its task id is the one its PENDING task-state row already names."""
    producer(settings).send_task(
        TASK_NAMES[queued.step],
        args=[str(queued.run_id)],
        task_id=queued.task_id,
        countdown=countdown,
        queue=settings.queue,
        routing_key=settings.queue,
        priority=PRIORITY_VALUES[queued.priority],
    )
