"""Every error leaves the API in the contract's ErrorResponse shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moonmind.schemas.workflow_models import ErrorResponse
from moonmind.workflows.orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)


def _response(
    status_code: int, body: ErrorResponse, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code, content=body.model_dump(exclude_none=True), headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrchestratorError)
    async def _domain(_: Request, exc: OrchestratorError) -> JSONResponse:
        body = ErrorResponse(error=exc.code, detail=exc.detail, remediation=exc.remediation)
        return _response(exc.status_code, body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _response(
            400,
            ErrorResponse(
                error="invalid_request",
                detail=_describe_validation(exc),
                remediation="Fix the fields named in detail; see /docs for the request schema.",
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers: a 405 must say what is Allowed (RFC 9110 15.5.6).
        error = "not_found" if exc.status_code == 404 else "http_error"
        body = ErrorResponse(error=error, detail=str(exc.detail))
        return _response(exc.status_code, body, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _response(
            500,
            ErrorResponse(
                error="internal_error",
                detail=type(exc).__name__,
                remediation="See the API server log; the request was not applied.",
            ),
        )
