"""What the analyzers look at (Evidence) and what each one concludes (Diagnosis).

Evidence is plain data gathered by the analyze step from the engine and the logs, so the
analyzers are pure functions that unit tests can feed directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    """How a diagnosis ends: a rule may fix it, another service must be fixed, or a person."""

    FIX = "fix"
    OTHER_SERVICE = "other_service"
    EXPLAIN = "explain"


@dataclass(frozen=True)
class ServiceState:
    """Another service of the stack, as the engine sees it."""

    status: str
    exit_code: int
    ports: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"{self.status} (exit {self.exit_code})" if self.status == "exited" else self.status


@dataclass(frozen=True)
class Evidence:
    """The target container's state, its logs, its last crash block and its stack."""

    logs: str = ""
    status: str = ""
    exit_code: int = 0
    signal: int | None = None
    oom_killed: bool = False
    error: str = ""
    restart_count: int = 0
    restart_policy: str = ""
    health: str | None = None
    health_log: tuple[str, ...] = ()
    memory_limit: int = 0
    user: str = ""
    service: str = ""
    stack: dict[str, ServiceState] = field(default_factory=dict)
    instruction: str = ""  # the operator's words: a rule may take a value from them

    @property
    def block(self) -> str:
        return crash_block(self.logs)


@dataclass(frozen=True)
class Diagnosis:
    """One recognised failure: its stable kind, what it is about, and what to do."""

    kind: str
    subject: str
    evidence: str
    remediation: str
    outcome: Outcome = Outcome.EXPLAIN
    other_service: str = ""  # with Outcome.OTHER_SERVICE: the stack service to fix first


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):")
_PY_FILE = re.compile(r'^\s*File "[^"]+", line \d+')
ERRORISH = re.compile(
    r"(?i)\b(error|exception|fatal|panic|refused|denied|not found|no such file|"
    r"cannot|can't|failed|killed|in use|eaddrinuse|read-only)\b"
)
MAX_BLOCK_LINES = 60


def clean_lines(logs: str) -> list[str]:
    return [_ANSI.sub("", line).rstrip() for line in logs.splitlines()]


def _traceback_start(lines: list[str]) -> int | None:
    """Index of the last Python traceback (or a bare File/SyntaxError header)."""
    for i in range(len(lines) - 1, -1, -1):
        if _TRACEBACK.match(lines[i].lstrip()):
            return i
    for i in range(len(lines) - 1, -1, -1):
        if _PY_FILE.match(lines[i]) and (i == 0 or not _PY_FILE.match(lines[i - 1])):
            return i
    return None


def _paragraph_around(lines: list[str], last: int) -> tuple[int, int]:
    """The non-blank run of lines containing ``last``, capped in length."""
    start = last
    while start > 0 and lines[start - 1].strip() and last - start < MAX_BLOCK_LINES // 2:
        start -= 1
    end = last + 1
    while end < len(lines) and lines[end].strip() and end - start < MAX_BLOCK_LINES:
        end += 1
    return start, end


def crash_block(logs: str) -> str:
    """The last traceback or error paragraph of a log: where the crash is explained."""
    lines = clean_lines(logs)
    start = _traceback_start(lines)
    if start is not None:
        return "\n".join(lines[start : start + MAX_BLOCK_LINES * 2][-MAX_BLOCK_LINES:])
    errors = [i for i, line in enumerate(lines) if ERRORISH.search(line)]
    if not errors:
        return "\n".join(lines[-20:])
    begin, end = _paragraph_around(lines, errors[-1])
    return "\n".join(lines[begin:end])
