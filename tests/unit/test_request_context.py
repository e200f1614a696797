"""The API's request plumbing: request ids, the last-resort 500, 503 for a lost database,
the Allow header of a 405 and the cursor the schema declares.

The app is the real one (``create_app``) over ASGI; the failing route is added to it by
the test, and the lost database is a PostgreSQL URL on a port nothing listens on.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from api_service.db.migrate import upgrade
from api_service.main import create_app
from moonmind.config import Settings, load_settings
from moonmind.demo import free_port
from moonmind.workflows.orchestrator import repositories


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    monkeypatch.setenv("MOONMIND_DATABASE_URL", database_url)
    monkeypatch.setenv("ORCHESTRATOR_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("ORCHESTRATOR_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    return load_settings()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    upgrade(url)
    application = create_app(_settings(tmp_path, monkeypatch, url))

    @application.get("/test-only/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("secret detail /etc/moonmind/token")

    @application.get("/test-only/unstorable", include_in_schema=False)
    def unstorable() -> None:
        raise sa_exc.DataError("INSERT ...", {}, ValueError("text cannot contain NUL"))

    return application


def _call(app: FastAPI, method: str, path: str, **kwargs: object) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return anyio.run(send)


def test_unexpected_error_is_the_error_shape_with_a_request_id(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="api_service.requests"):
        response = _call(app, "GET", "/test-only/boom")
    assert response.status_code == 500
    body = response.json()
    request_id = response.headers["x-request-id"]
    assert body["error"] == "internal_error"
    assert body["request_id"] == request_id
    assert request_id in body["detail"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged, caplog.text
    assert logged[0].exc_info is not None  # the traceback is in the log, only there
    assert "secret detail" in caplog.text


def test_every_answer_carries_a_request_id_and_a_callers_own_is_kept(app: FastAPI) -> None:
    first = _call(app, "GET", "/health")
    second = _call(app, "GET", "/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    mine = _call(app, "GET", "/health", headers={"X-Request-ID": "ticket-42.a"})
    assert mine.headers["x-request-id"] == "ticket-42.a"
    # A header that could forge a log line is replaced, not echoed.
    forged = _call(app, "GET", "/health", headers={"X-Request-ID": "x" * 65})
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])


def test_405_names_every_method_of_the_path(app: FastAPI) -> None:
    """FastAPI has one route per method; Starlette's Allow named only the first one."""
    response = _call(app, "OPTIONS", "/orchestrator/runs")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"] == "http_error"
    run = _call(app, "DELETE", "/orchestrator/runs/00000000-0000-4000-8000-000000000001")
    assert run.status_code == 405
    assert run.headers["allow"] == "GET"


def test_the_cursor_schema_is_what_the_server_accepts(app: FastAPI) -> None:
    schema = _call(app, "GET", "/openapi.json").json()
    params = schema["paths"]["/orchestrator/runs"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")["schema"]
    variant = next(s for s in cursor.get("anyOf", [cursor]) if s.get("type") == "string")
    assert variant["pattern"] == repositories.CURSOR_PATTERN
    assert variant["maxLength"] == variant["minLength"] == repositories.CURSOR_LENGTH
    # Any string of the pattern is accepted (200), anything else is refused by the schema.
    ok = _call(app, "GET", "/orchestrator/runs", params={"cursor": "0" * 16 + "-" + "a" * 32})
    assert ok.status_code == 200, ok.text
    bad = _call(app, "GET", "/orchestrator/runs", params={"cursor": "W1siMjAyNCJd"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"


def test_a_database_that_cannot_be_reached_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    app = create_app(_settings(tmp_path, monkeypatch, url))
    response = _call(app, "GET", "/orchestrator/runs")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["error"] == "database_unavailable"
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_value_the_database_refuses_is_400_not_500(app: FastAPI) -> None:
    response = _call(app, "GET", "/test-only/unstorable")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "NUL" in response.json()["detail"]


def test_the_schema_refuses_nul_in_stored_text(app: FastAPI) -> None:
    """PostgreSQL text cannot hold NUL: the schema says so, so the fuzzer and clients know."""
    schema = _call(app, "GET", "/openapi.json").json()
    create = schema["components"]["schemas"]["RunCreate"]["properties"]
    assert create["instruction"]["pattern"] == "^[^\\x00]*$"
    response = _call(
        app, "POST", "/orchestrator/runs", json={"instruction": "a\x00b", "target_service": "x"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("instruction:")
