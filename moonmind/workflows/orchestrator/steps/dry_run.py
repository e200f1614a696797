"""Dry run: the patch step done in a scratch copy of the workspace.

A run submitted with ``dry_run`` has two steps, analyze and this one. The workspace is
copied (regular files and symlinks, modes kept, ``.git`` left out) into a temporary
folder, the ordinary patch step runs there with the same sources and allow-list, and its
diff is kept as ``patch.diff`` next to ``plan.json`` (what a real run would do next). The
copy is then removed: the workspace, the images and the containers are never touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.paths import GIT_DIR
from moonmind.workflows.orchestrator.plan import PatchParameters, ServiceContext
from moonmind.workflows.orchestrator.steps.context import StepContext, StepFailed, StepResult
from moonmind.workflows.orchestrator.steps.patch import patch

PLAN_FILE = "plan.json"


def _state_dir(root: Path, store_root: Path) -> str | None:
    """The top folder of the workspace holding the artifact store, if the store is inside
    it: with the defaults (workspace ``.``) that is ``var/``, where the SQLite file and the
    filesystem broker live too. Never copied."""
    try:
        rel = store_root.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def copy_workspace(root: Path, scratch: Path, *, skip_top: tuple[str, ...] = ()) -> None:
    """Copy files and symlinks under ``root`` into ``scratch``: not .git, not the top
    folders named in ``skip_top``, no sockets or fifos."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel = base.relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != GIT_DIR and d not in skip_top]
        target_dir = scratch / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in [*dirnames, *filenames]:
            source = base / name
            mode = source.lstat().st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(source), target_dir / name)
            elif stat.S_ISREG(mode):
                shutil.copy2(source, target_dir / name, follow_symlinks=False)


def _scratch_service(ctx: StepContext, scratch: Path) -> ServiceContext:
    """The run's target with the workspace (and a compose file inside it) in the copy, so
    the patch step's checks name the same never-patchable files there."""
    compose = Path(ctx.service.compose_file)
    try:
        compose = scratch / compose.resolve().relative_to(ctx.workspace.resolve())
    except ValueError:
        pass  # a compose file outside the workspace is never written anyway
    return ctx.service.model_copy(update={"workspace": str(scratch), "compose_file": str(compose)})


def _real_run_steps(ctx: StepContext) -> list[dict[str, Any]]:
    """What a real run of this service would do after the patch (the same argv)."""
    compose = ctx.service.compose()
    profile = ctx.service.profile
    return [
        {"name": StepName.BUILD.value, "argv": compose.argv("build", profile.name)},
        {
            "name": StepName.RESTART.value,
            "argv": compose.argv("up", "-d", "--no-deps", profile.name),
        },
        {
            "name": StepName.VERIFY.value,
            "health_url": profile.health_url,
            "expected_status": profile.health_expected_status,
            "timeout_seconds": profile.health_timeout_seconds,
        },
    ]


def dry_patch(ctx: StepContext) -> StepResult:
    """Derive the patch in a scratch copy; keep its diff and the plan, change nothing."""
    with tempfile.TemporaryDirectory(prefix="moonmind-dry-run-") as tmp:
        scratch = Path(tmp) / "workspace"
        scratch.mkdir()
        try:
            state = _state_dir(ctx.workspace, ctx.store.root)
            copy_workspace(ctx.workspace, scratch, skip_top=(state,) if state else ())
        except OSError as exc:
            raise StepFailed(f"dry run: cannot copy the workspace: {exc}", rollback=False) from None
        service = _scratch_service(ctx, scratch)
        try:
            outcome = patch(dataclasses.replace(ctx, service=service))
        except StepFailed as failed:
            raise StepFailed(f"dry run: {failed.message}", rollback=False) from None
    plan = {
        "dry_run": True,
        "service": ctx.service.service,
        "source": outcome.result.get("source"),
        "files": outcome.result.get("files", []),
        "diff_sha256": outcome.result.get("diff_sha256"),
        "then": _real_run_steps(ctx),
    }
    ctx.save(
        PLAN_FILE,
        json.dumps(plan, indent=2).encode(),
        type=ArtifactType.PLAN_SNAPSHOT,
        kind="dry_run_plan",
        content_type="application/json",
    )
    changed = ", ".join(f["path"] for f in plan["files"])
    return StepResult(
        f"dry run: {outcome.result.get('source')} would change {changed}; "
        "nothing was written, built or restarted",
        {**outcome.result, "dry_run": True},
    )


def patch_step(ctx: StepContext) -> StepResult:
    """The plan's patch step: a dry run's in a scratch copy, any other in the workspace."""
    if ctx.params(PatchParameters).dry_run:
        return dry_patch(ctx)
    return patch(ctx)
