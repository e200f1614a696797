"""One handler turns every domain error into the contract's ErrorResponse."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI

from api_service.api.errors import install_error_handlers
from moonmind.workflows.orchestrator import repositories, service_profiles
from moonmind.workflows.orchestrator.errors import (
    ApprovalConflict,
    ArtifactMissing,
    ArtifactNotFound,
    ComposeUnavailable,
    InvalidCursor,
    OrchestratorError,
    RetryConflict,
    RunConflict,
    RunNotFound,
    UnknownService,
)

RUN_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    @app.get("/only-get")
    def only_get() -> dict[str, str]:
        return {}

    return app


def _request(exc: Exception, method: str = "GET", path: str = "/boom") -> httpx.Response:
    """One request through the ASGI app (exceptions become responses, as in production)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path)

    return anyio.run(send)


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        pytest.param(
            UnknownService("nope", ["app", "sibling"], Path("/ws/docker-compose.yaml")),
            400,
            {
                "error": "unknown_service",
                "detail": "service 'nope' is not defined in /ws/docker-compose.yaml",
                "remediation": "Use one of: app, sibling",
            },
            id="unknown-service",
        ),
        pytest.param(
            UnknownService("nope", []),
            400,
            {
                "error": "unknown_service",
                "detail": "service 'nope' is not defined in the compose file",
                "remediation": "Use one of: (no services defined)",
            },
            id="unknown-service-none-defined",
        ),
        pytest.param(
            ComposeUnavailable("compose file /ws/x.yaml is not readable"),
            503,
            {
                "error": "compose_unavailable",
                "detail": "compose file /ws/x.yaml is not readable",
                "remediation": "Check ORCHESTRATOR_WORKSPACE / ORCHESTRATOR_COMPOSE_FILE and "
                "that `docker compose` or `docker-compose` is installed.",
            },
            id="compose-unavailable",
        ),
        pytest.param(
            InvalidCursor("cursor is not one this server issued"),
            400,
            {
                "error": "invalid_cursor",
                "detail": "cursor is not one this server issued",
                "remediation": "Use the next_cursor value of a previous response, or omit cursor.",
            },
            id="invalid-cursor",
        ),
        pytest.param(
            RunNotFound(RUN_ID),
            404,
            {
                "error": "run_not_found",
                "detail": f"no run {RUN_ID}",
                "remediation": "List runs with GET /orchestrator/runs to find a valid run_id.",
            },
            id="run-not-found",
        ),
        pytest.param(
            ApprovalConflict("role intern may not approve; needs one of: sre"),
            409,
            {
                "error": "approval_rejected",
                "detail": "role intern may not approve; needs one of: sre",
                "remediation": "GET the run to see its status, approval_requirement and message.",
            },
            id="approval-rejected",
        ),
        pytest.param(
            RetryConflict("run is succeeded; only failed or rolled_back runs can be retried"),
            409,
            {
                "error": "retry_rejected",
                "detail": "run is succeeded; only failed or rolled_back runs can be retried",
                "remediation": "Only failed or rolled_back runs can be retried; "
                "see the run's steps.",
            },
            id="retry-rejected",
        ),
        pytest.param(
            ArtifactNotFound(f"run {RUN_ID} has no artifact x"),
            404,
            {"error": "artifact_not_found", "detail": f"run {RUN_ID} has no artifact x"},
            id="artifact-not-found",
        ),
        pytest.param(
            ArtifactMissing("build.log is recorded but not on disk"),
            404,
            {
                "error": "artifact_missing",
                "detail": "build.log is recorded but not on disk",
                "remediation": "The artifact store may have been cleaned; re-run to regenerate it.",
            },
            id="artifact-missing",
        ),
    ],
)
def test_domain_error_becomes_its_error_response(
    exc: OrchestratorError, status: int, body: dict[str, str]
) -> None:
    response = _request(exc)
    assert response.status_code == status
    sent = response.json()
    assert sent.pop("request_id") == response.headers["x-request-id"]
    assert sent == body


def test_conflicts_are_one_family() -> None:
    assert issubclass(ApprovalConflict, RunConflict)
    assert issubclass(RetryConflict, RunConflict)
    assert RunConflict("x").status_code == 409
    assert issubclass(ArtifactMissing, ArtifactNotFound)


def test_invalid_cursor_is_still_a_value_error() -> None:
    assert issubclass(InvalidCursor, ValueError)


def test_old_import_paths_name_the_same_classes() -> None:
    from moonmind.workflows.orchestrator import service

    assert service_profiles.UnknownService is UnknownService
    assert repositories.InvalidCursor is InvalidCursor
    assert service.ComposeUnavailable is ComposeUnavailable
    assert service.RunNotFound is RunNotFound


def test_unknown_service_keeps_what_callers_read() -> None:
    exc = UnknownService("nginx", ["api", "web"], "/ws/compose.yaml")
    assert exc.name == "nginx"
    assert exc.available == ["api", "web"]
    assert "nginx" in str(exc)


def test_unexpected_error_is_500_without_internals() -> None:
    response = _request(RuntimeError("secret path /etc/x"))
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret" not in response.text


def test_method_not_allowed_keeps_the_allow_header() -> None:
    """RFC 9110 15.5.6: a 405 response must carry Allow."""
    response = _request(RuntimeError(), "POST", "/only-get")
    assert response.status_code == 405
    assert response.json()["error"] == "http_error"
    assert "GET" in response.headers["allow"]
