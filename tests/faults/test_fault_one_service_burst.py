"""Twenty runs submitted at once for one service: one active at a time, all end, in order.

The runs target the demo's healthy `sibling`, for which no patch can be derived, so each
ends quickly (`failed`, nothing changed). Checked from the step timestamps the API
reports: no two runs' [first step started, last step completed] intervals overlap, every
run ends, and within a priority the runs started in the order they were queued.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from tests.faults.conftest import FAST_WORKER, FaultRow
from tests.integration.orchestrator.conftest import Orchestrator, bring_up
from tests.support.stack import Stack

RUNS = 20
HIGH = {7, 13}  # two of them ask for high priority: they go before the normal ones waiting


def _span(detail: dict[str, Any]) -> tuple[datetime, datetime]:
    started = [s["started_at"] for s in detail["steps"] if s["started_at"]]
    ended = [s["completed_at"] for s in detail["steps"] if s["completed_at"]]
    return datetime.fromisoformat(min(started)), datetime.fromisoformat(max(ended))


@pytest.mark.docker
def test_twenty_runs_for_one_service(
    repetition: int,
    broken_stack: Stack,
    start_orchestrator: Callable[..., Orchestrator],
    fault_report: Callable[..., FaultRow],
) -> None:
    row = fault_report(f"{RUNS} runs at once for one service")
    row.runs = RUNS
    bring_up(broken_stack)
    orchestrator = start_orchestrator(broken_stack, worker_env=FAST_WORKER)

    def submit(i: int) -> str:
        response = orchestrator.post_run(
            instruction=f"burst {i}",
            target_service="sibling",
            priority="high" if i in HIGH else "normal",
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        run_ids = list(pool.map(submit, range(RUNS)))
    details = row.wait_ended(orchestrator, run_ids, timeout=400)
    assert {d["status"] for d in details.values()} == {"failed"}
    spans = sorted((_span(d), run_id) for run_id, d in details.items())
    overlaps = [
        (a, b)
        for (span_a, a), (span_b, b) in zip(spans, spans[1:], strict=False)
        if span_b[0] < span_a[1]
    ]
    row.duplicated = len(overlaps)
    assert overlaps == [], "two runs of one service were active at once"
    for priority in ("high", "normal"):
        mine = [d for d in details.values() if d["priority"] == priority]
        by_queue = [d["run_id"] for d in sorted(mine, key=lambda d: d["queued_at"])]
        by_start = [d["run_id"] for d in sorted(mine, key=lambda d: _span(d)[0])]
        assert by_start == by_queue, f"{priority} runs did not start in submission order"
