"""`moonmind runs list`'s table fits any terminal width; colour only when asked for."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from moonmind.cli_api import error_from
from moonmind.cli_format import Painter, human_seconds, runs_table


def _run(status: str, instruction: str, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "run_id": str(uuid.uuid4()),
        "status": status,
        "target_service": "payments-api",
        "instruction": instruction,
        "queued_at": (now - timedelta(minutes=5)).isoformat(),
        "started_at": (now - timedelta(minutes=5)).isoformat(),
        "completed_at": (now - timedelta(minutes=4)).isoformat(),
        "requested_by": "alice",
        **extra,
    }


RUNS = [
    _run("succeeded", "fix the missing dependency " * 8, dry_run=True),
    _run("awaiting_approval", "pin setuptools==66.1.1"),
    _run("rolled_back", "x"),
]


@pytest.mark.parametrize("width", [40, 60, 80, 100, 132, 200])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    lines = runs_table(RUNS, width, Painter(False))
    assert len(lines) == 1 + len(RUNS)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert lines[0].startswith("ID")
    assert "succeeded (dry)" in lines[1]


def test_a_wide_terminal_shows_every_column_and_whole_ids() -> None:
    lines = runs_table(RUNS, 250, Painter(False))
    for column in ("STATUS", "SERVICE", "AGE", "TOOK", "REQUESTER", "INSTRUCTION"):
        assert column in lines[0]
    assert RUNS[1]["run_id"] in lines[2]
    assert "1m00s" in lines[2]  # started to completed
    narrow = runs_table(RUNS, 80, Painter(False))
    assert "REQUESTER" not in narrow[0]
    assert RUNS[1]["run_id"] in narrow[2]


def test_colour_codes_only_when_enabled_and_not_counted_in_the_width() -> None:
    plain = runs_table(RUNS, 80, Painter(False))
    coloured = runs_table(RUNS, 80, Painter(True))
    assert not any("\x1b[" in line for line in plain)
    assert "\x1b[33mawaiting_approval" in coloured[2]
    assert [re.sub(r"\x1b\[\d+m", "", line) for line in coloured] == plain


def test_durations_read_like_durations() -> None:
    assert human_seconds(None) == "-"
    assert human_seconds(4.3) == "4.3s"
    assert human_seconds(125) == "2m05s"
    assert human_seconds(3 * 3600 + 60) == "3h01m"
    assert human_seconds(2 * 86400 + 3600) == "2d01h"


def test_api_errors_map_to_exit_codes() -> None:
    def answer(status: int, body: object) -> int:
        return error_from(httpx.Response(status, json=body)).code

    error = {"error": "x", "detail": "y", "remediation": "z"}
    assert answer(401, error) == 3
    assert answer(403, error) == 3
    assert answer(404, error) == 4
    assert answer(409, error) == 6
    assert answer(400, error) == 2
    assert answer(422, {"detail": [{"loc": ["body"]}]}) == 2
    assert answer(502, error) == 5
    refused = error_from(httpx.Response(403, json=error))
    assert refused.message == "x: y"
    assert refused.remediation == "z"
