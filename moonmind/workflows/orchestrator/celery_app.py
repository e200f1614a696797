"""The orchestrator's Celery application, configured from MoonMind settings."""

from __future__ import annotations

from celery import Celery

from moonmind.config import Settings, get_settings
from moonmind.workflows.orchestrator.celeryconfig import celery_config


def create_celery(settings: Settings) -> Celery:
    app = Celery("moonmind.orchestrator")
    app.conf.update(celery_config(settings))
    app.conf.include = ["moonmind.workflows.orchestrator.tasks"]
    return app


app = create_celery(get_settings())
