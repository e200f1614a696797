"""The patch step's scope and its contained external agent.

A run's snapshot covers its allow-list minus the orchestrator's own state
(:func:`run_scope`). The agent runs with a minimal environment, after every allow-listed
file was journaled as a pre-image; whatever it changes outside the allow-list or in
``.git``'s control files is put back, and a non-zero exit or a timeout fails the step
(the caller then restores the allow-listed files too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moonmind.config import get_settings
from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.adapters.agent import (
    agent_environment,
    build_agent_argv,
    run_agent,
)
from moonmind.workflows.orchestrator.enums import ArtifactType
from moonmind.workflows.orchestrator.paths import GIT_DIR, matches_pattern
from moonmind.workflows.orchestrator.state_paths import orchestrator_state
from moonmind.workflows.orchestrator.steps import preimages
from moonmind.workflows.orchestrator.steps.context import StepContext, StepFailed


def run_scope(ctx: StepContext, allow: list[str]) -> ws.Scope:
    """What this run's snapshots read: its allow-list, never the orchestrator's files."""
    state = (*orchestrator_state(get_settings()), ctx.store.root)
    return ws.Scope(allow=tuple(allow), exclude=tuple(dict.fromkeys(state)))


def compose_files(ctx: StepContext) -> tuple[str, ...]:
    """The stack's compose file, workspace-relative (never patchable whatever its name)."""
    root = Path(ctx.service.workspace).resolve()
    try:
        return (Path(ctx.service.compose_file).resolve().relative_to(root).as_posix(),)
    except ValueError:
        return ()


# Files in .git that decide what git runs or how it reads the tree (hooks, fsmonitor,
# filters, excludes). The workspace snapshot skips .git, so an agent's edits there are
# compared here instead; objects, refs and the index are left alone (git itself may
# rewrite them when an agent merely looks at the repository).
_GIT_CONTROL = ("config", "hooks", "info")


def _read_tree(top: Path, git_dir: Path, files: dict[str, ws.FileState], dirs: set[str]) -> None:
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        base = Path(dirpath)
        for entry in [*dirnames, *filenames]:
            rel = (base / entry).relative_to(git_dir).as_posix()
            state = ws.FileState.read(base / entry)
            if state.exists:
                files[rel] = state
            elif (base / entry).is_dir():
                dirs.add(rel)


def git_control(root: Path) -> ws.Snapshot:
    git_dir = root / GIT_DIR
    files: dict[str, ws.FileState] = {}
    dirs: set[str] = set()
    if git_dir.is_dir() and not git_dir.is_symlink():
        for name in _GIT_CONTROL:
            top = git_dir / name
            if top.is_dir() and not top.is_symlink():
                dirs.add(name)
                _read_tree(top, git_dir, files, dirs)
            else:
                state = ws.FileState.read(top)
                if state.exists:
                    files[name] = state
    return ws.Snapshot(root=git_dir, files=files, dirs=frozenset(dirs))


def undo_git_changes(before: ws.Snapshot) -> None:
    """Put .git's control files back as they were; StepFailed naming what was changed."""
    changed = ws.changes(before, git_control(before.root.parent))
    if not changed:
        return
    ws.restore(before.root, before, changed)
    listing = "; ".join(
        f"{GIT_DIR}/{c.path}: {ws.never_patchable_reason(f'{GIT_DIR}/{c.path}')}" for c in changed
    )
    raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)


# A pre-image manifest written this long before the agent started still excuses its paths.
CLAIM_MARGIN_S = 60.0


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _recent(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def claimed_elsewhere(ctx: StepContext, since: float) -> Callable[[str], bool]:
    """Paths another run (same artifact store) is patching or has just patched.

    Such a run journals an agent's scope until it settles, and writes a manifest of the
    paths it changes: a change to one of them while this agent ran is that run's, not
    this agent's, so it is neither put back nor counted against the agent. Only journals
    young enough to belong to a run still at work count (a crashed run's old one does not).
    """
    patterns: list[str] = []
    paths: set[str] = set()
    mine = ctx.store.run_dir(ctx.run_id)
    for folder in ctx.store.root.glob("*/pre-images"):
        if folder.parent == mine:
            continue
        if _recent(folder / "scope.json", since - ctx.agent_timeout_s - CLAIM_MARGIN_S):
            patterns += _json(folder / "scope.json").get("allow") or []
        if _recent(folder / "manifest.json", since - CLAIM_MARGIN_S):
            paths |= set(_json(folder / "manifest.json"))
    return lambda p: p in paths or any(matches_pattern(p, pat) for pat in patterns)


def undo_outside(ctx: StepContext, outside: ws.Snapshot, scope: ws.Scope, since: float) -> None:
    """Put back what the agent changed outside the run's scope; StepFailed naming each path."""
    claimed = claimed_elsewhere(ctx, since)
    changed = [
        c
        for c in ws.changes(outside, outside.again())
        if not scope.covers(c.path) and not claimed(c.path)
    ]
    if not changed:
        return
    ws.restore(outside.root, outside, changed)
    compose = compose_files(ctx)
    listing = "; ".join(
        f"{c.path}: {ws.deny_reason(c.path, scope.allow or (), compose)}" for c in changed
    )
    raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)


def agent(ctx: StepContext, before: ws.Snapshot, allow: list[str]) -> bool:
    root = ctx.workspace
    analysis = ctx.store.run_dir(ctx.run_id) / "analysis.json"
    argv = build_agent_argv(
        ctx.agent_template, instruction=ctx.instruction, analysis_path=analysis, workspace=root
    )
    started = time.time()
    outside = ws.Snapshot.take(root, ws.Scope(None, before.scope.exclude))
    git_before = git_control(root)
    preimages.journal(ctx, before)  # durable before the agent may write anything
    env = agent_environment(os.environ, get_settings().patch_agent_env)
    outcome = run_agent(argv, cwd=root, timeout=ctx.agent_timeout_s, env=env)
    ctx.save(
        "agent.log",
        ctx.redactor.redact(outcome.output).encode(),
        type=ArtifactType.AGENT_LOG,
        kind="agent_log",
    )
    undo_git_changes(git_before)
    undo_outside(ctx, outside, before.scope, started)
    if outcome.timed_out:
        raise StepFailed(
            f"patch agent timed out after {ctx.agent_timeout_s:.0f}s; its edits were undone",
            rollback=False,
        )
    if outcome.returncode != 0:
        raise StepFailed(
            f"patch agent exited with code {outcome.returncode}; its edits were undone "
            "(see agent.log)",
            rollback=False,
        )
    return True
