"""Patch: change allow-listed files, from the operator's diff, the rules or an agent.

Whatever the source, the run's scope (its allow-list, never the orchestrator's own
state) is snapshotted first, the pre-images of the touched files are kept, and any change
that breaks the path rules undoes the whole patch. The agent source is steps/patch_agent.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from moonmind.workflows.orchestrator import secret_guard
from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.diagnosis import Signature, derive_rule_edits
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import PatchParameters
from moonmind.workflows.orchestrator.steps import patch_agent, preimages
from moonmind.workflows.orchestrator.steps.context import StepContext, StepFailed, StepResult
from moonmind.workflows.orchestrator.steps.rule_notes import (
    diff_header,
    no_change_message,
    rule_notes,
    summary,
)


def _check_allowed(
    root: Path, paths: list[str], allow: list[str], compose: tuple[str, ...] = ()
) -> None:
    """Refuse paths before anything is written, with the reasons the post-check would give."""
    changes = [ws.Change(p, "modified") for p in paths]
    violations = ws.validate_changes(root, changes, allow, compose)
    if violations:
        listing = ", ".join(sorted({f"{v.path} ({v.reason})" for v in violations}))
        raise StepFailed(f"patch touches files outside the allow-list: {listing}", rollback=False)


def _newly_executable(before: ws.Snapshot, changed: list[ws.Change]) -> list[ws.Violation]:
    """Files a source (an agent, say) made executable: refused like an operator diff's +x."""
    found = []
    for change in changed:
        old, new = before.get(change.path), ws.FileState.read(before.root / change.path)
        if new.exists and not new.is_symlink and new.mode & 0o111:
            if not old.exists or old.is_symlink or not old.mode & 0o111:
                found.append(ws.Violation(change.path, "file made executable"))
    return found


def _refuse_secret(ctx: StepContext, diff: str) -> None:
    """Fail closed, before anything is written, on a diff that adds a secret."""
    reason = secret_guard.refusal(diff, ctx.redactor)
    if reason is not None:
        raise StepFailed(reason, rollback=False, result={"refused": "secret"})


def _operator_patch(ctx: StepContext, before: ws.Snapshot, allow: list[str]) -> bool:
    assert ctx.requested_patch is not None
    root = ctx.workspace
    try:
        paths = ws.patch_paths(root, ctx.requested_patch)
        _check_allowed(root, paths, allow, patch_agent.compose_files(ctx))
        _refuse_secret(ctx, ctx.requested_patch)
        preimages.save(ctx, before, paths)
        ws.apply_patch(root, ctx.requested_patch)
    except ws.WorkspaceError as exc:
        raise StepFailed(f"operator patch does not apply: {exc}", rollback=False) from None
    return True


def _rules(ctx: StepContext, before: ws.Snapshot, allow: list[str]) -> bool:
    profile = ctx.service.profile
    if not profile.build_context or not profile.dockerfile:
        return False
    analysis = ctx.result_of(StepName.ANALYZE).get("analysis", {})
    edits = derive_rule_edits(
        [Signature(**sig) for sig in analysis.get("signatures", [])],
        workspace=ctx.workspace,
        build_context=profile.build_context,
        dockerfile=profile.dockerfile,
        diagnoses=analysis.get("diagnosis", []),
        instruction=ctx.instruction,
    )
    if not edits:
        return False
    paths = [edit.path for edit in edits]
    _check_allowed(ctx.workspace, paths, allow, patch_agent.compose_files(ctx))
    for edit in edits:
        old = before.get(edit.path).data
        _refuse_secret(ctx, secret_guard.added_lines_diff(edit.path, old, edit.new_data))
    preimages.save(ctx, before, paths)
    for edit in edits:
        ws.write_file(ctx.workspace, edit.path, edit.new_data)
    ctx.notes.update(rule_notes(ctx, edits))
    return True


SOURCES = {"operator_patch": _operator_patch, "rules": _rules, "agent": patch_agent.agent}


def _apply(ctx: StepContext, sources: list[str], allow: list[str], before: ws.Snapshot) -> str:
    """The first source that changed something; the workspace is put back on any error."""
    root = ctx.workspace
    tried = []
    try:
        for source in sources:
            if source == "agent" and not ctx.agent_template:
                continue  # this worker has no agent configured
            tried.append(source)
            if SOURCES[source](ctx, before, allow) and ws.changes(before, before.again()):
                return source
    except BaseException:
        ws.restore(root, before, ws.changes(before, before.again()))
        preimages.discard(ctx)
        raise
    ws.restore(root, before, ws.changes(before, before.again()))
    preimages.discard(ctx)
    raise StepFailed(no_change_message(ctx, tried), rollback=False)


def patch(ctx: StepContext) -> StepResult:
    root = ctx.workspace
    params = ctx.params(PatchParameters)
    if preimages.pending(ctx):  # an earlier delivery of this step died half-way: start clean
        preimages.restore(ctx, lambda line: None)
    before = ws.Snapshot.take(root, patch_agent.run_scope(ctx, params.allow))
    used = _apply(ctx, params.sources, params.allow, before)
    changed = ws.changes(before, before.again())
    compose = patch_agent.compose_files(ctx)
    violations = ws.validate_changes(root, changed, params.allow, compose)
    violations += _newly_executable(before, changed)
    if violations:
        ws.restore(root, before, changed)
        preimages.discard(ctx)
        listing = "; ".join(f"{v.path}: {v.reason}" for v in violations)
        raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)
    recorded = set(preimages.manifest(ctx))
    if used == "agent":  # the journal kept every allow-listed file: keep what changed
        preimages.settle(ctx, before, [c.path for c in changed])
    elif extra := [c.path for c in changed if c.path not in recorded]:
        preimages.save(ctx, before, sorted(recorded | set(extra)))
    diff = diff_header(ctx.notes) + ws.unified_diff(root, before, changed)
    if (reason := secret_guard.refusal(diff, ctx.redactor)) is not None:  # e.g. an agent's
        ws.restore(root, before, changed)
        preimages.discard(ctx)
        raise StepFailed(reason, rollback=False, result={"refused": "secret"})
    diff = ctx.redactor.redact(diff)  # secrets already in context or removed lines
    ctx.save("patch.diff", diff.encode(), type=ArtifactType.PATCH_DIFF, kind="patch_diff")
    files = [
        {"path": c.path, "change": c.kind, "sha256": ws.FileState.read(root / c.path).sha256}
        for c in changed
    ]
    return StepResult(
        f"{used}: {summary(ctx.notes)}changed {', '.join(c.path for c in changed)}",
        {
            "source": used,
            "files": files,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest(),
            **ctx.notes,
        },
    )
