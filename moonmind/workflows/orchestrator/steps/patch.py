"""Patch: change allow-listed files, from the operator's diff, the rules or an agent.

Whatever the source, the workspace is snapshotted first, the pre-images of the touched
files are kept, and any change outside the allow-list undoes the whole patch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.adapters.agent import build_agent_argv, run_agent
from moonmind.workflows.orchestrator.diagnosis import Signature, derive_rule_edits
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.paths import GIT_DIR
from moonmind.workflows.orchestrator.plan import PatchParameters
from moonmind.workflows.orchestrator.steps import preimages
from moonmind.workflows.orchestrator.steps.context import StepContext, StepFailed, StepResult


def _check_allowed(root: Path, paths: list[str], allow: list[str]) -> None:
    """Refuse paths before anything is written, with the reasons the post-check would give."""
    violations = ws.validate_changes(root, [ws.Change(p, "modified") for p in paths], allow)
    if violations:
        listing = ", ".join(sorted({f"{v.path} ({v.reason})" for v in violations}))
        raise StepFailed(f"patch touches files outside the allow-list: {listing}", rollback=False)


# Files in .git that decide what git runs or how it reads the tree (hooks, fsmonitor,
# filters, excludes). The workspace snapshot skips .git, so an agent's edits there are
# compared here instead; objects, refs and the index are left alone (git itself may
# rewrite them when an agent merely looks at the repository).
_GIT_CONTROL = ("config", "hooks", "info")


def _git_control(root: Path) -> ws.Snapshot:
    git_dir = root / GIT_DIR
    files: dict[str, ws.FileState] = {}
    dirs: set[str] = set()
    if git_dir.is_dir() and not git_dir.is_symlink():
        for name in _GIT_CONTROL:
            top = git_dir / name
            if top.is_dir() and not top.is_symlink():
                dirs.add(name)
                for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
                    base = Path(dirpath)
                    for entry in [*dirnames, *filenames]:
                        rel = (base / entry).relative_to(git_dir).as_posix()
                        state = ws.FileState.read(base / entry)
                        if state.exists:
                            files[rel] = state
                        elif (base / entry).is_dir():
                            dirs.add(rel)
            else:
                state = ws.FileState.read(top)
                if state.exists:
                    files[name] = state
    return ws.Snapshot(root=git_dir, files=files, dirs=frozenset(dirs))


def _undo_git_changes(before: ws.Snapshot) -> None:
    """Put .git's control files back as they were; StepFailed naming what was changed."""
    changed = ws.changes(before, _git_control(before.root.parent))
    if not changed:
        return
    ws.restore(before.root, before, changed)
    listing = "; ".join(
        f"{GIT_DIR}/{c.path}: {ws.never_patchable_reason(f'{GIT_DIR}/{c.path}')}" for c in changed
    )
    raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)


def _operator_patch(ctx: StepContext, before: ws.Snapshot, allow: list[str]) -> bool:
    assert ctx.requested_patch is not None
    root = ctx.workspace
    try:
        paths = ws.patch_paths(root, ctx.requested_patch)
        _check_allowed(root, paths, allow)
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
    _check_allowed(ctx.workspace, paths, allow)
    preimages.save(ctx, before, paths)
    for edit in edits:
        ws.write_file(ctx.workspace, edit.path, edit.new_data)
    return True


def _agent(ctx: StepContext, before: ws.Snapshot, allow: list[str]) -> bool:
    root = ctx.workspace
    analysis = ctx.store.run_dir(ctx.run_id) / "analysis.json"
    argv = build_agent_argv(
        ctx.agent_template, instruction=ctx.instruction, analysis_path=analysis, workspace=root
    )
    git_before = _git_control(root)
    outcome = run_agent(argv, cwd=root, timeout=ctx.agent_timeout_s)
    ctx.save(
        "agent.log",
        ctx.redactor.redact(outcome.output).encode(),
        type=ArtifactType.AGENT_LOG,
        kind="agent_log",
    )
    _undo_git_changes(git_before)
    if outcome.timed_out:
        raise StepFailed(f"patch agent timed out after {ctx.agent_timeout_s:.0f}s")
    return True


SOURCES = {"operator_patch": _operator_patch, "rules": _rules, "agent": _agent}


def _apply(ctx: StepContext, sources: list[str], allow: list[str], before: ws.Snapshot) -> str:
    """The first source that changed something; the workspace is put back on any error."""
    root = ctx.workspace
    tried = []
    try:
        for source in sources:
            if source == "agent" and not ctx.agent_template:
                continue  # this worker has no agent configured
            tried.append(source)
            if SOURCES[source](ctx, before, allow) and ws.changes(before, ws.Snapshot.take(root)):
                return source
    except BaseException:
        ws.restore(root, before, ws.changes(before, ws.Snapshot.take(root)))
        raise
    ws.restore(root, before, ws.changes(before, ws.Snapshot.take(root)))
    explained = ctx.result_of(StepName.ANALYZE).get("analysis", {}).get("explanation")
    raise StepFailed(
        f"{explained or 'no known failure'}; nothing was changed "
        f"(no patch derived; tried: {', '.join(tried)})",
        rollback=False,
    )


def patch(ctx: StepContext) -> StepResult:
    root = ctx.workspace
    params = ctx.params(PatchParameters)
    if preimages.manifest(ctx):  # an earlier delivery of this step died half-way: start clean
        preimages.restore(ctx, lambda line: None)
    before = ws.Snapshot.take(root)
    used = _apply(ctx, params.sources, params.allow, before)
    changed = ws.changes(before, ws.Snapshot.take(root))
    violations = ws.validate_changes(root, changed, params.allow)
    if violations:
        ws.restore(root, before, changed)
        listing = "; ".join(f"{v.path}: {v.reason}" for v in violations)
        raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)
    recorded = set(preimages.manifest(ctx))
    extra = [c.path for c in changed if c.path not in recorded]
    if extra:  # the agent's edits are only known afterwards; the snapshot kept their bytes
        preimages.save(ctx, before, sorted(recorded | set(extra)))
    diff = ws.unified_diff(root, before, changed)
    ctx.save("patch.diff", diff.encode(), type=ArtifactType.PATCH_DIFF, kind="patch_diff")
    files = [
        {"path": c.path, "change": c.kind, "sha256": ws.FileState.read(root / c.path).sha256}
        for c in changed
    ]
    return StepResult(
        f"{used}: changed {', '.join(c.path for c in changed)}",
        {"source": used, "files": files, "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()},
    )
