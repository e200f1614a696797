from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from moonmind.config import Settings
from moonmind.workflows.orchestrator import local_transport
from moonmind.workflows.orchestrator.celery_app import create_celery
from moonmind.workflows.orchestrator.celeryconfig import (
    FILESYSTEM_POLLING_INTERVAL_S,
    MAX_PRIORITY,
    celery_config,
)
from moonmind.workflows.orchestrator.dispatch import QueuedStep, enqueue, producer
from moonmind.workflows.orchestrator.enums import Priority, StepName

RABBITMQ_CONSUMER_TIMEOUT_S = 30 * 60


def test_delivery_guarantees_on_rabbitmq() -> None:
    config = celery_config(
        Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", queue="orchestrator.run")
    )
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"]["confirm_publish"] is True
    assert config["task_time_limit"] < RABBITMQ_CONSUMER_TIMEOUT_S
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    (queue,) = config["task_queues"]
    assert queue.name == "orchestrator.run"
    assert queue.queue_arguments == {"x-max-priority": MAX_PRIORITY}
    assert config["task_default_queue"] == "orchestrator.run"


def test_local_transport_keeps_everything_under_its_folder(tmp_path: Path) -> None:
    config = celery_config(Settings(broker_folder=str(tmp_path / "celery")))
    options = config["broker_transport_options"]
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert Path(options[key]).is_relative_to(tmp_path / "celery")
        assert Path(options[key]).is_dir()


def test_local_transport_polls_for_new_messages_every_10_ms(tmp_path: Path) -> None:
    """A step's hand-off on the embedded default costs milliseconds, not kombu's 1 s poll."""
    app = create_celery(Settings(broker_folder=str(tmp_path / "celery")))
    with app.connection_for_write() as connection:
        assert connection.transport.polling_interval == FILESYSTEM_POLLING_INTERVAL_S == 0.01


def test_step_time_limit_must_stay_under_the_consumer_timeout() -> None:
    with pytest.raises(ValueError, match="step_time_limit_seconds"):
        Settings(step_time_limit_seconds=RABBITMQ_CONSUMER_TIMEOUT_S)


def test_local_transport_is_the_atomic_one(tmp_path: Path) -> None:
    app = create_celery(Settings(broker_folder=str(tmp_path / "celery")))
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, local_transport.Transport)


def test_each_local_broker_folder_gets_its_own_producer(tmp_path: Path) -> None:
    """A step queued under other settings' folder lands in that folder, not in the folder
    of the first producer this process made."""
    first, second = (Settings(broker_folder=str(tmp_path / name)) for name in ("a", "b"))
    for settings in (first, second):
        enqueue(settings, QueuedStep(uuid.uuid4(), StepName.ANALYZE, Priority.NORMAL, "t"))
    for name in ("a", "b"):
        assert len(list((tmp_path / name / "queue").glob("*.msg"))) == 1, name
    assert producer(first) is not producer(second)
    assert producer(first) is producer(Settings(broker_folder=str(tmp_path / "a")))
