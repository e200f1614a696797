"""The console's pages: runs list (and its live rows), run page, new-run form, sign-in."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api_service.api.deps import DatabaseDep, SessionDep, SettingsDep
from api_service.api.routers import orchestrator as api
from api_service.console import session as sessions
from api_service.console import views
from api_service.console.web import error_page, form_of, guard, redirect, render, safe_next
from moonmind.auth import authenticate
from moonmind.config import Settings
from moonmind.workflows.orchestrator import repositories
from moonmind.workflows.orchestrator.enums import RunStatus
from moonmind.workflows.orchestrator.errors import OrchestratorError
from moonmind.workflows.orchestrator.service import load_stack

router = APIRouter(include_in_schema=False)


class InvalidFilter(OrchestratorError):
    status_code = 400
    code = "invalid_request"


def _status(value: str | None) -> RunStatus | None:
    try:
        return RunStatus(value) if value else None
    except ValueError:
        return None


def configured_services(settings: Settings) -> list[str]:
    """The compose file's services (for the pickers); none when compose cannot be read."""
    try:
        return sorted(load_stack(settings).profiles)
    except OrchestratorError:
        return []


def _filters(request: Request) -> dict[str, Any]:
    """The list's filters; an unknown status shows every status, a NUL is refused."""
    q = request.query_params
    service = (q.get("service") or "").strip()[:255] or None
    if service and "\x00" in service:
        raise InvalidFilter("service: must not contain a NUL character")
    return {"status": _status(q.get("status")), "service": service, "cursor": q.get("cursor")}


@router.get("/", response_class=Response)
def runs_page(request: Request, settings: SettingsDep, session: SessionDep) -> Response:
    me = guard(request, settings)
    if isinstance(me, Response):
        return me
    try:
        filters = _filters(request)
        rows, next_cursor = views.list_rows(session, **filters)
    except OrchestratorError as exc:  # a bad cursor or filter
        return error_page(request, me, exc.status_code, exc.detail)
    query = {k: v for k in ("status", "service") if (v := filters[k])}
    return render(
        request,
        "runs.html",
        {
            "rows": rows,
            "statuses": [s.value for s in RunStatus],
            "services": configured_services(settings),
            "filters": filters,
            "rows_url": "/console/rows?" + urlencode(query),
            "next_url": "/?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else "",
        },
        me,
    )


@router.get("/console/rows", response_class=Response)
def runs_rows(request: Request, settings: SettingsDep, session: SessionDep) -> Response:
    """The list's rows as HTML, polled by console.js to keep the list live."""
    me = sessions.current(request, settings)
    if me is None or not me.principal.has_role("viewer"):
        return Response(status_code=401)
    try:
        rows, _ = views.list_rows(session, **{**_filters(request), "cursor": None})
    except OrchestratorError as exc:
        return Response(exc.detail, status_code=exc.status_code)
    return render(request, "_rows.html", {"rows": rows}, me)


@router.get("/runs/{run_id}", response_class=Response)
def run_page(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, session: SessionDep
) -> Response:
    me = guard(request, settings)
    if isinstance(me, Response):
        return me
    page = views.run_page(session, settings, run_id, me.principal)
    if page is None:
        return error_page(request, me, 404, f"no run {run_id}")
    return render(request, "run.html", page, me)


@router.get("/runs/{run_id}/state", response_class=Response)
def run_state(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, session: SessionDep
) -> Response:
    """The run's status and approval state: console.js reloads the page when they change."""
    me = sessions.current(request, settings)
    run = repositories.get_run(session, run_id) if me is not None else None
    if me is None or run is None or not me.principal.has_role("viewer"):
        return Response(status_code=404 if me else 401)
    return JSONResponse({"status": run.status.value, "approval": bool(run.approval)})


@router.get("/runs/{run_id}/events", response_class=Response)
def run_events(
    run_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    db: DatabaseDep,
) -> Response:
    """The API's event stream, for a signed-in console session (EventSource sends cookies)."""
    me = sessions.current(request, settings)
    if me is None or not me.principal.has_role("viewer"):
        return Response(status_code=401)
    return api.run_events(run_id, session, settings, db, me.principal)


@router.get("/runs/{run_id}/artifacts/{artifact_id}", response_class=Response)
def artifact(
    run_id: uuid.UUID, artifact_id: str, request: Request, settings: SettingsDep, s: SessionDep
) -> Response:
    me = guard(request, settings)
    if isinstance(me, Response):
        return me
    return api.download_artifact(run_id, artifact_id, s, settings, me.principal)


@router.get("/new", response_class=Response)
def new_run_page(request: Request, settings: SettingsDep) -> Response:
    me = guard(request, settings)
    if isinstance(me, Response):
        return me
    context: dict[str, Any] = {"services": configured_services(settings), "form": {}, "error": None}
    return render(request, "new.html", context, me)


@router.get("/signin", response_class=Response)
def signin_page(request: Request, settings: SettingsDep) -> Response:
    if not settings.auth_principals:
        return redirect("/")
    nonce = sessions.issue_signin_nonce()
    failed = request.query_params.get("failed") == "1"
    context = {
        "next": safe_next(request.query_params.get("next")),
        "nonce": nonce,
        "error": "that token names no principal" if failed else None,
    }
    response = render(request, "signin.html", context, None, 401 if failed else 200)
    sessions.set_cookie(request, response, sessions.PRE_COOKIE, nonce, 600)
    return response


@router.post("/signin", response_class=Response)
async def signin(request: Request, settings: SettingsDep) -> Response:
    """The pasted token is checked once; the browser keeps only the signed session cookie."""
    form = await form_of(request)
    target = safe_next(form.get("next"))
    nonce = request.cookies.get(sessions.PRE_COOKIE)
    if not nonce or not sessions.csrf_ok_plain(nonce, form.get("nonce")):
        return error_page(request, None, 403, "the sign-in form expired; open /signin again")
    principal = authenticate(settings, form.get("token", "").strip() or None)
    if principal is None or not settings.auth_principals:
        return redirect("/signin?" + urlencode({"next": target, "failed": "1"}))
    response = redirect(target)
    sessions.remember(request, response, sessions.issue(settings, principal))
    response.delete_cookie(sessions.PRE_COOKIE, path="/")
    return response
