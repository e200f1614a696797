"""Celery task names, one constant each, so producers and the worker never drift."""

TASK_HEARTBEAT = "orchestrator.heartbeat"
TASK_ANALYZE = "orchestrator.analyze"
TASK_PATCH = "orchestrator.patch"
TASK_BUILD = "orchestrator.build"
TASK_RESTART = "orchestrator.restart"
TASK_VERIFY = "orchestrator.verify"
TASK_ROLLBACK = "orchestrator.rollback"
