"""Real broken containers analyzed, then the patch step on a real git workspace: a fix when
the instruction gives the value, the diagnosis explained when it does not; pointer runs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepContext, StepFailed
from tests.integration.diagnosis.conftest import DB_PORT, HELD_PORT, IDLE_PORT
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker

DOCKERFILE = "FROM moonmind/python-base:bookworm\nCOPY requirements.txt .\n" + (
    'RUN pip install -r requirements.txt\nCMD ["python3", "app.py"]\n'
)


def workspace(root: Path) -> Path:
    ws = root / "ws"
    (ws / "app").mkdir(parents=True)
    (ws / "app" / "Dockerfile").write_text(DOCKERFILE)
    (ws / "app" / "requirements.txt").write_text("requests\nsetuptools>=60 ; python_version>'3'\n")
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=ws, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e.invalid", "commit", "-qm", "app"],
        cwd=ws,
        check=True,
    )
    return ws


def analyzed(root: Path, project: str, service: str, instruction: str) -> StepContext:
    ws = workspace(root)
    ctx = make_context(root, service=service_context(ws, project=project, service=service))
    ctx.instruction = instruction
    outcome = STEP_FUNCTIONS[StepName.ANALYZE](ctx)
    ctx.plan.step(StepName.ANALYZE).result = outcome.result
    return ctx


def analysis(ctx: StepContext) -> dict[str, Any]:
    return dict(ctx.result_of(StepName.ANALYZE)["analysis"])


def test_env_default_from_the_instruction(tmp_path: Path, broken_stack: str) -> None:
    ctx = analyzed(tmp_path, broken_stack, "envvar", "LEDGER_URL=http://ledger:8080 please")
    assert analysis(ctx)["outcome"] == "fix"
    result = STEP_FUNCTIONS[StepName.PATCH](ctx)
    lines = (ctx.workspace / "app" / "Dockerfile").read_text().splitlines()
    assert lines[:2] == [
        "FROM moonmind/python-base:bookworm",
        'ENV LEDGER_URL="http://ledger:8080"',
    ]
    assert result.result["source"] == "rules"


def test_env_without_a_value_is_explained_not_guessed(tmp_path: Path, broken_stack: str) -> None:
    ctx = analyzed(tmp_path, broken_stack, "envvar", "the ledger client does not start")
    assert analysis(ctx)["outcome"] == "explain"
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert failed.value.message.startswith("missing_env_var (LEDGER_URL): set LEDGER_URL in")
    assert (ctx.workspace / "app" / "Dockerfile").read_text() == DOCKERFILE


def test_import_name_mismatch_pins_the_named_version(tmp_path: Path, broken_stack: str) -> None:
    ctx = analyzed(tmp_path, broken_stack, "pinmismatch", "pin setuptools==66.1.1")
    assert analysis(ctx)["outcome"] == "fix"
    STEP_FUNCTIONS[StepName.PATCH](ctx)
    requirements = (ctx.workspace / "app" / "requirements.txt").read_text()
    assert requirements == "requests\nsetuptools==66.1.1 ; python_version>'3'\n"


def test_import_name_mismatch_without_a_version_is_explained(
    tmp_path: Path, broken_stack: str
) -> None:
    ctx = analyzed(tmp_path, broken_stack, "pinmismatch", "it broke after the rebuild")
    assert analysis(ctx)["outcome"] == "explain"
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert "say which in the instruction, e.g. 'setuptools==X.Y'" in failed.value.message


@pytest.mark.parametrize(
    ("service", "other", "words"),
    [
        ("dbclient", "db", "db is exited (exit 1), fix it first"),
        ("idleclient", "idledb", f"idledb is running but refusing connections on port {IDLE_PORT}"),
        ("portbusy", "holder", f"port {HELD_PORT} is already taken by service holder"),
    ],
)
def test_a_pointer_at_another_service_carries_its_run(
    tmp_path: Path, broken_stack: str, service: str, other: str, words: str
) -> None:
    found = analysis(analyzed(tmp_path, broken_stack, service, "diagnose"))
    assert found["outcome"] == "other_service"
    assert words in found["explanation"]
    assert "fix it first" not in found["explanation"] or service == "dbclient"
    run = found["suggested_run"]
    assert run["target_service"] == other
    assert service in run["instruction"]
    assert other in run["instruction"]
    assert str(DB_PORT) in run["instruction"] or service != "dbclient"
