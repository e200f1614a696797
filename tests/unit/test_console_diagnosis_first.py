"""The run page of a failed run says why before anything else (issue 14, point 4)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from api_service.console.web import TEMPLATES

DIAGNOSIS = NS(
    kind="missing_env_var",
    subject="LEDGER_URL",
    remediation="set LEDGER_URL in the compose file's environment for ledger",
    outcome="explain",
    evidence="KeyError: 'LEDGER_URL'",
    also=[],
)


def _page(status: str) -> str:
    me = NS(csrf="c", principal=NS(id="alice", has_role=lambda role: True), open=False)
    return TEMPLATES.env.get_template("run.html").render(
        row=NS(status=status, id="r1", service="ledger", short_id="r1"),
        run=NS(instruction="fix ledger", message=None, approval=None),
        diagnosis=DIAGNOSIS,
        actions=NS(),
        me=me,
    )


@pytest.mark.parametrize("status", ["failed", "rolled_back"])
def test_a_failed_runs_page_opens_with_its_diagnosis(status: str) -> None:
    page = _page(status)
    first = page.index('id="diagnosis-first"')
    assert first < page.index('id="steps"')
    assert "missing_env_var" in page[first : first + 300]
    assert "set LEDGER_URL in the compose file" in page[first : first + 400]


def test_a_succeeded_runs_page_does_not_lead_with_it() -> None:
    assert 'id="diagnosis-first"' not in _page("succeeded")
