"""Rendering and guarding console pages: templates, security headers, who is signed in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api_service.console import session as sessions
from api_service.console.session import ConsoleSession
from moonmind.auth import authenticate
from moonmind.config import Settings
from moonmind.workflows.orchestrator.errors import OrchestratorError

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))


def when(value: datetime | str | None) -> str:
    """A timestamp as people read it: 2026-11-24 23:10:26 UTC."""
    if not value:
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = when

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    session: ConsoleSession | None,
    status_code: int = 200,
) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(
        request, name, {"me": session, **context}, status_code=status_code
    )
    if session is not None and session.new_cookie:
        sessions.remember(request, response, session.new_cookie)
    secure(response)
    return response


def error_page(
    request: Request, session: ConsoleSession | None, status: int, detail: str, hint: str = ""
) -> HTMLResponse:
    return render(
        request, "error.html", {"status": status, "detail": detail, "hint": hint}, session, status
    )


def from_error(request: Request, session: ConsoleSession, exc: OrchestratorError) -> HTMLResponse:
    return error_page(request, session, exc.status_code, exc.detail, exc.remediation or "")


def safe_next(target: str | None) -> str:
    """Only a path on this server (never //host or a scheme) is followed after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def redirect(target: str) -> RedirectResponse:
    response = RedirectResponse(target, status_code=303)
    secure(response)
    return response


def token_sign_in(request: Request, settings: Settings) -> Response | None:
    """``?token=...`` (the Jupyter convention): sign in, then drop the token from the URL."""
    token = request.query_params.get("token")
    if token is None:
        return None
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + (f"?{urlencode(kept)}" if kept else "")
    principal = authenticate(settings, token) if settings.auth_principals else None
    if principal is None:
        if not settings.auth_principals:
            return redirect(target)  # nothing to sign in to
        return redirect("/signin?" + urlencode({"next": target, "failed": "1"}))
    response = redirect(target)
    sessions.remember(request, response, sessions.issue(settings, principal))
    return response


def guard(request: Request, settings: Settings) -> ConsoleSession | Response:
    """The viewer's session, or the response to send instead (sign in, or refused)."""
    signed_in = token_sign_in(request, settings)
    if signed_in is not None:
        return signed_in
    found = sessions.current(request, settings)
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("sec-fetch-site") == "cross-site":
            # A link from elsewhere (a chat message, a webhook's run_page): the browser
            # withheld the SameSite=Strict cookie. Ask again from this origin, where it sends it.
            return render(request, "bounce.html", {"target": path}, None)
        return redirect("/signin?" + urlencode({"next": path}))
    if not found.principal.has_role("viewer"):
        return error_page(request, found, 403, f"{found.principal.id} lacks the viewer role")
    return found


async def form_of(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body: the last value of each field."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


def check_post(
    request: Request, settings: Settings, form: dict[str, str]
) -> ConsoleSession | Response:
    """A state-changing request: a valid session and its CSRF token, else 401/403."""
    found = sessions.read(settings, request.cookies.get(sessions.COOKIE))
    if found is None:
        return error_page(request, None, 401, "not signed in (or the session expired)")
    sent = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not sessions.csrf_ok(found, sent):
        return error_page(
            request,
            found,
            403,
            "missing or wrong CSRF token",
            "Reload the page and press the button again.",
        )
    return found
