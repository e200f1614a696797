"""Celery settings for the dedicated orchestrator worker.

Late acks + reject-on-lost + prefetch 1: a step whose worker dies is delivered again
(steps are idempotent, the database is the truth). Time limits stay below RabbitMQ's
30-minute consumer timeout so the broker never cancels a healthy consumer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Exchange, Queue

from moonmind.config import Settings
from moonmind.workflows.orchestrator import local_transport

MAX_PRIORITY = 9
# How often the embedded filesystem transport looks for a new message (kombu's default: 1 s).
FILESYSTEM_POLLING_INTERVAL_S = 0.01


def celery_config(settings: Settings) -> dict[str, Any]:
    name = settings.worker_queue  # "<queue>.<host>" for a worker of one Docker host
    queue = Queue(
        name,
        Exchange(name, type="direct"),
        routing_key=name,
        queue_arguments={"x-max-priority": MAX_PRIORITY},
    )
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_queues": (queue,),
        "task_default_queue": name,
        "task_default_exchange": name,
        "task_default_routing_key": name,
        "task_routes": {"orchestrator.*": {"queue": name}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.step_time_limit_seconds,
        "task_soft_time_limit": max(settings.step_time_limit_seconds - 60, 30),
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"confirm_publish": True, "priority_steps": list(range(10))},
        "task_queue_max_priority": MAX_PRIORITY,
        "task_default_priority": 0,
    }
    if settings.broker_is_local:
        folder = Path(settings.broker_folder).expanduser().resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # kombu's filesystem transport, with messages renamed into place once written.
        config["broker_transport"] = local_transport.Transport
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": FILESYSTEM_POLLING_INTERVAL_S,
        }
    return config
