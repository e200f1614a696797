"""The console shows the gate the API enforces: a patch whose rule guessed a package name,
on a protected service, is approved as that diff (pre-verify), also from the run page.

In-process app over ASGI on a real SQLite database; the approval goes through the console's
form and the same service function as the JSON API."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api_service.console import session as sessions
from api_service.db.base import Database, get_database
from api_service.db.migrate import upgrade
from api_service.main import create_app
from moonmind.auth import Principal
from moonmind.config import Settings, load_settings
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.enums import RunStatus, StepName
from tests.support.auth import ALICE, BOB, principals_toml
from tests.support.factories import create_run, finish_step

pytestmark = pytest.mark.anyio

GUESS = {"package": "frobnicator", "why": "'frobnicator' is not in the known table"}
DIFF = "d" * 64
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(principals_toml(ALICE, BOB))
    return load_settings(config).model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'orchestrator.db'}",
            "broker_folder": str(tmp_path / "celery"),
            "artifact_root": tmp_path / "artifacts",
        }
    )


@pytest.fixture
def db(settings: Settings) -> Database:
    upgrade(settings.database_url)
    return get_database(settings.database_url)


def _parked_after_patch(db: Database, result: dict[str, object]) -> uuid.UUID:
    """alice's run of a pre-run protected service, waiting after a patch that recorded
    ``result`` (as transitions park it when the diff needs a person)."""
    with db.session() as session:
        run = create_run(
            session,
            service=f"svc-{uuid.uuid4().hex[:6]}",
            status=RunStatus.AWAITING_APPROVAL,
            protected={"approval_requirement": "pre-run", "approver_roles": ("sre",)},
        )
        run.requested_by = "alice"
        for step in (StepName.ANALYZE, StepName.PATCH):
            finish_step(session, run, step, started_at=T0, completed_at=T0 + timedelta(seconds=1))
        repo.update_step(session, run, StepName.PATCH, result=result)
        return run.id


async def _as_bob(settings: Settings) -> httpx.AsyncClient:
    cookie = sessions.issue(settings, Principal("bob", frozenset(BOB.roles)))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)),
        base_url="http://console",
        cookies={sessions.COOKIE: cookie},
    )


def _field(html: str, pattern: str) -> str:
    found = re.search(pattern, html)
    assert found is not None, f"{pattern!r} not on the page"
    return found.group(1)


async def test_a_guessed_name_is_approved_as_its_diff_from_the_run_page(
    settings: Settings, db: Database
) -> None:
    run_id = _parked_after_patch(db, {"diff_sha256": DIFF, "guesses": [GUESS]})
    async with await _as_bob(settings) as bob:
        page = (await bob.get(f"/runs/{run_id}")).text
        assert "pre-verify (approves the diff, before anything is built)" in page
        assert _field(page, r'id="gate-diff">([^<]*)<') == DIFF
        assert _field(page, r'name="diff_sha256" value="([^"]+)"') == DIFF
        csrf = _field(page, r'name="csrf_token" value="([^"]+)"')
        posted = await bob.post(
            f"/runs/{run_id}/approve", data={"csrf_token": csrf, "diff_sha256": DIFF}
        )
        assert posted.status_code == 303, posted.text
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None
        assert run.status == RunStatus.RUNNING
        assert run.approval is not None
        assert run.approval["diff_sha256"] == DIFF  # the build step checks this diff


async def test_without_a_guess_the_page_keeps_the_pre_run_gate(
    settings: Settings, db: Database
) -> None:
    run_id = _parked_after_patch(db, {"diff_sha256": DIFF, "guesses": []})
    async with await _as_bob(settings) as bob:
        page = (await bob.get(f"/runs/{run_id}")).text
    assert "pre-run (before patching)" in page
    assert 'name="diff_sha256"' not in page
