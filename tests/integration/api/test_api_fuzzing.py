"""Schemathesis over the app's own OpenAPI, against the real API process, authenticated.

Bounded (a fixed seed and a few examples per operation) so it stays well under a minute.
The checks: no 5xx, every status, content type, body and header the schema declares,
and the RFC 9110 rules for methods the schema does not list (405 with a complete
``Allow``). Read-only operations are pointed at a real run (a cancelled one, so its event
stream ends) so they answer 200, not only 404; the others get generated ids.

``--checks all`` by hand leaves one finding, on purpose: a ``target_service`` the compose
file does not define is refused with 400 (``unknown_service``, documented in the POST's
responses and in the upstream contract), which ``positive_data_acceptance`` counts as a
schema-valid request refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import httpx

from tests.integration.api.conftest import ApiServer
from tests.support.auth import ALICE

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
)
READ_ONLY = r"^/orchestrator/runs/\{run_id\}(/artifacts|/events)?$"


def _cancelled_run(server: ApiServer) -> str:
    http = httpx.Client(base_url=server.base_url, headers=ALICE.headers, timeout=60)
    with http:
        created = http.post(
            "/orchestrator/runs", json={"instruction": "fuzz target", "target_service": "app"}
        )
        assert created.status_code == 202, created.text
        run_id = str(created.json()["run_id"])
        assert http.post(f"/orchestrator/runs/{run_id}/cancel").status_code == 202
        assert http.get(f"/orchestrator/runs/{run_id}").json()["status"] == "cancelled"
    return run_id


def _config(run_id: str) -> str:
    return "\n".join(
        [
            "seed = 20261124",
            "request-timeout = 20",
            "max-stream-events = 20",
            "[headers]",
            f'Authorization = "Bearer {ALICE.token}"',
            "[generation]",
            "max-examples = 12",
            "[phases.stateful]",
            "max-steps = 6",
            "[phases.stateful.generation]",
            "max-examples = 10",
            "[[operations]]",
            f"include-path-regex = {json.dumps(READ_ONLY)}",
            "[operations.parameters]",
            f'"path.run_id" = "{run_id}"',
            "",
        ]
    )


def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    api_server: ApiServer, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(_cancelled_run(api_server)))
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{api_server.base_url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--report",
            "junit,ndjson",
            "--report-junit-path",
            str(junit),
            "--report-ndjson-path",
            str(tmp_path / "events.ndjson"),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    names = {case.get("name") for case in cases}
    assert len(names - {"Stateful tests"}) == 10, names  # every operation, and sequences
    answers = _answers(tmp_path / "events.ndjson")
    # Not a run of 401s and 404s: the token is used, real runs are read and created, and
    # undeclared methods were tried.
    for operation in (
        "GET /orchestrator/runs",
        "GET /orchestrator/runs/{run_id}",
        "GET /orchestrator/runs/{run_id}/artifacts",
        "GET /orchestrator/runs/{run_id}/events",
    ):
        assert answers[(operation, 200)] > 0, (operation, answers)
    assert answers[("POST /orchestrator/runs", 202)] > 0, answers
    assert sum(n for (_, status), n in answers.items() if status == 405) >= 9, answers


def _answers(ndjson: Path) -> Counter[tuple[str, int]]:
    """(operation, status) of every response schemathesis recorded."""
    found: Counter[tuple[str, int]] = Counter()
    for line in ndjson.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event:
            continue
        recorder = event["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            if "status_code" in response:
                found[(recorder["label"], int(response["status_code"]))] += 1
    return found
