"""One line of the issue-9 speed table: the figure, the goal, and whether it holds."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parents[1] / "var" / "bench"


@dataclass
class Line:
    measure: str
    figure: str
    goal: str
    holds: bool | None  # None: not measured (the figure says why)
    data: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        verdict = {True: "yes", False: "NO", None: "n/a"}[self.holds]
        return f"{self.measure:<58} {self.figure:<44} {self.goal:<26} {verdict}"


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def skipped(measure: str, goal: str, why: str) -> Line:
    return Line(measure, f"not measured: {why}"[:44], goal, None, {"skipped": why})


def write(lines: list[Line]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = OUT_DIR / f"speed-{stamp}.json"
    payload = {
        "at": stamp,
        "cpus": os.cpu_count(),
        "lines": [asdict(line) for line in lines],
    }
    path.write_text(json.dumps(payload, indent=2))
    (OUT_DIR / "speed-latest.json").write_text(json.dumps(payload, indent=2))
    return path


def show(lines: list[Line]) -> None:
    print(f"{'measure':<58} {'figure':<44} {'goal':<26} holds")
    for line in lines:
        print(line.row())
