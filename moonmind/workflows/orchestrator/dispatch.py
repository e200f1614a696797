"""Queue a step: task names, priorities and routing, shared by the API and the worker.

Producers (the API's submit/approve/retry, the worker between steps, the sweeper) all
publish through ``enqueue``; only the worker entry point imports the task bodies.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from api_service.db.models import OrchestratorRun
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
    # The queue of the run's Docker host, fixed at submission (None: the plain queue).
    queue: str | None = None


def new_task_id() -> str:
    return str(uuid.uuid4())


def next_message(run: OrchestratorRun, step: StepName, task_id: str | None = None) -> QueuedStep:
    """The message that sends ``step`` of ``run`` to the run's queue (a fresh task id unless
    given)."""
    return QueuedStep(run.id, step, run.priority, task_id or new_task_id(), queue_of(run))


def queue_of(run: OrchestratorRun) -> str | None:
    """The queue a run's steps go to, as its service context recorded it at submission."""
    context = run.action_plan.service_context if run.action_plan is not None else None
    queue = (context or {}).get("queue")
    return str(queue) if queue else None


_producers: dict[tuple[str, ...], Celery] = {}
_lock = threading.Lock()


def producer(settings: Settings) -> Celery:
    """One Celery app per broker and queue, made on first use (a producer only). On the
    embedded default the broker is a folder: one app per folder, as resolved now (a
    relative ``broker_folder`` names another folder from another working directory)."""
    key: tuple[str, ...] = (settings.broker_url, settings.worker_queue)
    if settings.broker_is_local:
        key += (str(Path(settings.broker_folder).expanduser().resolve()),)
    with _lock:
        if key not in _producers:
            _producers[key] = create_celery(settings)
        return _producers[key]


def enqueue(settings: Settings, queued: QueuedStep, *, countdown: float | None = None) -> None:
    """Publish a step; its task id is the one its PENDING task-state row already names.

    It goes to the run's queue (its Docker host's worker), whoever publishes it."""
    queue = queued.queue or settings.queue
    producer(_for_queue(settings, queue)).send_task(
        TASK_NAMES[queued.step],
        args=[str(queued.run_id)],
        task_id=queued.task_id,
        countdown=countdown,
        queue=queue,
        routing_key=queue,
        priority=PRIORITY_VALUES[queued.priority],
    )


def _for_queue(settings: Settings, queue: str) -> Settings:
    if settings.worker_queue == queue:
        return settings
    return settings.model_copy(update={"queue": queue, "host": ""})


CONSUMERS_SEEN_TTL_S = 5.0  # a queue seen consumed this recently is not asked again
_consumed_at: dict[tuple[str, str], float] = {}


def consumer_count(settings: Settings, queue: str) -> int | None:
    """How many workers consume ``queue`` (RabbitMQ); None when unknown or seen consumed
    within the last few seconds (one broker round trip per queue, not per POST).

    The filesystem transport has one host and no consumer registry: None."""
    if settings.broker_is_local:
        return None
    key = (settings.broker_url, queue)
    if time.monotonic() - _consumed_at.get(key, -CONSUMERS_SEEN_TTL_S) < CONSUMERS_SEEN_TTL_S:
        return None
    app = producer(_for_queue(settings, queue))
    try:
        with app.pool.acquire(block=True, timeout=5) as conn:  # the publish's connection
            with conn.channel() as channel:  # a failed passive declare closes its channel
                declared = channel.queue_declare(queue=queue, passive=True)
    except Exception:  # the broker is away, or the queue is not declared yet
        return None
    if declared.consumer_count:
        _consumed_at[key] = time.monotonic()
    return int(declared.consumer_count)
