"""One really broken container per failure kind, analyzed by the real analyze step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from moonmind.workflows.orchestrator.diagnosis.analyzers import KINDS
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS
from tests.integration.diagnosis.conftest import DB_PORT, FREE_PORT, HELD_PORT, IDLE_PORT
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker

# service -> (kind, words its subject must contain)
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "pymissing": ("python_missing_module", ("yaml",)),
    "nodemissing": ("node_missing_module", ("left-pad",)),
    "libmissing": ("missing_shared_library", ("libz.so.1",)),
    "cmdmissing": ("command_not_found", ("curl",)),
    "pipmissing": ("pip_no_distribution", ("ledger-client-nosuch",)),
    "importname": ("import_name_mismatch", ("no_such_helper", "os")),
    "pinmismatch": ("import_name_mismatch", ("no_such_helper", "setuptools")),
    "syntax": ("syntax_error", ("/tmp/app.py", ":2")),
    "envvar": ("missing_env_var", ("LEDGER_URL",)),
    "badvalue": ("invalid_config_value", ("'abc'", "int()")),
    "nofile": ("missing_file", ("/etc/ledger/config.yaml",)),
    "denied": ("permission_denied", ("/root/.secret-token", "65534")),
    "readonly": ("read_only_filesystem", ("/var/log/ledger.log",)),
    "portbusy": ("port_in_use", (str(HELD_PORT), "holder")),
    "refused": ("connection_refused", (f"127.0.0.1:{FREE_PORT}",)),
    "dbclient": ("connection_refused", (f"127.0.0.1:{DB_PORT}", "db exited (exit 1)")),
    "idleclient": ("connection_refused", (f"127.0.0.1:{IDLE_PORT}", "idledb running")),
    "oom": ("oom_killed", ("8 MiB",)),
    "sigterm": ("killed_by_signal", ("SIGTERM",)),
    "segv": ("segfault", ("139",)),
    "badexec": ("exec_format_error", ("/server",)),
    "noentry": ("entrypoint_missing", ("/usr/local/bin/ledger-server",)),
    "unhealthy": ("healthcheck_failing", ("ledger not ready",)),
    "looping": ("crash_loop", ("restarts", "first exit unknown", "last exit 2")),
}


def analyze(tmp_path: Path, project: str, service: str) -> tuple[dict[str, Any], str, float]:
    target = service_context(tmp_path, project=project, service=service)
    ctx = make_context(tmp_path, service=target)
    started = time.perf_counter()
    outcome = STEP_FUNCTIONS[StepName.ANALYZE](ctx)
    return outcome.result["analysis"], outcome.message, time.perf_counter() - started


@pytest.mark.parametrize("service", list(EXPECTED))
def test_kind_and_subject(tmp_path: Path, broken_stack: str, service: str) -> None:
    kind, words = EXPECTED[service]
    analysis, message, _ = analyze(tmp_path, broken_stack, service)
    found = {d["kind"]: d for d in analysis["diagnosis"]}
    assert kind in found, f"{service}: {analysis['diagnosis']}\n{analysis['crash_block']}"
    diagnosis = found[kind]
    for word in words:
        assert word in diagnosis["subject"], diagnosis
    assert diagnosis["remediation"]
    assert diagnosis["evidence"]
    assert kind in message  # the step's message (the run detail) names the kind


def test_the_dependency_is_named_as_the_thing_to_fix_first(
    tmp_path: Path, broken_stack: str
) -> None:
    analysis, _, _ = analyze(tmp_path, broken_stack, "dbclient")
    assert analysis["outcome"] == "other_service"
    assert analysis["explanation"].startswith("connection_refused")
    assert "db is exited (exit 1), fix it first" in analysis["explanation"]


def test_a_missing_variable_is_explained_not_patched(tmp_path: Path, broken_stack: str) -> None:
    analysis, _, _ = analyze(tmp_path, broken_stack, "envvar")
    assert analysis["outcome"] == "explain"
    assert "set LEDGER_URL in the compose file's environment" in analysis["explanation"]
    assert analysis["signatures"] == []  # nothing for the rules to act on


def test_every_container_kind_is_covered_and_fast(tmp_path: Path, broken_stack: str) -> None:
    covered = {kind for kind, _ in EXPECTED.values()}
    assert covered | {"build_failed"} == set(KINDS)  # build_failed: test_build_failed.py
    slowest = max(analyze(tmp_path, broken_stack, s)[2] for s in ("envvar", "oom", "looping"))
    assert slowest < 1.0
