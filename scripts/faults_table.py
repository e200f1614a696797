"""Print the fault matrix's table from the JSON lines tests/faults wrote (FAULTS_REPORT)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("fault", "repetitions", "runs ended", "stuck", "duplicated effects", "bytes lost")


def table(lines: list[str]) -> str:
    totals: dict[str, dict[str, int]] = {}
    for line in lines:
        row = json.loads(line)
        total = totals.setdefault(
            row["fault"], {"repetitions": 0, "runs": 0, "ended": 0, "stuck": 0, "dup": 0, "lost": 0}
        )
        total["repetitions"] += 1
        total["runs"] += row["runs"]
        total["ended"] += row["ended"]
        total["stuck"] += row["stuck"]
        total["dup"] += row["duplicated"]
        total["lost"] += row["bytes_lost"]
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for fault, t in totals.items():
        cells = (
            fault,
            str(t["repetitions"]),
            f"{t['ended']}/{t['runs']}",
            str(t["stuck"]),
            str(t["dup"]),
            str(t["lost"]),
        )
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "var/faults/results.jsonl")
    if not path.exists():
        print(f"no results in {path}: did the fault tests run?")
        return 1
    print(table([line for line in path.read_text().splitlines() if line.strip()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
