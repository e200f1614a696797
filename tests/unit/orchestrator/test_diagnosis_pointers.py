"""Values from the instruction, the crash loop's exits, the run detail's diagnosis and the
CLI's lines for it (the containers behind these are in tests/integration/diagnosis)."""

from __future__ import annotations

import shlex

import pytest

from moonmind.follow import diagnosis_lines
from moonmind.workflows.orchestrator.diagnosis.analyzers import diagnose, suggested_run
from moonmind.workflows.orchestrator.diagnosis.evidence import Evidence, ServiceState
from moonmind.workflows.orchestrator.diagnosis.instruction import env_value, pinned_version
from moonmind.workflows.orchestrator.diagnosis.kind_rules import env_line
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.plan import Plan, PlanStep
from moonmind.workflows.orchestrator.serializers import diagnosis_of


@pytest.mark.parametrize(
    ("instruction", "value"),
    [
        ("LEDGER_URL=http://ledger:8080", "http://ledger:8080"),
        ("please set LEDGER_URL to http://ledger:8080.", "http://ledger:8080"),
        ('use LEDGER_URL = "http://a b"', "http://a b"),
        ("LEDGER_URL: http://ledger", "http://ledger"),
        ("the ledger client does not start", None),
        ("OTHER_LEDGER_URL=x", None),
    ],
)
def test_env_value(instruction: str, value: str | None) -> None:
    assert env_value(instruction, "LEDGER_URL") == value


@pytest.mark.parametrize(
    ("instruction", "version"),
    [
        ("pin setuptools==66.1.1", "66.1.1"),
        ("Pin Setup_Tools to 66.1", "66.1"),
        ("setuptools is too new", None),
        ("my-setuptools==1.0", None),
    ],
)
def test_pinned_version(instruction: str, version: str | None) -> None:
    dist = "setup-tools" if "Setup_Tools" in instruction else "setuptools"
    assert pinned_version(instruction, dist) == version


def test_env_line_keeps_the_value_literal() -> None:
    assert env_line("A", 'x"$HOME\\') == 'ENV A="x\\"\\$HOME\\\\"'


def test_crash_loop_says_the_first_exit_is_unknown() -> None:
    logs = "fatal: cannot lock /data\nstarting\nfatal: disk full\n"
    ev = Evidence(logs=logs, status="restarting", exit_code=2, restart_count=4)
    loop = next(d for d in diagnose(ev) if d.kind == "crash_loop")
    assert loop.subject == "4 restarts (first exit unknown, last exit 2)"
    assert "first crash said: 'fatal: cannot lock /data'" in loop.evidence
    assert "last crash said: 'fatal: disk full'" in loop.evidence


REFUSED = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)\n"


def test_running_peer_is_not_told_to_be_fixed_first() -> None:
    stack = {"db": ServiceState("running", 0, (5432,))}
    found = diagnose(Evidence(logs=REFUSED, exit_code=1, service="api", stack=stack))
    assert "db is running but refusing connections on port 5432" in found[0].remediation
    assert "fix it first" not in found[0].remediation
    run = suggested_run(found, "api")
    assert run is not None
    assert run["target_service"] == "db"


def test_run_detail_diagnosis_and_the_cli_command() -> None:
    stack = {"db": ServiceState("exited", 1, (5432,))}
    found = diagnose(Evidence(logs=REFUSED, exit_code=1, service="api", stack=stack))
    analysis = {
        "diagnosis": [vars(d) for d in found],
        "suggested_run": suggested_run(found, "api"),
    }
    plan = Plan(steps=[PlanStep(name=StepName.ANALYZE, result={"analysis": analysis})])
    detail = diagnosis_of(plan)
    assert detail is not None
    assert (detail.kind, detail.outcome) == ("connection_refused", "other_service")
    assert detail.suggested_run is not None
    lines = diagnosis_lines(detail.model_dump())
    assert lines[0] == (
        "diagnosis: connection_refused (127.0.0.1:5432 (db exited (exit 1))) [other_service]"
    )
    command = lines[-1].split(": ", 1)[1]
    argv = shlex.split(command)
    assert argv[:6] == ["moonmind", "orchestrator", "submit", "--service", "db", "--follow"]
    assert argv[6] == detail.suggested_run.instruction
    assert diagnosis_of(Plan(steps=[PlanStep(name=StepName.ANALYZE)])) is None
