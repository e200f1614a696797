"""/orchestrator/runs: submit, list and inspect runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from api_service.api.artifact_download import artifact_response
from api_service.api.auth import Approver, Operator, Viewer
from api_service.api.deps import DatabaseDep, SessionDep, SettingsDep
from api_service.db.models import RunArtifact
from moonmind.schemas.workflow_models import (
    NO_NUL,
    ApprovalRequest,
    ArtifactList,
    ErrorResponse,
    RetryRequest,
    RunCreate,
    RunDetail,
    RunList,
    RunSummary,
)
from moonmind.workflows.orchestrator import repositories, serializers, webhooks
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.errors import ArtifactMissing, ArtifactNotFound, RunNotFound
from moonmind.workflows.orchestrator.events import RunFollower
from moonmind.workflows.orchestrator.retry import retry_run
from moonmind.workflows.orchestrator.service import approve_run, cancel_run, submit_run
from moonmind.workflows.orchestrator.storage import ArtifactPathError, ArtifactStore

router = APIRouter(prefix="/orchestrator", tags=["orchestrator-runs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "No or unknown bearer token"},
    403: {"model": ErrorResponse, "description": "The principal may not do this"},
    404: {"model": ErrorResponse, "description": "Not found"},
}
# Operations that take a body: one over ORCHESTRATOR_API_MAX_BODY_BYTES is never read.
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {"model": ErrorResponse, "description": "Request body too large"},
}


@router.post("/runs", status_code=202, response_model=RunSummary, responses=_BODY_ERRORS)
def create_run(
    body: RunCreate, settings: SettingsDep, db: DatabaseDep, principal: Operator
) -> RunSummary:
    """Validate, store the run with its plan, then queue its first step."""
    return serializers.run_summary(submit_run(settings, db, body, principal))


@router.get("/runs", response_model=RunList, responses=_ERRORS)
def list_runs(
    session: SessionDep,
    _: Viewer,
    status: Annotated[RunStatus | None, Query()] = None,
    service: Annotated[str | None, Query(min_length=1, max_length=255, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(
            pattern=repositories.CURSOR_PATTERN,
            min_length=repositories.CURSOR_LENGTH,
            max_length=repositories.CURSOR_LENGTH,
            description="The next_cursor of the previous page.",
        ),
    ] = None,
) -> RunList:
    page = repositories.list_runs(
        session, status=status, service=service, limit=limit, cursor=cursor
    )
    return RunList(
        runs=[serializers.run_summary(run) for run in page.runs], next_cursor=page.next_cursor
    )


@router.get("/runs/{run_id}", response_model=RunDetail, responses=_ERRORS)
def get_run(run_id: uuid.UUID, session: SessionDep, _: Viewer) -> RunDetail:
    run = repositories.get_run(session, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return serializers.run_detail(
        run,
        repositories.list_artifacts(session, run_id),
        repositories.list_task_states(session, run_id),
        webhooks.list_deliveries(session, run_id),
    )


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactList, responses=_ERRORS)
def list_artifacts(run_id: uuid.UUID, session: SessionDep, _: Viewer) -> ArtifactList:
    if repositories.get_run(session, run_id) is None:
        raise RunNotFound(run_id)
    return ArtifactList(
        artifacts=[
            serializers.artifact_model(a) for a in repositories.list_artifacts(session, run_id)
        ]
    )


def _artifact_row(session: Session, run_id: uuid.UUID, artifact_id: str) -> RunArtifact:
    """The run's artifact row; an id that is not a UUID names no artifact either (404)."""
    try:
        artifact_uuid = uuid.UUID(artifact_id)
    except ValueError:
        artifact_uuid = None
    artifact = repositories.get_artifact(session, run_id, artifact_uuid) if artifact_uuid else None
    if artifact is None:
        raise ArtifactNotFound(f"run {run_id} has no artifact {artifact_id}")
    return artifact


@router.get("/runs/{run_id}/artifacts/{artifact_id}", responses=_ERRORS)
def download_artifact(
    run_id: uuid.UUID,
    artifact_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: Viewer,
) -> Response:
    """The file is located through its row, never through a client-supplied path; a
    pre-image is redacted unless the caller is an admin."""
    artifact = _artifact_row(session, run_id, artifact_id)
    try:
        path = ArtifactStore(settings.artifact_root_path).resolve(run_id, artifact.path)
    except ArtifactPathError:
        raise ArtifactNotFound("artifact path is not valid") from None
    if not path.is_file():
        raise ArtifactMissing(f"{artifact.path} is recorded but not on disk")
    return artifact_response(path, artifact, principal)


EVENT_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/runs/{run_id}/events",
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
)
def run_events(
    run_id: uuid.UUID, session: SessionDep, settings: SettingsDep, db: DatabaseDep, _: Viewer
) -> StreamingResponse:
    """Step transitions and log lines as they happen, ending with the run's final status."""
    if repositories.get_run(session, run_id) is None:
        raise RunNotFound(run_id)
    follower = RunFollower(db, ArtifactStore(settings.artifact_root_path), run_id)

    async def stream() -> AsyncIterator[str]:
        sent = 0
        idle = 0.0
        while not follower.finished:
            events = await run_in_threadpool(follower.poll)
            for event in events:
                sent += 1
                yield event.encode(sent)
            if events:
                idle = 0.0
            elif idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"
            if not follower.finished:
                await asyncio.sleep(EVENT_POLL_SECONDS)
                idle += EVENT_POLL_SECONDS

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_CONFLICTS: dict[int | str, dict[str, Any]] = {
    **_BODY_ERRORS,
    409: {"model": ErrorResponse, "description": "Not allowed in the run's current state"},
}


@router.post("/runs/{run_id}/approvals", response_model=RunSummary, responses=_CONFLICTS)
def approve(
    run_id: uuid.UUID,
    body: ApprovalRequest,
    settings: SettingsDep,
    db: DatabaseDep,
    principal: Approver,
) -> RunSummary:
    """Approve a protected service's run; one waiting at its gate resumes from there."""
    return serializers.run_summary(approve_run(settings, db, run_id, body, principal))


@router.post(
    "/runs/{run_id}/retry", status_code=202, response_model=RunSummary, responses=_CONFLICTS
)
def retry(
    run_id: uuid.UUID,
    settings: SettingsDep,
    db: DatabaseDep,
    principal: Operator,
    body: RetryRequest | None = None,
) -> RunSummary:
    """Replay a failed or rolled-back run from its failing step (or an earlier one)."""
    return serializers.run_summary(
        retry_run(settings, db, run_id, body or RetryRequest(), principal)
    )


@router.post(
    "/runs/{run_id}/cancel", status_code=202, response_model=RunSummary, responses=_CONFLICTS
)
def cancel(
    run_id: uuid.UUID, settings: SettingsDep, db: DatabaseDep, principal: Operator
) -> RunSummary:
    """End a run: at once when nothing runs, else at its next safe point, after a rollback."""
    return serializers.run_summary(cancel_run(settings, db, run_id, cancelled_by=principal.id))
