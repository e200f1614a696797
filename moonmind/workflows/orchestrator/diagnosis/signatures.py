"""Failure signatures: the few facts the analysis and the rules read out of noisy logs."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from moonmind.workflows.orchestrator.diagnosis.evidence import ERRORISH


class SignatureKind(StrEnum):
    """What a signature is about; the values are stored in analysis JSON, never rename them."""

    PYTHON_MISSING_MODULE = "python_missing_module"
    NODE_MISSING_MODULE = "node_missing_module"
    MISSING_SHARED_LIBRARY = "missing_shared_library"
    COMMAND_NOT_FOUND = "command_not_found"
    PIP_NO_DISTRIBUTION = "pip_no_distribution"


def _coerce_kind(kind: str) -> SignatureKind | str:
    try:
        return SignatureKind(kind)
    except ValueError:
        return kind


@dataclass(frozen=True)
class Signature:
    """One recognised failure: what kind, about what, and the log line that showed it.

    ``kind`` is a SignatureKind; any other string (an analysis written by another
    version) is kept as is, and the rules ignore it.
    """

    kind: SignatureKind | str
    subject: str
    line: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _coerce_kind(self.kind))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SHELL = r"(?:^|[\s|])(?:/usr)?(?:/bin/)?(?:ba|da|z|a)?sh"
_PATTERNS: tuple[tuple[SignatureKind, re.Pattern[str]], ...] = (
    (
        SignatureKind.PYTHON_MISSING_MODULE,
        re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '?\"?([\w.]+)"),
    ),
    (
        SignatureKind.NODE_MISSING_MODULE,
        re.compile(
            r"Error(?: \[ERR_MODULE_NOT_FOUND\])?: Cannot find (?:module|package) '([^']+)'"
        ),
    ),
    (
        SignatureKind.MISSING_SHARED_LIBRARY,
        re.compile(r"error while loading shared libraries: ([^\s:]+): cannot open shared object"),
    ),
    (
        SignatureKind.COMMAND_NOT_FOUND,
        re.compile(_SHELL + r": (?:line )?(?:\d+: )?(?:exec: )?([^\s:]+): not found"),
    ),
    (
        SignatureKind.COMMAND_NOT_FOUND,
        re.compile(_SHELL + r": (?:line \d+: )?([^\s:]+): command not found"),
    ),
    (
        SignatureKind.COMMAND_NOT_FOUND,
        re.compile(r"exec: \"([^\"]+)\": executable file not found in \$PATH"),
    ),
    (
        SignatureKind.PIP_NO_DISTRIBUTION,
        re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._-]*)"),
    ),
)


def node_package(spec: str) -> str | None:
    """Package name of a bare module specifier; relative and absolute paths give None."""
    if spec.startswith((".", "/")) or not spec:
        return None
    parts = spec.split("/")
    if spec.startswith("@"):
        return "/".join(parts[:2]) if len(parts) >= 2 else None
    return parts[0]


def _subject(kind: SignatureKind, raw: str) -> str | None:
    """Normalise the captured name; None when the hit is not worth reporting."""
    if kind is SignatureKind.PYTHON_MISSING_MODULE:
        return raw.split(".")[0] or None
    if kind is SignatureKind.NODE_MISSING_MODULE:
        return node_package(raw)
    if kind is SignatureKind.COMMAND_NOT_FOUND:
        return posixpath.basename(raw) or None
    return raw


def _line_signatures(line: str) -> Iterator[Signature]:
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(line):
            subject = _subject(kind, match.group(1))
            if subject:
                yield Signature(kind, subject, line)


def detect_signatures(log_text: str) -> list[Signature]:
    """Recognised failures in order of first appearance, one per (kind, subject)."""
    seen: set[tuple[str, str]] = set()
    found: list[Signature] = []
    for raw_line in log_text.splitlines():
        line = _ANSI.sub("", raw_line).strip()
        for sig in _line_signatures(line):
            if (sig.kind, sig.subject) not in seen:
                seen.add((sig.kind, sig.subject))
                found.append(sig)
    return found


_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):|^\s*File \"[^\"]+\", line \d+")


def _exception_line(lines: list[str]) -> str | None:
    """The line a Python traceback ends with (its exception), when the text holds one.

    Frames and source lines are indented; the first unindented line after the last
    traceback header is the exception. Lines printed after it (a buffered stdout flushed
    at exit) are not part of the crash.
    """
    starts = [i for i, line in enumerate(lines) if _TRACEBACK.match(line)]
    if not starts:
        return None
    last = starts[-1]
    while last > 0 and _TRACEBACK.match(lines[last - 1]):
        last -= 1
    for line in lines[last + 1 :]:
        if line and not line[0].isspace() and not _TRACEBACK.match(line):
            return line
    return ""


def crash_signatures(block: str) -> list[Signature]:
    """Signatures of the crash itself: a traceback's exception line, else the block's last
    error line. A log line elsewhere (even inside the block, or printed by the service to
    look like an error) does not choose what gets installed."""
    lines = [_ANSI.sub("", raw).rstrip() for raw in block.splitlines()]
    exception = _exception_line(lines)
    if exception is not None:
        return list(_line_signatures(exception.strip()))
    errors = [line for line in lines if ERRORISH.search(line)]
    return list(dict.fromkeys(_line_signatures(errors[-1].strip()))) if errors else []
