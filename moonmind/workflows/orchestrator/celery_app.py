"""The orchestrator's Celery application, configured from MoonMind settings.

Creating one builds no worker: producers get theirs from ``dispatch.producer``; the
worker entry point (``tasks``) registers the step tasks on its own.
"""

from __future__ import annotations

from celery import Celery

from moonmind.config import Settings
from moonmind.workflows.orchestrator.celeryconfig import celery_config


def create_celery(settings: Settings) -> Celery:
    app = Celery("moonmind.orchestrator")
    app.conf.update(celery_config(settings))
    app.conf.include = ["moonmind.workflows.orchestrator.tasks"]
    return app
