"""Per-request plumbing outside the routers: a request id on every answer, a body limit,
and the last line of defence against an unexpected exception.

``RequestContext`` is a pure ASGI middleware placed around the whole app:

- every response carries ``X-Request-ID`` (the caller's, when it is a short token, else a
  fresh one); error bodies repeat it and the server log names it;
- a request body larger than ``max_body_bytes`` is answered 413 before the app sees it:
  a ``Content-Length`` over the limit is refused without reading a byte, and a body sent
  without one (chunked) is counted as it arrives and refused once it passes the limit, so
  no endpoint ever holds more than the limit in memory or writes anything;
- an exception nothing else handled becomes a 500 in the ErrorResponse shape with the
  request id; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moonmind.schemas.workflow_models import ErrorResponse

log = logging.getLogger("api_service.requests")

REQUEST_ID_HEADER = "X-Request-ID"
_CALLER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_UNLIMITED = 2**63


class BodyTooLarge(HTTPException):
    """Raised by the counting receive; the error handler answers 413 with the shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


def request_id_of(scope: Scope) -> str | None:
    state: dict[str, Any] = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


def error_response(
    scope: Scope,
    status_code: int,
    body: ErrorResponse,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An ErrorResponse carrying the request id (body and header)."""
    request_id = request_id_of(scope)
    body = body.model_copy(update={"request_id": request_id})
    merged = dict(headers or {})
    if request_id:
        merged[REQUEST_ID_HEADER] = request_id
    return JSONResponse(
        status_code=status_code, content=body.model_dump(exclude_none=True), headers=merged
    )


def too_large_body(limit: int) -> ErrorResponse:
    return ErrorResponse(
        error="payload_too_large",
        detail=f"request body larger than {limit} bytes",
        remediation=(
            "Send a smaller body (a patch of the files to change, not whole trees); the limit "
            "is ORCHESTRATOR_API_MAX_BODY_BYTES."
        ),
    )


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        caller_id = headers.get(REQUEST_ID_HEADER, "")
        request_id = caller_id if _CALLER_ID.fullmatch(caller_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_body_bytes if self.max_body_bytes is not None else _UNLIMITED
        if _declared_length(headers) > limit:
            log.info("request %s refused: Content-Length over %d bytes", request_id, limit)
            await error_response(scope, 413, too_large_body(limit))(scope, receive, send)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_id)
        except Exception as exc:
            log.error(
                "request %s %s %s failed unexpectedly",
                request_id,
                scope.get("method"),
                scope.get("path"),
                exc_info=exc,
            )
            if started:
                raise
            await error_response(scope, 500, unexpected_error(request_id))(scope, receive, send)


def unexpected_error(request_id: str) -> ErrorResponse:
    return ErrorResponse(
        error="internal_error",
        detail=f"unexpected server error (request id {request_id})",
        remediation=(
            "The API server log has the error under this request id; check the run list "
            "before retrying a POST."
        ),
    )


def _declared_length(headers: Headers) -> int:
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0
