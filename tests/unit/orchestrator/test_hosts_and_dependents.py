"""Routing by Docker host (queues, profiles) and the dependents a plan lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonmind.config import Settings
from moonmind.workflows.orchestrator.action_plan import dependents_of
from moonmind.workflows.orchestrator.celeryconfig import celery_config
from moonmind.workflows.orchestrator.service_profiles import load_profiles

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_a_worker_without_a_host_consumes_the_plain_queue() -> None:
    settings = Settings(broker_url=AMQP, queue="orchestrator.run")
    assert settings.worker_queue == "orchestrator.run"
    assert settings.host_queue(None) == "orchestrator.run"


def test_a_worker_of_a_host_declares_its_own_priority_queue() -> None:
    settings = Settings(broker_url=AMQP, queue="orchestrator.run", host="east")
    config = celery_config(settings)
    (queue,) = config["task_queues"]
    assert queue.name == "orchestrator.run.east"
    assert queue.queue_arguments == {"x-max-priority": 9}
    assert config["task_default_queue"] == "orchestrator.run.east"


def test_a_service_names_its_host_in_config_toml(tmp_path: Path) -> None:
    config = {"services": {"api": {"image": "x"}, "db": {"image": "y"}}}
    profiles = load_profiles(config, workspace=tmp_path, overrides={"api": {"host": "east"}})
    assert profiles["api"].host == "east"
    assert profiles["db"].host is None


def test_a_host_name_that_cannot_be_a_queue_suffix_is_refused(tmp_path: Path) -> None:
    config = {"services": {"api": {"image": "x"}}}
    with pytest.raises(ValueError, match="host must be"):
        load_profiles(config, workspace=tmp_path, overrides={"api": {"host": "a b"}})


def test_dependents_come_from_depends_on_in_list_and_mapping_form(tmp_path: Path) -> None:
    config = {
        "services": {
            "app": {"image": "a"},
            "web": {"image": "w", "depends_on": ["app"]},
            "worker": {"image": "k", "depends_on": {"app": {"condition": "service_started"}}},
            "other": {"image": "o", "depends_on": ["web"]},
        }
    }
    overrides = {"web": {"health_url": "http://127.0.0.1:1/health"}}
    profiles = load_profiles(config, workspace=tmp_path, overrides=overrides)
    found = dependents_of(config, profiles, "app")
    assert [d.name for d in found] == ["web", "worker"]
    assert found[0].health_url == "http://127.0.0.1:1/health"
    assert found[1].health_url is None
