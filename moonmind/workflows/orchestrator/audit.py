"""Who did what to a run: approvals, refusals, cancels and retries, with the principal.

Each entry goes to the JSON event log and onto the run itself (``metrics_snapshot.audit``),
from where the run detail and its event stream (SSE ``audit`` events) show it. A refusal
is recorded in a transaction of its own, so it is kept although the request fails.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.policies import utcnow

log = logging.getLogger(__name__)


def entries(run: OrchestratorRun) -> list[dict[str, Any]]:
    return list((run.metrics_snapshot or {}).get("audit", []))


def note(
    session: Session, run: OrchestratorRun, action: str, principal: str | None, **details: Any
) -> None:
    """Add an entry inside the caller's transaction (it commits with the change it explains)."""
    log_event(run.id, "api", action, principal=principal, **details)
    entry = {"at": utcnow().isoformat(), "action": action, "principal": principal, **details}
    repo.set_metrics(session, run, audit=[*entries(run), entry])


def record(
    db: Database, run_id: uuid.UUID, action: str, principal: str | None, **details: Any
) -> None:
    """Add an entry in a transaction of its own; call it with no lock held on the run."""
    try:
        with db.session() as session:
            run = repo.get_run(session, run_id, for_update=True)
            if run is not None:
                note(session, run, action, principal, **details)
                return
    except Exception:  # the audit must never turn a refusal into a server error
        log.exception("could not record %s on run %s", action, run_id)
    log_event(run_id, "api", action, principal=principal, **details)
