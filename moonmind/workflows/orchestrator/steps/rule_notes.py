"""What the patch step tells about a rule's edits, and why it changed nothing.

The rules' reasons, their guesses (a distribution name no table knows) and the
dependencies they added without a version go into the patch step's result (the run
detail; a guess on a protected service makes the run wait for an approval of the diff)
and at the top of patch.diff, where whoever reads or approves the diff sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moonmind.workflows.orchestrator.diagnosis.target import FileEdit
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps.context import StepContext

HINT = (
    "to change it anyway, pass a patch (a unified diff in the run's `patch`) or configure "
    "an agent (ORCHESTRATOR_PATCH_AGENT)"
)
UNDERSTOOD = "add/remove/pin a package, add an OS package, set NAME=value, use IMAGE:TAG"


def rule_notes(ctx: StepContext, edits: Sequence[FileEdit]) -> dict[str, Any]:
    """The patch result's account of a rule's edits."""
    intent = ctx.result_of(StepName.ANALYZE).get("analysis", {}).get("intent")
    return {
        "changes": [{"path": e.path, "reason": e.reason} for e in edits],
        "guesses": [{"package": e.package, "why": e.guess} for e in edits if e.guess],
        "unpinned": [
            {"path": e.path, "package": e.package, "ecosystem": e.unpinned}
            for e in edits
            if e.unpinned and e.package
        ],
        "intent": intent or None,
    }


def diff_header(notes: dict[str, Any]) -> str:
    """Lines before the diff itself (git apply and patch skip them)."""
    lines = [f"moonmind: {change['reason']}" for change in notes.get("changes", [])]
    lines += [f"moonmind: GUESS {g['package']}: {g['why']}" for g in notes.get("guesses", [])]
    return "".join(f"{line}\n" for line in lines) + ("\n" if lines else "")


def summary(notes: dict[str, Any]) -> str:
    """``"add six to app/requirements.txt (a guess); "`` for the step's message."""
    reasons = "; ".join(change["reason"] for change in notes.get("changes", []))
    guessed = " (a guess: approve or correct it)" if notes.get("guesses") else ""
    return f"{reasons}{guessed}; " if reasons else ""


def no_change_message(ctx: StepContext, tried: Sequence[str]) -> str:
    """Why nothing was changed, and what the operator can do about it."""
    analysis = ctx.result_of(StepName.ANALYZE).get("analysis", {})
    explained = analysis.get("explanation") or "no known failure"
    intent = analysis.get("intent") or {}
    if intent.get("refused"):
        why = f"the instruction '{intent['words']}' was not applied: {intent['refused']}"
    elif intent:
        why = f"the instruction '{intent['words']}' gave no edit"
    else:
        why = f"the instruction asks for no change the rules know ({UNDERSTOOD})"
    todo = "the agent changed nothing either" if "agent" in tried else HINT
    return (
        f"{explained}; nothing was changed (no patch derived; tried: {', '.join(tried)}): "
        f"{why}; {todo}"
    )
