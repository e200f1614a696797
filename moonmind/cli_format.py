"""How `moonmind runs` prints: colour only on a terminal, tables that fit its width."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_CODES = {
    "green": "32",
    "red": "31",
    "yellow": "33",
    "cyan": "36",
    "magenta": "35",
    "dim": "2",
    "bold": "1",
}
STATUS_COLOUR = {
    "succeeded": "green",
    "failed": "red",
    "rolled_back": "red",
    "cancelled": "magenta",
    "awaiting_approval": "yellow",
    "running": "cyan",
    "in_progress": "cyan",
    "pending": "dim",
    "skipped": "dim",
}


def colour_enabled(stream: TextIO | None = None) -> bool:
    """Colour only when writing to a terminal and NO_COLOR is not set (no-color.org)."""
    stream = stream or sys.stdout
    return bool(stream.isatty()) and not os.environ.get("NO_COLOR")


class Painter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str | None) -> str:
        if not self.enabled or colour is None:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def status(self, status: str, text: str | None = None) -> str:
        return self(text if text is not None else status, STATUS_COLOUR.get(status))

    def diff_line(self, line: str) -> str:
        if line.startswith(("+++", "---")):
            return self(line, "bold")
        if line.startswith("+"):
            return self(line, "green")
        if line.startswith("-"):
            return self(line, "red")
        if line.startswith("@@"):
            return self(line, "cyan")
        return line


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from start to end (to now when end is None); None without a start."""
    begun = parse_time(start)
    if begun is None:
        return None
    ended = parse_time(end) or datetime.now(UTC)
    return max(0.0, (ended - begun).total_seconds())


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def terminal_width() -> int:
    """COLUMNS, else the terminal's width, else 120 (output piped to a file)."""
    return max(40, shutil.get_terminal_size(fallback=(120, 24)).columns)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


# Optional columns, dropped in this order when the terminal is too narrow.
_DROP_ORDER = ("REQUESTER", "TOOK", "AGE", "SERVICE")
_MIN_INSTRUCTION = 12


def _row(run: dict[str, Any]) -> dict[str, str]:
    status = run["status"] + (" (dry)" if run.get("dry_run") else "")
    return {
        "ID": str(run["run_id"]),
        "STATUS": status,
        "SERVICE": run["target_service"],
        "AGE": human_seconds(seconds_between(run.get("queued_at"), None)),
        "TOOK": human_seconds(seconds_between(run.get("started_at"), run.get("completed_at"))),
        "REQUESTER": run.get("requested_by") or "-",
        "INSTRUCTION": run.get("instruction") or "",
    }


def runs_table(runs: list[dict[str, Any]], width: int, paint: Painter) -> list[str]:
    """One header line and one line per run, none wider than ``width``."""
    rows = [_row(run) for run in runs]
    columns = ["ID", "STATUS", "SERVICE", "AGE", "TOOK", "REQUESTER"]
    sizes = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}

    def fixed() -> int:
        return sum(sizes[c] + 2 for c in columns)

    for name in _DROP_ORDER:
        if fixed() + _MIN_INSTRUCTION <= width:
            break
        columns.remove(name)
    if fixed() + _MIN_INSTRUCTION > width:  # very narrow: the id's first 8 characters
        sizes["ID"] = 8
        for row in rows:
            row["ID"] = row["ID"][:8]
    room = max(0, width - fixed())
    lines = ["  ".join([*(c.ljust(sizes[c]) for c in columns), "INSTRUCTION"])[:width]]
    for row, run in zip(rows, runs, strict=True):
        cells = []
        for c in columns:
            cell = row[c].ljust(sizes[c])
            cells.append(paint.status(run["status"], cell) if c == "STATUS" else cell)
        instruction = _cut(row["INSTRUCTION"], room)
        lines.append("  ".join([*cells, instruction]).rstrip())
    return lines
