"""Retention: remove ended runs older than a bound, with everything they left behind.

A pruned run loses its rows (the run, its plan snapshot, task states, artifact rows,
webhook deliveries), its artifact folder (logs, diffs, pre-images: the SSE history goes
with them) and its rollback image tag. Only ended runs are ever taken, and the rows go
first under that same condition, so a run retried meanwhile keeps everything. Used by
``moonmind orchestrator prune`` and, when ``prune_older_than`` is set, by the worker.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import (
    ActionPlan,
    OrchestratorRun,
    RunArtifact,
    TaskState,
    WebhookDelivery,
)
from moonmind.config import Settings
from moonmind.workflows.orchestrator.adapters.docker_engine import Engine, EngineError
from moonmind.workflows.orchestrator.enums import TERMINAL_STATUSES
from moonmind.workflows.orchestrator.repositories import as_utc
from moonmind.workflows.orchestrator.steps.build import ROLLBACK_REPOSITORY, rollback_tag
from moonmind.workflows.orchestrator.storage import ArtifactStore

log = logging.getLogger("moonmind.orchestrator")

BATCH = 500


@dataclass(frozen=True)
class PrunedRun:
    run_id: uuid.UUID
    project: str
    service: str
    status: str
    ended_at: datetime

    @property
    def rollback_ref(self) -> str:
        return f"{ROLLBACK_REPOSITORY}/{self.project}-{self.service}:{rollback_tag(self.run_id)}"


@dataclass
class PruneReport:
    runs: list[PrunedRun] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_prunable(
    session: Session, *, older_than_s: float, keep_last: int = 0, now: datetime | None = None
) -> list[PrunedRun]:
    """Ended runs that ended before ``now - older_than_s``, oldest first, sparing the
    newest ``keep_last`` ended runs of every (project, service)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_s)
    ended_at = func.coalesce(OrchestratorRun.completed_at, OrchestratorRun.queued_at)
    stmt = (
        select(
            OrchestratorRun.id,
            OrchestratorRun.target_service,
            OrchestratorRun.status,
            ended_at,
            ActionPlan.service_context,
        )
        .join(ActionPlan, ActionPlan.id == OrchestratorRun.action_plan_id)
        .where(OrchestratorRun.status.in_(list(TERMINAL_STATUSES)))
        .order_by(ended_at.desc(), OrchestratorRun.id.desc())
    )
    if keep_last <= 0:
        stmt = stmt.where(ended_at < cutoff)
    seen: dict[tuple[str, str], int] = {}
    found: list[PrunedRun] = []
    for run_id, service, status, ended, context in session.execute(stmt):
        project = str((context or {}).get("project") or "")
        rank = seen[(project, service)] = seen.get((project, service), 0) + 1
        when = as_utc(ended)
        assert when is not None
        if rank <= keep_last or when >= cutoff:
            continue
        found.append(PrunedRun(run_id, project, service, str(status.value), when))
    return sorted(found, key=lambda run: (run.ended_at, str(run.run_id)))


def delete_rows(session: Session, run_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Delete the runs that are still ended, with their rows; the ids deleted."""
    ended = set(
        session.scalars(
            select(OrchestratorRun.id).where(
                OrchestratorRun.id.in_(list(run_ids)),
                OrchestratorRun.status.in_(list(TERMINAL_STATUSES)),
            )
        )
    )
    if not ended:
        return ended
    ids = list(ended)
    plans = list(
        session.scalars(select(OrchestratorRun.action_plan_id).where(OrchestratorRun.id.in_(ids)))
    )
    for model in (WebhookDelivery, TaskState, RunArtifact):
        session.execute(delete(model).where(model.run_id.in_(ids)))
    session.execute(delete(OrchestratorRun).where(OrchestratorRun.id.in_(ids)))
    still_used = exists().where(OrchestratorRun.action_plan_id == ActionPlan.id)
    session.execute(delete(ActionPlan).where(ActionPlan.id.in_(plans), ~still_used))
    return ended


def prune(
    db: Database,
    settings: Settings,
    *,
    older_than_s: float,
    keep_last: int = 0,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Remove (or with ``dry_run`` only list) what :func:`find_prunable` finds."""
    with db.session() as session:
        candidates = find_prunable(session, older_than_s=older_than_s, keep_last=keep_last, now=now)
    report = PruneReport()
    store = ArtifactStore(settings.artifact_root_path)
    tags = _existing_tags(candidates, report)
    for start in range(0, len(candidates), BATCH):
        batch = candidates[start : start + BATCH]
        if dry_run:
            removed = {run.run_id for run in batch}
        else:
            with db.session() as session:
                removed = delete_rows(session, [run.run_id for run in batch])
        for run in batch:
            if run.run_id not in removed:
                continue
            report.runs.append(run)
            _remove_folder(store, run, dry_run, report)
            if run.rollback_ref in tags:
                _remove_tag(run.rollback_ref, dry_run, report)
    return report


def _existing_tags(candidates: Sequence[PrunedRun], report: PruneReport) -> set[str]:
    """The candidates' rollback tags the engine holds (empty, with a warning, without one)."""
    repositories = {run.rollback_ref.rsplit(":", 1)[0] for run in candidates}
    if not repositories:
        return set()
    try:
        with Engine.connect() as engine:
            return {
                f"{repository}:{tag}"
                for repository in sorted(repositories)
                for tag in engine.repository_tags(repository)
            }
    except (EngineError, OSError) as exc:
        report.warnings.append(f"rollback tags not checked (Docker engine: {exc})")
        return set()


def _remove_folder(
    store: ArtifactStore, run: PrunedRun, dry_run: bool, report: PruneReport
) -> None:
    folder = store.run_dir(run.run_id)
    if not folder.is_dir():
        return
    if not dry_run:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            report.warnings.append(f"{folder} not removed: {exc}")
            return
    report.folders.append(str(folder))


def _remove_tag(ref: str, dry_run: bool, report: PruneReport) -> None:
    if not dry_run:
        try:
            with Engine.connect() as engine:
                engine.remove_image(ref)
        except (EngineError, OSError) as exc:
            report.warnings.append(f"{ref} not removed: {exc}")
            return
    report.tags.append(ref)


def periodic_prune(db: Database, settings: Settings) -> PruneReport | None:
    """One round of the worker's prune (``prune_older_than``); None when it is off."""
    if settings.prune_older_than is None:
        return None
    report = prune(db, settings, older_than_s=settings.prune_older_than)
    if report.runs:
        log.info(
            "pruned %d ended runs, %d artifact folders, %d rollback tags",
            len(report.runs),
            len(report.folders),
            len(report.tags),
        )
    for warning in report.warnings:
        log.warning("prune: %s", warning)
    return report
