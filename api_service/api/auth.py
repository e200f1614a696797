"""Bearer authentication for the API: who is calling, and may they do this.

Use ``require_role("operator")`` (or the ``Viewer`` / ``Operator`` / ``Approver`` aliases)
as a dependency; it answers 401 with ``WWW-Authenticate: Bearer`` for a missing or unknown
token and 403 for a known principal without the role, both in the ErrorResponse shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api_service.api.deps import SettingsDep
from moonmind.auth import Principal, authenticate
from moonmind.utils.logging import log_event
from moonmind.workflows.orchestrator.errors import Forbidden, Unauthenticated

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A principal's token (`moonmind auth add-principal`), sent as a bearer token.",
)


async def current_principal(  # no I/O: on the event loop, not the thread pool
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    principal = authenticate(settings, token)
    if principal is None:
        raise Unauthenticated("a valid bearer token is required" if token else "no bearer token")
    return principal


def require_role(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the calling principal, provided it holds ``role``."""

    async def _check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not principal.has_role(role):
            reason = f"{principal.id} lacks the {role} role"
            run_id = request.path_params.get("run_id")
            if run_id:
                log_event(run_id, "api", "refused", principal=principal.id, reason=reason)
            raise Forbidden(reason)
        return principal

    return _check


Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Operator = Annotated[Principal, Depends(require_role("operator"))]
Approver = Annotated[Principal, Depends(require_role("approver"))]
