"""The build_failed analyzer: which Dockerfile step a failed `docker build` stopped at.

Reads both builders' output: the legacy one ("Step 3/4 : RUN ..." then "The command ...
returned a non-zero code: N", or "COPY failed: ..." when a source is not in the context)
and BuildKit ("#7 [3/4] RUN ..." then "ERROR: ... exit code: N").
"""

from __future__ import annotations

import re

from moonmind.workflows.orchestrator.diagnosis.evidence import Diagnosis, Outcome, clean_lines
from moonmind.workflows.orchestrator.diagnosis.signatures import detect_signatures

_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.+)$")
_LEGACY_FAIL = re.compile(r"returned a non-zero code: (\d+)")
_LEGACY_COPY_FAIL = re.compile(r"\b(?:COPY|ADD) failed: ")  # no process ran: no exit code
_KIT_STEP = re.compile(r"^#\d+ \[(?:[\w-]+ )?(\d+)/(\d+)\] (.+)$")
_KIT_FAIL = re.compile(
    r"(?:ERROR|error):.*?(?:did not complete successfully|failed to solve)"
    r".*?(?:exit code: (\d+))?$"
)


def _is_failure(line: str) -> bool:
    return bool(
        _LEGACY_FAIL.search(line) or _LEGACY_COPY_FAIL.search(line) or _KIT_FAIL.search(line)
    )


def _failing_step(lines: list[str]) -> tuple[str, str] | None:
    """(step "3/4", instruction) of the last step started before the failure line."""
    last: tuple[str, str] | None = None
    for line in lines:
        m = _LEGACY_STEP.match(line) or _KIT_STEP.match(line)
        if m:
            last = (f"{m.group(1)}/{m.group(2)}", m.group(3).strip())
        elif last and _is_failure(line):
            return last
    return None


def build_failed(build_log: str) -> Diagnosis | None:
    """The failing step of a build log, with the error its last lines gave."""
    lines = clean_lines(build_log)
    step = _failing_step(lines)
    if step is None:
        return None
    number, instruction = step
    fail = next((line for line in reversed(lines) if _is_failure(line)), "")
    code = _LEGACY_FAIL.search(fail) or _KIT_FAIL.search(fail)
    exit_code = code.group(1) if code and code.group(1) else "?"
    status = "" if _LEGACY_COPY_FAIL.search(fail) else f" (exit {exit_code})"
    cause = detect_signatures(build_log)
    why = f" ({cause[0].kind} {cause[0].subject})" if cause else ""
    return Diagnosis(
        "build_failed",
        f"step {number}: {instruction}",
        fail,
        f"the Dockerfile instruction `{instruction}` failed{status}{why}: fix "
        "that instruction or what it needs",
        Outcome.FIX if cause else Outcome.EXPLAIN,
    )
