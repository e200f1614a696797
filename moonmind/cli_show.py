"""`moonmind runs show`: one run as an operator reads it.

The header, then (on a run that ended badly) the diagnosis, the steps with their
durations, the verify outcome with the end of verify.log, and the diff.
"""

from __future__ import annotations

from typing import Any

from moonmind.cli_api import Api, ended_badly
from moonmind.cli_format import Painter, human_seconds, seconds_between
from moonmind.follow import diagnosis_lines

VERIFY_TAIL_LINES = 5


def artifact_of(detail: dict[str, Any], kind: str) -> dict[str, Any] | None:
    found = [a for a in detail.get("artifacts", []) if a.get("type") == kind]
    return found[-1] if found else None


def _text(api: Api, run_id: str, artifact: dict[str, Any] | None) -> str | None:
    if artifact is None:
        return None
    return api.download(run_id, str(artifact["artifact_id"])).text


def header_lines(detail: dict[str, Any], paint: Painter) -> list[str]:
    status = detail["status"]
    dry = " (dry run: nothing was written, built or restarted)" if detail.get("dry_run") else ""
    took = seconds_between(detail.get("started_at"), detail.get("completed_at"))
    lines = [
        f"run {detail['run_id']}: {paint.status(status)}{dry}",
        f"  service {detail['target_service']} · requested by "
        f"{detail.get('requested_by') or '-'} · queued "
        f"{human_seconds(seconds_between(detail.get('queued_at'), None))} ago · took "
        f"{human_seconds(took)}",
        f"  instruction: {detail.get('instruction', '')}",
    ]
    if detail.get("message"):
        lines.append(f"  message: {detail['message']}")
    if detail.get("approval_required"):
        lines.append(
            f"  approval: {detail.get('approval_requirement')} ({detail.get('approval_status')})"
        )
    return lines


def step_lines(detail: dict[str, Any], paint: Painter) -> list[str]:
    lines = ["steps:"]
    for step in detail.get("steps", []):
        took = seconds_between(step.get("started_at"), step.get("completed_at"))
        status = step["status"]
        note = f"  {step['message']}" if step.get("message") else ""
        lines.append(
            f"  {step['name']:<9}{paint.status(status, status.ljust(12))}"
            f"{human_seconds(took):>8}{note}"
        )
    return lines


def verify_lines(api: Api, detail: dict[str, Any], paint: Painter) -> list[str]:
    step = next((s for s in detail.get("steps", []) if s["name"] == "verify"), None)
    if step is None:
        return ["verify: not part of this run's plan"]
    note = f" — {step['message']}" if step.get("message") else ""
    lines = [f"verify: {paint.status(step['status'])}{note}"]
    log = _text(api, str(detail["run_id"]), artifact_of(detail, "verify_log"))
    if log:
        lines += [f"  {line}" for line in log.splitlines()[-VERIFY_TAIL_LINES:]]
    return lines


def diff_lines(api: Api, detail: dict[str, Any], paint: Painter) -> list[str]:
    artifact = artifact_of(detail, "patch_diff")
    diff = _text(api, str(detail["run_id"]), artifact)
    if artifact is None or diff is None:
        return ["diff: none (no patch was derived)"]
    lines = [f"diff (patch.diff, sha256 {artifact['checksum']}):"]
    return lines + [paint.diff_line(line) for line in diff.splitlines()]


def render(api: Api, detail: dict[str, Any], paint: Painter) -> list[str]:
    """Every line of `runs show`; the diagnosis comes first when the run ended badly."""
    diagnosis = diagnosis_lines(detail.get("diagnosis"))
    lines = header_lines(detail, paint)
    if ended_badly(detail["status"]):
        lines += diagnosis
    lines += step_lines(detail, paint)
    lines += verify_lines(api, detail, paint)
    lines += diff_lines(api, detail, paint)
    if not ended_badly(detail["status"]):
        lines += diagnosis
    count = len(detail.get("artifacts", []))
    lines.append(f"artifacts: {count} (moonmind runs artifacts {detail['run_id']})")
    return lines
