"""The console's state-changing requests: submit, approve, cancel, retry, sign out.

Each needs the session cookie and its CSRF token, then goes through the same service
functions as the JSON API, which enforce roles, identity and the four-eyes rule.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from api_service.api.deps import DatabaseDep, SettingsDep
from api_service.console import session as sessions
from api_service.console.pages import configured_services
from api_service.console.views import gate_role
from api_service.console.web import check_post, error_page, form_of, from_error, redirect, render
from moonmind.auth import Principal
from moonmind.schemas.workflow_models import (
    ApprovalRequest,
    Approver,
    RetryRequest,
    RunCreate,
)
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator import policies, repositories
from moonmind.workflows.orchestrator.errors import Forbidden, OrchestratorError, RunNotFound
from moonmind.workflows.orchestrator.retry import retry_run
from moonmind.workflows.orchestrator.service import approve_run, cancel_run, submit_run

router = APIRouter(include_in_schema=False)


def _need(principal: Principal, role: str, run_id: uuid.UUID | None = None) -> None:
    """The same refusal as the API's require_role: 403 for a principal without the role."""
    if not principal.has_role(role):
        reason = f"{principal.id} lacks the {role} role"
        if run_id is not None:
            log_event(run_id, "console", "refused", principal=principal.id, reason=reason)
        raise Forbidden(reason)


RunAction = Callable[[Principal, dict[str, str]], None]


async def _run_action(
    request: Request, settings: Any, run_id: uuid.UUID, role: str, action: RunAction
) -> Response:
    """CSRF and session first; then, in a thread, ``role`` is needed and ``action`` acts on
    the run. Back to the run's page; a refusal or failure shows on an error page."""
    form = await form_of(request)
    me = check_post(request, settings, form)
    if isinstance(me, Response):
        return me
    principal = me.principal

    def act() -> None:
        _need(principal, role, run_id)
        action(principal, form)

    try:
        await run_in_threadpool(act)
    except OrchestratorError as exc:
        return from_error(request, me, exc)
    return redirect(f"/runs/{run_id}")


@router.post("/runs/{run_id}/approve", response_class=Response)
async def approve(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    """Approve as the signed-in principal, bound to the diff hash the page showed."""

    def act(principal: Principal, form: dict[str, str]) -> None:
        with db.session() as session:
            run = repositories.get_run(session, run_id)
            if run is None:
                raise RunNotFound(run_id)
            gate = policies.run_gate(run, patched=False)  # only its roles: the same either way
        roles = gate.roles if gate is not None else ()
        role = gate_role(principal, roles) or "approver"  # the service refuses a wrong one
        body = ApprovalRequest(
            approver=Approver(id=principal.id, role=role),
            token=f"console-{secrets.token_urlsafe(24)}",
            diff_sha256=form.get("diff_sha256") or None,
        )
        approve_run(settings, db, run_id, body, principal)

    return await _run_action(request, settings, run_id, "approver", act)


@router.post("/runs/{run_id}/cancel", response_class=Response)
async def cancel(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    def act(principal: Principal, _form: dict[str, str]) -> None:
        cancel_run(settings, db, run_id, cancelled_by=principal.id)

    return await _run_action(request, settings, run_id, "operator", act)


@router.post("/runs/{run_id}/retry", response_class=Response)
async def retry(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    def act(principal: Principal, _form: dict[str, str]) -> None:
        retry_run(settings, db, run_id, RetryRequest(), principal)

    return await _run_action(request, settings, run_id, "operator", act)


def run_create(form: dict[str, str]) -> RunCreate:
    """The new-run form as the API's request (``dry_run`` only where the server has it)."""
    data: dict[str, Any] = {
        "instruction": form.get("instruction", ""),
        "target_service": form.get("service", ""),
        "patch": form.get("patch", "").replace("\r\n", "\n").strip("\n") + "\n"
        if form.get("patch", "").strip()
        else None,
    }
    if "dry_run" in RunCreate.model_fields:
        data["dry_run"] = form.get("dry_run") == "on"
    return RunCreate(**data)


@router.post("/runs", response_class=Response)
async def create(request: Request, settings: SettingsDep, db: DatabaseDep) -> Response:
    form = await form_of(request)
    me = check_post(request, settings, form)
    if isinstance(me, Response):
        return me
    try:
        _need(me.principal, "operator")
        body = run_create(form)
        run = await run_in_threadpool(submit_run, settings, db, body, me.principal)
    except (OrchestratorError, ValidationError) as exc:
        if isinstance(exc, Forbidden):
            return from_error(request, me, exc)
        error = exc.detail if isinstance(exc, OrchestratorError) else _describe(exc)
        services = await run_in_threadpool(configured_services, settings)
        context = {"services": services, "form": form, "error": error}
        status = exc.status_code if isinstance(exc, OrchestratorError) else 400
        return render(request, "new.html", context, me, status)
    return redirect(f"/runs/{run.id}")


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}" for err in exc.errors()
    )


@router.post("/signout", response_class=Response)
async def signout(request: Request, settings: SettingsDep) -> Response:
    form = await form_of(request)
    me = check_post(request, settings, form)
    if isinstance(me, Response):
        return me
    if me.open_mode:
        return error_page(request, me, 400, "no principals are configured: nobody signs in")
    response = redirect("/signin")
    sessions.forget(response)
    return response
