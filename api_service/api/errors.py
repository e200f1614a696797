"""Every error leaves the API in the contract's ErrorResponse shape, with the request id.

Domain errors carry their own status; validation errors are 400; HTTP errors keep their
status and headers (a 405 names every method the path has in ``Allow``, RFC 9110
15.5.6); a database that cannot be reached is 503. Anything else is caught by
:class:`api_service.api.request_context.RequestContext` (500, traceback in the log only).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api_service.api.request_context import (
    BodyTooLarge,
    RequestContext,
    error_response,
    request_id_of,
    too_large_body,
)
from moonmind.schemas.workflow_models import ErrorResponse
from moonmind.workflows.orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = 5
# Errors that say the database is unreachable or overloaded, not that a statement was wrong.
_DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg')}")
    return "; ".join(parts)


_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def allowed_methods(request: Request) -> list[str]:
    """Every method the app's OpenAPI declares for the request's path (Starlette names
    only the first matching route's methods, and FastAPI has one route per method)."""
    methods: set[str] = set()
    paths: dict[str, dict[str, object]] = request.app.openapi().get("paths", {})
    for template, item in paths.items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods.update(m.upper() for m in item if m in _HTTP_METHODS)
    return sorted(methods)


def install_error_handlers(app: FastAPI, max_body_bytes: int | None = None) -> None:
    """The handlers, and the RequestContext middleware (request id, body limit, last-resort
    500) that gives them a request id."""
    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes)

    @app.exception_handler(OrchestratorError)
    async def _domain(request: Request, exc: OrchestratorError) -> JSONResponse:
        body = ErrorResponse(error=exc.code, detail=exc.detail, remediation=exc.remediation)
        return error_response(request.scope, exc.status_code, body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = ErrorResponse(
            error="invalid_request",
            detail=_describe_validation(exc),
            remediation="Fix the fields named in detail; see /docs for the request schema.",
        )
        return error_response(request.scope, 400, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return error_response(request.scope, 413, too_large_body(exc.limit))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
        error = "not_found" if exc.status_code == 404 else "http_error"
        body = ErrorResponse(error=error, detail=str(exc.detail))
        return error_response(request.scope, exc.status_code, body, headers)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("request %s: database unavailable: %s", request_id_of(request.scope), exc)
        body = ErrorResponse(
            error="database_unavailable",
            detail="the orchestrator database cannot be reached",
            remediation=(
                f"Retry in {DATABASE_RETRY_AFTER_S} s; if it persists, check that the "
                "database in MOONMIND_DATABASE_URL is up."
            ),
        )
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        return error_response(request.scope, 503, body, headers)

    for kind in _DATABASE_DOWN:
        app.add_exception_handler(kind, _database_down)

    @app.exception_handler(sa_exc.DataError)
    async def _unstorable(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        log.info("request %s: value refused by the database: %s", request_id_of(request.scope), exc)
        body = ErrorResponse(
            error="invalid_request",
            detail="a value cannot be stored (for example a NUL character in a text field)",
            remediation="Remove control characters from the request's text fields.",
        )
        return error_response(request.scope, 400, body)
