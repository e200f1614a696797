"""Every error leaves the API in the contract's ErrorResponse shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from moonmind.schemas.workflow_models import ErrorResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str | None = None,
        remediation: str | None = None,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.body = ErrorResponse(error=error, detail=detail, remediation=remediation)


def _response(status_code: int, body: ErrorResponse) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=body.model_dump(exclude_none=True))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _response(exc.status_code, exc.body)

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
        error = "not_found" if exc.status_code == 404 else "http_error"
        return _response(exc.status_code, ErrorResponse(error=error, detail=str(exc.detail)))

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
