"""Rollback tags are kept for the newest runs of a service only.

Every build tags the image it replaces as ``moonmind-rollback/<project>-<service>:<run>``.
When a run ends, the worker removes that service's tags beyond the newest N runs (by
the time they were queued). A tag of a run that has not ended is never removed, nor a
tag no run of this database made.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from api_service.db.base import Database
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.adapters.docker_engine import Engine, EngineError
from moonmind.workflows.orchestrator.enums import TERMINAL_STATUSES
from moonmind.workflows.orchestrator.plan import context_of
from moonmind.workflows.orchestrator.steps.build import ROLLBACK_REPOSITORY, rollback_tag

log = logging.getLogger("moonmind.orchestrator")


def stale_tags(runs: Sequence[tuple[str, bool]], existing: set[str], keep: int) -> list[str]:
    """Tags to remove: ``runs`` is (tag, ended) newest first; the newest ``keep`` stay."""
    kept = 0
    stale = []
    for tag, ended in runs:
        if tag not in existing:
            continue
        if kept < keep or not ended:
            kept += 1
            continue
        stale.append(tag)
    return stale


def prune_rollback_tags(db: Database, keep: int, run_id: uuid.UUID) -> list[str]:
    """Remove the service's rollback tags beyond the newest ``keep``; the refs removed."""
    try:
        with db.session() as session:
            run = repo.get_run(session, run_id)
            if run is None:
                return []
            project, service = context_of(run.action_plan).project, run.target_service
            runs = [
                (rollback_tag(r.id), r.status in TERMINAL_STATUSES)
                for r in repo.service_runs(session, project, service)
            ]
        repository = f"{ROLLBACK_REPOSITORY}/{project}-{service}"
        with Engine.connect() as engine:
            removed = []
            for tag in stale_tags(runs, set(engine.repository_tags(repository)), keep):
                engine.remove_image(f"{repository}:{tag}")
                removed.append(f"{repository}:{tag}")
    except (EngineError, OSError) as exc:  # clean-up never changes how a run ended
        log.warning("rollback tags of run %s not pruned: %s", run_id, exc)
        return []
    if removed:
        log.info("removed old rollback tags: %s", ", ".join(removed))
    return removed
