"""Real API responses checked against specs/orchestrator.openapi.yaml.

Every response body is validated with the contract's schema for that path, method and
status (``$ref``s inlined, OpenAPI 3.0 semantics, formats checked). On top of that, every
property the contract declares for a run, plan, step or artifact must be present in what
we send, not only the required ones. Our own extra fields are allowed: the contract never
sets ``additionalProperties: false``.

The API runs in-process over ASGI against the session's migrated PostgreSQL database and
RabbitMQ; POST goes through ``docker-compose config`` on a throw-away git workspace.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from amqp.exceptions import NotFound
from kombu import Connection
from openapi_schema_validator import OAS30Validator
from sqlalchemy import select

from api_service.db.base import Database, get_database
from api_service.db.models import RunArtifact
from api_service.main import create_app
from moonmind.config import Settings
from moonmind.workflows.orchestrator import repositories
from moonmind.workflows.orchestrator.enums import ArtifactType, RunStatus, StepName, StepStatus
from moonmind.workflows.orchestrator.events import RunFollower
from moonmind.workflows.orchestrator.storage import ArtifactStore
from tests.support.auth import ALICE, BOB, CAROL, CAST, VIC, Caller
from tests.support.broker import delete_queues
from tests.support.factories import ALL_STEPS, add_artifact, create_run, finish_step
from tests.support.worker_side import env_settings

pytestmark = pytest.mark.anyio

SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "orchestrator.openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]

# Contract properties a model may leave out instead of sending null (the contract types them
# as non-nullable strings, so "absent" is the only conforming way to say "not yet").
OMITTED_WHEN_NULL: dict[str, frozenset[str]] = {
    "PlanStepState": frozenset({"celery_task_id", "message"}),
}

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# -- contract helpers ---------------------------------------------------------------------


def _resolve(node: Any) -> Any:
    """Inline every local ``$ref`` (the contract has no recursive schemas)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = SPEC
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target)
        return {key: _resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    return node


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    responses = SPEC["paths"][path][method]["responses"]
    response = _resolve(responses[str(status)])  # may be a $ref to components/responses
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def assert_conforms(body: Any, path: str, method: str, status: int) -> None:
    validator = OAS30Validator(
        response_schema(path, method, status), format_checker=OAS30Validator.FORMAT_CHECKER
    )
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]
    assert not errors, f"{method.upper()} {path} {status} breaks the contract: {errors}"


def declared_properties(name: str) -> set[str]:
    """Every property a component schema declares, through allOf."""
    schema = _resolve(SCHEMAS[name])
    parts = schema.get("allOf", [schema])
    return {prop for part in parts for prop in part.get("properties", {})}


def assert_declares_all(body: dict[str, Any], name: str) -> None:
    missing = declared_properties(name) - set(body) - OMITTED_WHEN_NULL.get(name, frozenset())
    assert not missing, f"{name} lacks contract properties {sorted(missing)}"


def assert_run_detail_complete(body: dict[str, Any]) -> None:
    assert_declares_all(body, "RunDetail")
    assert_declares_all(body["action_plan"], "ActionPlan")
    for step in body["action_plan"]["steps"]:
        assert_declares_all(step, "PlanStepDefinition")
    for step in body["steps"]:
        assert_declares_all(step, "PlanStepState")
    for artifact in body["artifacts"]:
        assert_declares_all(artifact, "RunArtifact")


# -- environment --------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git repo with a two-service compose file: `app` is built, `sibling` is pulled."""
    root = tmp_path / "stack"
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text(
        'FROM busybox\nCOPY requirements.txt /app/\nCMD ["true"]\n'
    )
    (root / "app" / "requirements.txt").write_text("")
    (root / "docker-compose.yaml").write_text(
        "services:\n  app:\n    build: ./app\n  sibling:\n    image: busybox\n"
    )
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "stack")
    return root


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    name = f"orchestrator.run.contract-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues(amqp_url, name)


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    workspace: Path,
    migrated_postgres: str,
    amqp_url: str,
    queue_name: str,
) -> Iterator[Settings]:
    with env_settings(
        monkeypatch,
        tmp_path,
        migrated_postgres,
        amqp_url,
        queue_name,
        ORCHESTRATOR_WORKSPACE=str(workspace),
    ) as loaded:
        yield loaded


@pytest.fixture
def db(settings: Settings) -> Database:
    """The very Database object the app uses (shared per URL, disposed by conftest)."""
    return get_database(settings.database_url)


@pytest.fixture
def store(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.artifact_root_path)


@pytest.fixture
async def authed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with principals configured (alice operator, bob approver+sre, ...)."""
    configured = settings.model_copy(
        update={"auth_principals": tuple(caller.config() for caller in CAST)}
    )
    transport = httpx.ASGITransport(app=create_app(configured))
    async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as c:
        yield c


# -- seeded runs --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededArtifact:
    artifact_id: uuid.UUID
    data: bytes
    checksum: str
    content_type: str


@dataclass(frozen=True)
class Seeded:
    service: str
    finished_run: uuid.UUID
    pending_run: uuid.UUID
    artifacts: dict[str, SeededArtifact]  # by relative path, all of finished_run
    other_run_artifact: uuid.UUID  # belongs to pending_run


def seed_runs(db: Database, store: ArtifactStore) -> Seeded:
    """A finished run with every step recorded and four artifacts, plus a pending run."""
    service = f"svc-{uuid.uuid4().hex[:8]}"
    files = {
        "analysis.json": (b'{"signature": "missing_python_module"}\n', ArtifactType.PLAN_SNAPSHOT),
        "patch.diff": (
            b"--- a/app/requirements.txt\n+++ b/app/requirements.txt\n+requests\n",
            ArtifactType.PATCH_DIFF,
        ),
        "build.log": (b"Step 1/3 : FROM busybox\n" * 50, ArtifactType.BUILD_LOG),
        "pre-images/app/requirements.txt": (b"", ArtifactType.PLAN_SNAPSHOT),
    }
    with db.session() as session:
        run = create_run(
            session,
            service=service,
            status=RunStatus.SUCCEEDED,
            queued_at=T0,
            started_at=T0 + timedelta(seconds=1),
            completed_at=T0 + timedelta(minutes=2),
            message="app is healthy",
        )
        rows: dict[str, RunArtifact] = {}
        for relpath, (data, kind) in files.items():
            rows[relpath] = add_artifact(
                session,
                store,
                run,
                relpath=relpath,
                data=data,
                type=kind,
                kind=Path(relpath).stem,
                content_type="application/json" if relpath.endswith(".json") else "text/plain",
            )
        for index, step in enumerate(ALL_STEPS):
            finish_step(
                session,
                run,
                step,
                started_at=T0 + timedelta(seconds=10 * index + 1),
                completed_at=T0 + timedelta(seconds=10 * index + 9),
                artifact_refs=[rows["build.log"].id] if step == StepName.BUILD else [],
            )
        pending = create_run(session, service=service, queued_at=T0 + timedelta(minutes=5))
        other = add_artifact(
            session,
            store,
            pending,
            relpath="analysis.json",
            data=b"{}",
            type=ArtifactType.PLAN_SNAPSHOT,
            kind="analysis",
            content_type="application/json",
        )
        seeded = Seeded(
            service=service,
            finished_run=run.id,
            pending_run=pending.id,
            artifacts={
                relpath: SeededArtifact(
                    artifact_id=row.id,
                    data=files[relpath][0],
                    checksum=row.checksum,
                    content_type=row.content_type,
                )
                for relpath, row in rows.items()
            },
            other_run_artifact=other.id,
        )
    return seeded


@pytest.fixture
def seeded(db: Database, store: ArtifactStore) -> Seeded:
    return seed_runs(db, store)


def queued_messages(amqp_url: str, queue: str) -> int:
    """Messages waiting in ``queue``; 0 for a queue nothing was ever published to."""
    with Connection(amqp_url) as conn:
        try:
            _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        except NotFound:
            return 0
    return int(count)


# -- POST /orchestrator/runs --------------------------------------------------------------


class TestCreateRun:
    async def test_accepted_run_matches_run_summary_and_is_queued(
        self, api: httpx.AsyncClient, amqp_url: str, queue_name: str, db: Database
    ) -> None:
        response = await api.post(
            "/orchestrator/runs",
            json={"instruction": "fix the missing dependency", "target_service": "app"},
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert_conforms(body, "/orchestrator/runs", "post", 202)
        assert_declares_all(body, "RunSummary")
        assert body["status"] == "pending"
        assert body["target_service"] == "app"
        assert body["priority"] == "normal"
        assert queued_messages(amqp_url, queue_name) == 1
        with db.session() as session:
            assert repositories.get_run(session, uuid.UUID(body["run_id"])) is not None

    async def test_high_priority_and_token_are_kept(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            "/orchestrator/runs",
            json={
                "instruction": "restart sibling",
                "target_service": "sibling",
                "priority": "high",
                "approval_token": "tok-1",
            },
        )
        assert response.status_code == 202, response.text
        assert_conforms(response.json(), "/orchestrator/runs", "post", 202)
        assert response.json()["priority"] == "high"

    async def test_unknown_service_is_400_naming_the_real_ones(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.post(
            "/orchestrator/runs", json={"instruction": "fix it", "target_service": "nope"}
        )
        assert response.status_code == 400
        body = response.json()
        assert_conforms(body, "/orchestrator/runs", "post", 400)
        assert body["error"] == "unknown_service"
        assert "app" in body["remediation"]
        assert "sibling" in body["remediation"]

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param({"target_service": "app"}, id="missing-instruction"),
            pytest.param({"instruction": "fix it"}, id="missing-service"),
            pytest.param({"instruction": "   ", "target_service": "app"}, id="blank-instruction"),
            pytest.param(
                {"instruction": "fix", "target_service": "app", "priority": "urgent"},
                id="unknown-priority",
            ),
            pytest.param(
                {"instruction": "fix", "target_service": "app", "colour": "red"},
                id="unknown-field",
            ),
            pytest.param(["not", "an", "object"], id="not-an-object"),
        ],
    )
    async def test_invalid_body_is_400_error_response(
        self, api: httpx.AsyncClient, payload: Any
    ) -> None:
        response = await api.post("/orchestrator/runs", json=payload)
        assert response.status_code == 400
        assert_conforms(response.json(), "/orchestrator/runs", "post", 400)
        assert response.json()["error"] == "invalid_request"


# -- GET /orchestrator/runs ---------------------------------------------------------------


class TestListRuns:
    async def test_filtered_list_matches_contract_newest_first(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.get("/orchestrator/runs", params={"service": seeded.service})
        assert response.status_code == 200
        body = response.json()
        assert_conforms(body, "/orchestrator/runs", "get", 200)
        assert [run["run_id"] for run in body["runs"]] == [
            str(seeded.pending_run),
            str(seeded.finished_run),
        ]
        for run in body["runs"]:
            assert_declares_all(run, "RunSummary")
        assert "next_cursor" not in body

    async def test_every_stored_run_conforms(self, api: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await api.get("/orchestrator/runs", params={"limit": 100})
        assert response.status_code == 200
        assert_conforms(response.json(), "/orchestrator/runs", "get", 200)

    async def test_status_filter(self, api: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await api.get(
            "/orchestrator/runs", params={"service": seeded.service, "status": "succeeded"}
        )
        assert response.status_code == 200
        assert_conforms(response.json(), "/orchestrator/runs", "get", 200)
        assert [run["run_id"] for run in response.json()["runs"]] == [str(seeded.finished_run)]


# -- GET /orchestrator/runs/{run_id} ------------------------------------------------------


class TestGetRun:
    async def test_finished_run_detail_matches_contract_with_every_property(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.get(f"/orchestrator/runs/{seeded.finished_run}")
        assert response.status_code == 200
        body = response.json()
        assert_conforms(body, "/orchestrator/runs/{run_id}", "get", 200)
        assert_run_detail_complete(body)
        assert [step["name"] for step in body["steps"]] == [s.value for s in ALL_STEPS]
        assert all(step["status"] == "succeeded" for step in body["steps"])
        build = next(step for step in body["steps"] if step["name"] == "build")
        assert build["artifact_refs"] == [str(seeded.artifacts["build.log"].artifact_id)]
        assert {a["path"] for a in body["artifacts"]} == set(seeded.artifacts)

    async def test_pending_run_detail_matches_contract(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.get(f"/orchestrator/runs/{seeded.pending_run}")
        assert response.status_code == 200
        body = response.json()
        assert_run_detail_complete(body)
        assert_conforms(body, "/orchestrator/runs/{run_id}", "get", 200)

    async def test_unknown_run_is_404_error_response(self, api: httpx.AsyncClient) -> None:
        response = await api.get(f"/orchestrator/runs/{uuid.uuid4()}")
        assert response.status_code == 404
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}", "get", 404)
        assert response.json()["error"] == "run_not_found"

    @pytest.mark.parametrize("run_id", ["not-a-uuid", "1234", "%2e%2e"])
    async def test_malformed_id_is_400_error_response(
        self, api: httpx.AsyncClient, run_id: str
    ) -> None:
        response = await api.get(f"/orchestrator/runs/{run_id}")
        assert response.status_code == 400
        # Same ErrorResponse shape the contract gives this path's errors.
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}", "get", 404)
        assert response.json()["error"] == "invalid_request"


# -- GET /orchestrator/runs/{run_id}/artifacts --------------------------------------------


class TestListArtifacts:
    async def test_artifacts_match_contract_with_every_property(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.get(f"/orchestrator/runs/{seeded.finished_run}/artifacts")
        assert response.status_code == 200
        body = response.json()
        assert_conforms(body, "/orchestrator/runs/{run_id}/artifacts", "get", 200)
        for artifact in body["artifacts"]:
            assert_declares_all(artifact, "RunArtifact")
        by_path = {a["path"]: a for a in body["artifacts"]}
        assert set(by_path) == set(seeded.artifacts)
        for relpath, expected in seeded.artifacts.items():
            assert by_path[relpath]["artifact_id"] == str(expected.artifact_id)
            assert by_path[relpath]["checksum"] == hashlib.sha256(expected.data).hexdigest()
            assert by_path[relpath]["size_bytes"] == len(expected.data)

    async def test_run_without_artifacts_lists_none(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        with db.session() as session:
            run_id = create_run(session, service=f"svc-{uuid.uuid4().hex[:8]}").id
        response = await api.get(f"/orchestrator/runs/{run_id}/artifacts")
        assert response.status_code == 200
        assert response.json() == {"artifacts": []}

    async def test_unknown_run_is_404(self, api: httpx.AsyncClient) -> None:
        response = await api.get(f"/orchestrator/runs/{uuid.uuid4()}/artifacts")
        assert response.status_code == 404
        assert response.json()["error"] == "run_not_found"

    async def test_every_artifact_type_is_in_the_contract(
        self, api: httpx.AsyncClient, db: Database, store: ArtifactStore
    ) -> None:
        with db.session() as session:
            run = create_run(session, service=f"svc-{uuid.uuid4().hex[:8]}")
            for artifact_type in ArtifactType:
                add_artifact(
                    session,
                    store,
                    run,
                    relpath=f"{artifact_type.value}.txt",
                    data=artifact_type.value.encode(),
                    type=artifact_type,
                    kind=artifact_type.value,
                )
            run_id = run.id
        response = await api.get(f"/orchestrator/runs/{run_id}/artifacts")
        assert response.status_code == 200
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/artifacts", "get", 200)
        assert {a["type"] for a in response.json()["artifacts"]} == set(ArtifactType)


# -- GET /orchestrator/runs/{run_id}/artifacts/{artifact_id} ------------------------------


# httpx removes literal dot segments before sending ("a/../b" goes out as "b"), so a raw ".."
# reaches the app only percent-encoded: "%2e%2e" arrives in the ASGI path as a literal "..".
TRAVERSALS = (
    "../../../../etc/passwd",
    "%2e%2e",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fanalysis.json",
)


class TestDownloadArtifact:
    @pytest.mark.parametrize(
        "relpath", ["analysis.json", "patch.diff", "build.log", "pre-images/app/requirements.txt"]
    )
    async def test_bytes_checksum_and_content_type(
        self, api: httpx.AsyncClient, seeded: Seeded, relpath: str
    ) -> None:
        expected = seeded.artifacts[relpath]
        response = await api.get(
            f"/orchestrator/runs/{seeded.finished_run}/artifacts/{expected.artifact_id}"
        )
        assert response.status_code == 200
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.content == expected.data
        assert digest == expected.checksum
        assert response.headers["x-checksum-sha256"] == expected.checksum
        media_type = response.headers["content-type"].split(";")[0].strip()
        assert media_type == ("application/json" if relpath.endswith(".json") else "text/plain")
        assert expected.content_type == media_type

    async def test_traversal_never_serves_a_file(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        for tail in TRAVERSALS:
            response = await api.get(f"/orchestrator/runs/{seeded.finished_run}/artifacts/{tail}")
            assert response.status_code in {400, 404}, (tail, response.text)
            assert_conforms(response.json(), "/orchestrator/runs/{run_id}", "get", 404)

    @pytest.mark.parametrize(
        "tail",
        TRAVERSALS,
    )
    async def test_traversal_is_404(
        self, api: httpx.AsyncClient, seeded: Seeded, tail: str
    ) -> None:
        response = await api.get(f"/orchestrator/runs/{seeded.finished_run}/artifacts/{tail}")
        assert response.status_code == 404, response.text
        assert response.json()["error"] in {"not_found", "artifact_not_found"}

    async def test_artifact_of_another_run_is_404(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.get(
            f"/orchestrator/runs/{seeded.finished_run}/artifacts/{seeded.other_run_artifact}"
        )
        assert response.status_code == 404
        assert response.json()["error"] == "artifact_not_found"

    async def test_random_artifact_id_is_404(self, api: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await api.get(
            f"/orchestrator/runs/{seeded.finished_run}/artifacts/{uuid.uuid4()}"
        )
        assert response.status_code == 404
        assert response.json()["error"] == "artifact_not_found"

    @pytest.mark.parametrize(
        "artifact_id",
        ["build.log", "analysis.json", "etc%2fpasswd", "%2fetc%2fpasswd", "C:%5cwindows", "~root"],
    )
    async def test_path_like_artifact_id_is_rejected(
        self, api: httpx.AsyncClient, seeded: Seeded, artifact_id: str
    ) -> None:
        response = await api.get(
            f"/orchestrator/runs/{seeded.finished_run}/artifacts/{artifact_id}"
        )
        assert response.status_code in {400, 404}, response.text
        assert "error" in response.json()

    async def test_tampered_row_path_never_leaves_the_run_folder(
        self, api: httpx.AsyncClient, seeded: Seeded, db: Database, tmp_path: Path
    ) -> None:
        secret = tmp_path / "secret.txt"
        secret.write_text("not an artifact")
        with db.session() as session:
            row = session.scalars(
                select(RunArtifact).where(
                    RunArtifact.id == seeded.artifacts["build.log"].artifact_id
                )
            ).one()
            row.path = f"../../{secret.name}"
        response = await api.get(f"/orchestrator/runs/{seeded.finished_run}/artifacts/{row.id}")
        assert response.status_code == 404
        assert b"not an artifact" not in response.content

    async def test_row_without_file_is_404(
        self, api: httpx.AsyncClient, seeded: Seeded, store: ArtifactStore
    ) -> None:
        expected = seeded.artifacts["patch.diff"]
        (store.run_dir(seeded.finished_run) / "patch.diff").unlink()
        response = await api.get(
            f"/orchestrator/runs/{seeded.finished_run}/artifacts/{expected.artifact_id}"
        )
        assert response.status_code == 404
        assert response.json()["error"] == "artifact_missing"


# -- POST /orchestrator/runs/{run_id}/approvals and /retry ---------------------------------

PROTECTED = {
    "approval_requirement": "pre-run",
    "approver_roles": ("sre",),
    "approval_valid_minutes": 10,
}


def _run_with(
    db: Database, status: RunStatus, *, protected: bool = False, requested_by: str = "alice"
) -> uuid.UUID:
    with db.session() as session:
        run = create_run(
            session,
            service=f"svc-{uuid.uuid4().hex[:8]}",
            status=status,
            protected=PROTECTED if protected else None,
        )
        run.requested_by = requested_by
        if status == RunStatus.FAILED:
            finish_step(
                session,
                run,
                StepName.ANALYZE,
                status=StepStatus.FAILED,
                started_at=T0,
                completed_at=T0 + timedelta(seconds=1),
                message="engine down",
            )
        return run.id


APPROVAL = {"approver": {"id": "bob", "role": "sre"}, "token": "t-123"}


def _approval(caller: Caller, role: str, approver_id: str | None = None) -> dict[str, Any]:
    return {"approver": {"id": approver_id or caller.id, "role": role}, "token": "t-123"}


APPROVALS = "/orchestrator/runs/{run_id}/approvals"


class TestApprove:
    async def test_waiting_run_is_approved_and_resumed(
        self, authed: httpx.AsyncClient, db: Database, amqp_url: str, queue_name: str
    ) -> None:
        run_id = _run_with(db, RunStatus.AWAITING_APPROVAL, protected=True)
        response = await authed.post(
            f"/orchestrator/runs/{run_id}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert_conforms(body, APPROVALS, "post", 200)
        assert body["status"] == "running"
        assert body["approval_status"] == "granted"
        assert body["approval"]["approver_id"] == "bob"
        assert queued_messages(amqp_url, queue_name) == 1  # the gated step, patch

    async def test_unprotected_run_is_409(self, authed: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await authed.post(
            f"/orchestrator/runs/{seeded.pending_run}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert response.status_code == 409
        assert_conforms(response.json(), APPROVALS, "post", 409)

    @pytest.mark.parametrize(
        ("caller", "body", "why"),
        [
            pytest.param(BOB, _approval(BOB, "intern"), "does not hold", id="role-not-held"),
            pytest.param(CAROL, _approval(CAROL, "approver"), "allowed roles: sre", id="gate-role"),
            pytest.param(CAROL, _approval(CAROL, "sre"), "does not hold", id="claims-sre"),
            pytest.param(CAROL, _approval(CAROL, "sre", "bob"), "caller is 'carol'", id="as-bob"),
            pytest.param(
                ALICE, _approval(ALICE, "sre", "bob"), "caller is 'alice'", id="requester"
            ),
            pytest.param(ALICE, _approval(ALICE, "sre"), "four-eyes", id="own-run"),
            pytest.param(VIC, _approval(VIC, "sre", "vic"), "approver role", id="not-approver"),
        ],
    )
    async def test_not_this_approver_is_403(
        self, authed: httpx.AsyncClient, db: Database, caller: Caller, body: Any, why: str
    ) -> None:
        run_id = _run_with(db, RunStatus.AWAITING_APPROVAL, protected=True)
        response = await authed.post(
            f"/orchestrator/runs/{run_id}/approvals", json=body, headers=caller.headers
        )
        assert response.status_code == 403, response.text
        assert_conforms(response.json(), APPROVALS, "post", 403)
        assert why in response.json()["detail"]

    async def test_self_approval_is_403_whatever_the_roles(
        self, settings: Settings, db: Database
    ) -> None:
        root = Caller("root", ("admin", "sre"))  # admin holds every API role, still not this
        app = create_app(settings.model_copy(update={"auth_principals": (root.config(),)}))
        run_id = _run_with(db, RunStatus.AWAITING_APPROVAL, protected=True, requested_by="root")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as admin:
            response = await admin.post(
                f"/orchestrator/runs/{run_id}/approvals",
                json=_approval(root, "sre"),
                headers=root.headers,
            )
        assert response.status_code == 403
        assert "four-eyes" in response.json()["detail"]

    async def test_unknown_run_is_404(self, authed: httpx.AsyncClient) -> None:
        response = await authed.post(
            f"/orchestrator/runs/{uuid.uuid4()}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert response.status_code == 404
        assert response.json()["error"] == "run_not_found"

    async def test_missing_approver_is_400(self, api: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await api.post(
            f"/orchestrator/runs/{seeded.pending_run}/approvals", json={"token": "t"}
        )
        assert response.status_code == 400
        assert "approver" in response.json()["detail"]


class TestRetry:
    async def test_failed_run_is_queued_again(
        self, api: httpx.AsyncClient, db: Database, amqp_url: str, queue_name: str
    ) -> None:
        run_id = _run_with(db, RunStatus.FAILED)
        response = await api.post(f"/orchestrator/runs/{run_id}/retry", json={"reason": "x"})
        assert response.status_code == 202, response.text
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/retry", "post", 202)
        assert response.json()["status"] == "pending"
        assert queued_messages(amqp_url, queue_name) == 1

    async def test_succeeded_run_is_409(self, api: httpx.AsyncClient, seeded: Seeded) -> None:
        response = await api.post(f"/orchestrator/runs/{seeded.finished_run}/retry")
        assert response.status_code == 409
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/retry", "post", 409)

    async def test_unknown_step_is_400(self, api: httpx.AsyncClient, db: Database) -> None:
        run_id = _run_with(db, RunStatus.FAILED)
        response = await api.post(
            f"/orchestrator/runs/{run_id}/retry", json={"resume_from_step": "deploy"}
        )
        assert response.status_code == 400

    async def test_conflict_says_retry_rejected(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.post(f"/orchestrator/runs/{seeded.finished_run}/retry")
        assert response.status_code == 409
        assert response.json()["error"] == "retry_rejected"
        assert "failed or rolled_back" in response.json()["remediation"]


class TestCancel:
    async def test_pending_run_ends_cancelled_at_once(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        run_id = _run_with(db, RunStatus.PENDING)
        response = await api.post(f"/orchestrator/runs/{run_id}/cancel")
        assert response.status_code == 202, response.text
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/cancel", "post", 202)
        assert response.json()["status"] == "cancelled"
        assert response.json()["completed_at"] is not None
        listed = await api.get("/orchestrator/runs", params={"status": "cancelled"})
        assert str(run_id) in {run["run_id"] for run in listed.json()["runs"]}

    async def test_ended_run_is_409_cancel_rejected(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await api.post(f"/orchestrator/runs/{seeded.finished_run}/cancel")
        assert response.status_code == 409
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/cancel", "post", 409)
        assert response.json()["error"] == "cancel_rejected"

    async def test_running_run_is_asked_to_stop(self, api: httpx.AsyncClient, db: Database) -> None:
        run_id = _run_with(db, RunStatus.RUNNING)
        response = await api.post(f"/orchestrator/runs/{run_id}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "running"  # the worker stops it at a safe point
        detail = (await api.get(f"/orchestrator/runs/{run_id}")).json()
        assert detail["metrics_snapshot"]["cancel_requested"]["at"]

    async def test_unknown_run_is_404(self, api: httpx.AsyncClient) -> None:
        response = await api.post(f"/orchestrator/runs/{uuid.uuid4()}/cancel")
        assert response.status_code == 404
        assert_conforms(response.json(), "/orchestrator/runs/{run_id}/cancel", "post", 404)


class TestApprovalCodes:
    async def test_conflict_says_approval_rejected(
        self, authed: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        response = await authed.post(
            f"/orchestrator/runs/{seeded.pending_run}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert response.status_code == 409
        assert response.json()["error"] == "approval_rejected"
        assert "approval_requirement" in response.json()["remediation"]


# -- authentication -----------------------------------------------------------------------


def _operations(run_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """(spec path, method, concrete URL) of every operation the contract declares."""
    return [
        (path, method, path.replace("{run_id}", str(run_id)))
        for path, item in SPEC["paths"].items()
        for method in item
    ]


class TestAuthentication:
    async def test_no_or_unknown_token_is_401_everywhere(
        self, authed: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        for path, method, url in _operations(seeded.finished_run):
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                response = await authed.request(method, url, json={}, headers=headers)
                assert response.status_code == 401, (method, url, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert_conforms(response.json(), path, method, 401)
                assert response.json()["error"] == "unauthenticated"

    async def test_health_and_docs_stay_open(self, authed: httpx.AsyncClient) -> None:
        for url in ("/health", "/docs", "/openapi.json"):
            assert (await authed.get(url)).status_code == 200, url

    async def test_app_declares_the_bearer_scheme(self, authed: httpx.AsyncClient) -> None:
        schema = (await authed.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert {"bearerAuth": []} in schema["paths"]["/orchestrator/runs"]["post"]["security"]
        assert "bearerAuth" in SPEC["components"]["securitySchemes"]

    async def test_viewer_reads_but_may_not_submit(
        self, authed: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        listed = await authed.get("/orchestrator/runs", headers=VIC.headers)
        assert listed.status_code == 200
        response = await authed.post(
            "/orchestrator/runs",
            json={"instruction": "fix it", "target_service": "app"},
            headers=VIC.headers,
        )
        assert response.status_code == 403
        assert_conforms(response.json(), "/orchestrator/runs", "post", 403)

    async def test_operator_submits_as_itself(self, authed: httpx.AsyncClient) -> None:
        body = {"instruction": "fix it", "target_service": "app"}
        response = await authed.post("/orchestrator/runs", json=body, headers=ALICE.headers)
        assert response.status_code == 202, response.text
        assert response.json()["requested_by"] == "alice"
        same = await authed.post(
            "/orchestrator/runs", json={**body, "requested_by": "alice"}, headers=ALICE.headers
        )
        assert same.status_code == 202
        other = await authed.post(
            "/orchestrator/runs", json={**body, "requested_by": "bob"}, headers=ALICE.headers
        )
        assert other.status_code == 403
        assert_conforms(other.json(), "/orchestrator/runs", "post", 403)

    async def test_retry_records_who_retried(self, authed: httpx.AsyncClient, db: Database) -> None:
        run_id = _run_with(db, RunStatus.FAILED)
        url = f"/orchestrator/runs/{run_id}/retry"
        assert (await authed.post(url, headers=CAROL.headers)).status_code == 403
        response = await authed.post(url, headers=ALICE.headers)
        assert response.status_code == 202, response.text
        detail = (await authed.get(f"/orchestrator/runs/{run_id}", headers=VIC.headers)).json()
        assert detail["metrics_snapshot"]["retried_by"] == ["alice"]

    async def test_retry_of_a_protected_run_waits_at_its_gate_again(
        self, authed: httpx.AsyncClient, db: Database, amqp_url: str, queue_name: str
    ) -> None:
        """A retry voids the approval the run had: resumed at its gated step, it waits."""
        run_id = _run_with(db, RunStatus.ROLLED_BACK, protected=True)  # resumes at patch
        response = await authed.post(f"/orchestrator/runs/{run_id}/retry", headers=ALICE.headers)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "awaiting_approval", response.json()
        assert response.json()["approval_status"] == "awaiting"
        assert queued_messages(amqp_url, queue_name) == 0  # nothing runs before the approval
        approved = await authed.post(
            f"/orchestrator/runs/{run_id}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "running"
        assert queued_messages(amqp_url, queue_name) == 1  # the gated step, patch

    async def test_local_principal_without_configured_principals(
        self, api: httpx.AsyncClient
    ) -> None:
        body = {"instruction": "fix it", "target_service": "app"}
        response = await api.post("/orchestrator/runs", json=body)
        assert response.status_code == 202
        assert response.json()["requested_by"] == "local"


# -- errors outside the domain ------------------------------------------------------------


class TestHttpErrors:
    async def test_method_not_allowed_names_the_allowed_methods(
        self, api: httpx.AsyncClient, seeded: Seeded
    ) -> None:
        """RFC 9110 15.5.6: a 405 response must carry Allow."""
        response = await api.delete(f"/orchestrator/runs/{seeded.finished_run}")
        assert response.status_code == 405
        assert response.json()["error"] == "http_error"
        assert "GET" in response.headers["allow"]

    async def test_unknown_path_is_not_found(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/orchestrator/nothing-here")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


# -- audit ----------------------------------------------------------------------------


class TestAudit:
    async def test_refusals_and_approvals_are_events_on_the_run(
        self, authed: httpx.AsyncClient, db: Database, store: ArtifactStore
    ) -> None:
        """Who tried what stays on the run (detail and SSE), refusals with their reason."""
        run_id = _run_with(db, RunStatus.AWAITING_APPROVAL, protected=True)
        forged = await authed.post(
            f"/orchestrator/runs/{run_id}/approvals",
            json=_approval(CAROL, "sre", "bob"),
            headers=CAROL.headers,
        )
        assert forged.status_code == 403
        granted = await authed.post(
            f"/orchestrator/runs/{run_id}/approvals", json=APPROVAL, headers=BOB.headers
        )
        assert granted.status_code == 200, granted.text
        detail = (await authed.get(f"/orchestrator/runs/{run_id}", headers=BOB.headers)).json()
        trail = [(e["action"], e["principal"]) for e in detail["metrics_snapshot"]["audit"]]
        assert trail == [("approval_refused", "carol"), ("approval_granted", "bob")]
        assert "caller is 'carol'" in detail["metrics_snapshot"]["audit"][0]["reason"]

        follower = RunFollower(db, store, run_id)
        audit_events = [e.data for e in follower.poll() if e.kind == "audit"]
        assert [(e["action"], e["principal"]) for e in audit_events] == trail
        assert [e for e in follower.poll() if e.kind == "audit"] == []  # each sent once
