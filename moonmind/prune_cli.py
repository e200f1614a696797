"""`moonmind orchestrator prune`: remove ended runs older than a bound (see retention.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moonmind.config import SettingsError, load_settings
from moonmind.utils.durations import parse_duration


def _duration(text: str) -> str:
    """The duration as written, once it parses (the summary line repeats it)."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def cmd_prune(args: argparse.Namespace) -> int:
    from api_service.db.base import get_database
    from api_service.db.migrate import upgrade
    from moonmind.workflows.orchestrator.retention import prune
    from moonmind.workflows.orchestrator.storage import ArtifactStore

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"moonmind: bad setting: {exc}", file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    report = prune(
        get_database(settings.database_url),
        settings,
        older_than_s=parse_duration(args.older_than),
        keep_last=args.keep_last,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    folders, tags = set(report.folders), set(report.tags)
    for run in report.runs:
        folder = str(ArtifactStore(settings.artifact_root_path).run_dir(run.run_id))
        extras = [
            f"folder {folder}" if folder in folders else "",
            run.rollback_ref if run.rollback_ref in tags else "",
        ]
        print(
            f"{verb} run {run.run_id} {run.project}/{run.service} {run.status} "
            f"ended {run.ended_at.isoformat(timespec='seconds')}"
            + "".join(f"; {extra}" for extra in extras if extra)
        )
    for warning in report.warnings:
        print(f"moonmind: warning: {warning}", file=sys.stderr)
    kept = f", keeping the newest {args.keep_last} per service" if args.keep_last else ""
    print(
        f"{verb} {len(report.runs)} runs, {len(report.folders)} artifact folders, "
        f"{len(report.tags)} rollback tags (ended more than {args.older_than} ago{kept})"
        + (" - dry run, nothing was removed" if args.dry_run else "")
    )
    return 0


def add_parser(orch: Any) -> None:
    """``prune`` under the ``orchestrator`` group."""
    p = orch.add_parser("prune", help="remove ended runs (rows, artifacts, rollback tags)")
    p.add_argument(
        "--older-than", required=True, type=_duration, help="e.g. 30d, 12h, 90m: ended before"
    )
    p.add_argument("--keep-last", type=_count, default=0, help="keep the newest N per service")
    p.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    p.set_defaults(func=cmd_prune)
