"""The orchestrator's domain errors, each carrying what the API answers for it.

Code anywhere below the API (service, repositories, profiles) raises one of these; the
API has a single handler that turns any of them into the contract's ErrorResponse with
``status_code``, ``code`` (the ``error`` field), ``detail`` and ``remediation``. A class
says what went wrong; the routers never translate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from os import PathLike
from typing import ClassVar


class OrchestratorError(Exception):
    """Base of the family; subclasses set the HTTP status, the code and the remediation."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "orchestrator_error"
    headers: ClassVar[dict[str, str] | None] = None
    remediation: str | None = None

    def __init__(self, detail: str, *, remediation: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if remediation is not None:
            self.remediation = remediation


class UnknownService(OrchestratorError):
    """The operator named a service the compose file does not define."""

    status_code = 400
    code = "unknown_service"

    def __init__(
        self,
        name: str,
        available: Sequence[str],
        compose_path: str | PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.available = list(available)
        self.compose_path = compose_path
        where = compose_path if compose_path is not None else "the compose file"
        super().__init__(
            f"service {name!r} is not defined in {where}",
            remediation=f"Use one of: {', '.join(self.available) or '(no services defined)'}",
        )


class ComposeUnavailable(OrchestratorError):
    """The workspace's compose file cannot be read by the compose CLI."""

    status_code = 503
    code = "compose_unavailable"
    remediation = (
        "Check ORCHESTRATOR_WORKSPACE / ORCHESTRATOR_COMPOSE_FILE and that "
        "`docker compose` or `docker-compose` is installed."
    )


class InvalidCursor(OrchestratorError, ValueError):
    """A pagination cursor this server did not hand out."""

    status_code = 400
    code = "invalid_cursor"
    remediation = "Use the next_cursor value of a previous response, or omit cursor."


class RunNotFound(OrchestratorError):
    status_code = 404
    code = "run_not_found"
    remediation = "List runs with GET /orchestrator/runs to find a valid run_id."

    def __init__(self, run_id: uuid.UUID | str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id}")


class Unauthenticated(OrchestratorError):
    """No bearer token, or one that names no principal."""

    status_code = 401
    code = "unauthenticated"
    headers = {"WWW-Authenticate": "Bearer"}
    remediation = (
        "Send Authorization: Bearer <token>; an administrator creates one with "
        "`moonmind auth add-principal ID --roles ...`."
    )


class Forbidden(OrchestratorError):
    """The caller is known but may not do this (role, identity or four-eyes rule)."""

    status_code = 403
    code = "forbidden"
    remediation = (
        "Ask someone whose principal has the needed role; `moonmind auth list` shows roles."
    )


class RunConflict(OrchestratorError):
    """The run is not in a state that allows this; the message says which would."""

    status_code = 409
    code = "run_conflict"
    remediation = "GET the run to see its status and steps."


class ApprovalConflict(RunConflict):
    """An approval the run cannot take (not protected, wrong role, wrong diff, ...)."""

    code = "approval_rejected"
    remediation = "GET the run to see its status, approval_requirement and message."


class RetryConflict(RunConflict):
    """A retry the run cannot take (not failed, or resuming would skip a step)."""

    code = "retry_rejected"
    remediation = "Only failed or rolled_back runs can be retried; see the run's steps."


class CancelConflict(RunConflict):
    """A cancel the run cannot take: it has already ended."""

    code = "cancel_rejected"
    remediation = "Only pending, awaiting_approval or running runs can be cancelled."


class ArtifactNotFound(OrchestratorError):
    """No such artifact in this run (or its recorded path is not a valid one)."""

    status_code = 404
    code = "artifact_not_found"


class ArtifactMissing(ArtifactNotFound):
    """The artifact is recorded but its file is gone."""

    code = "artifact_missing"
    remediation = "The artifact store may have been cleaned; re-run to regenerate it."
