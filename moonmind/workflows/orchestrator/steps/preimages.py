"""Pre-images: the exact bytes of every file a patch touches, kept before it is written.

They are what the rollback (and a patch step delivered again after its worker died)
writes back. The manifest says, per path, whether the file existed, its mode and sha256.

Before an agent starts, every allow-listed file is journaled (:func:`journal`) with the
run's scope: a restore then also removes allow-listed files that appeared since, so a
worker killed mid-agent is undone like any other failure. Once the patch is known, the
manifest is narrowed to the changed paths (:func:`settle`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.enums import ArtifactType
from moonmind.workflows.orchestrator.paths import UnsafePathError, checked_target
from moonmind.workflows.orchestrator.steps.context import StepContext, StepFailed

MANIFEST = "pre-images/manifest.json"
SCOPE = "pre-images/scope.json"


def _sync_dir(path: Path) -> None:
    """fsync a directory so the renames of the files just written in it are durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _forget(ctx: StepContext, relpath: str) -> None:
    """An artifact about to be written again: drop this step's record of the old bytes."""
    ctx.produced[:] = [p for p in ctx.produced if p.stored.path != relpath]


def _write_scope(ctx: StepContext, scope: dict[str, Any]) -> None:
    _forget(ctx, SCOPE)
    ctx.save(
        SCOPE,
        json.dumps(scope, indent=2).encode(),
        type=ArtifactType.PRE_IMAGE,
        kind="pre_image_scope",
        content_type="application/json",
    )


def journal(ctx: StepContext, before: ws.Snapshot) -> None:
    """Keep every file of the snapshot's scope, durably, before something edits blindly.

    The scope (allow globs, excluded paths, the files that existed) is written first, the
    bytes and the manifest after, and every folder touched is fsync'd.
    """
    scope = before.scope
    _write_scope(
        ctx,
        {
            "allow": list(scope.allow or ()),
            "exclude": [str(p) for p in scope.exclude],
            "existing": sorted(before.files),
        },
    )
    save(ctx, before, sorted(before.files))
    manifest_file = ctx.store.resolve(ctx.run_id, MANIFEST)
    for folder in {manifest_file.parent, *(p.parent for p in _kept_files(ctx, before))}:
        _sync_dir(folder)
    _sync_dir(ctx.store.run_dir(ctx.run_id))


def _kept_files(ctx: StepContext, before: ws.Snapshot) -> list[Path]:
    return [ctx.store.resolve(ctx.run_id, f"pre-images/{path}") for path in before.files]


def _scope(ctx: StepContext) -> dict[str, Any]:
    try:
        return dict(json.loads(ctx.store.resolve(ctx.run_id, SCOPE).read_text()))
    except (OSError, ValueError):
        return {}


def pending(ctx: StepContext) -> bool:
    """True when pre-images were kept that an earlier attempt may not have settled."""
    return bool(manifest(ctx) or _scope(ctx).get("allow"))


def settle(ctx: StepContext, before: ws.Snapshot, changed: Iterable[str]) -> None:
    """After a journaled patch: keep only the changed paths, then drop the scope."""
    save(ctx, before, sorted(set(changed)))
    if _scope(ctx):
        _write_scope(ctx, {})


def discard(ctx: StepContext) -> None:
    """The workspace was put back by the step itself: nothing is left to restore."""
    if manifest(ctx) or _scope(ctx):
        _write_scope(ctx, {})
        _forget(ctx, MANIFEST)
        ctx.save(
            MANIFEST,
            b"{}",
            type=ArtifactType.PRE_IMAGE,
            kind="pre_image_manifest",
            content_type="application/json",
        )


def save(ctx: StepContext, before: ws.Snapshot, paths: Iterable[str]) -> None:
    """Keep the bytes and the manifest; if the artifact store cannot keep them, refuse:
    nothing may be written that a rollback could not put back."""
    manifest = {}
    lost: list[str] = []
    for path in paths:
        state = before.get(path)
        manifest[path] = {
            "existed": state.exists,
            "mode": state.mode,
            "sha256": state.sha256,
            "symlink_to": state.link_target if state.is_symlink else None,
        }
        if state.exists and state.data is not None:
            kept = ctx.save(
                f"pre-images/{path}", state.data, type=ArtifactType.PRE_IMAGE, kind="pre_image"
            )
            lost += [] if kept else [path]
    _forget(ctx, MANIFEST)
    kept_manifest = ctx.save(
        MANIFEST,
        json.dumps(manifest, indent=2).encode(),
        type=ArtifactType.PRE_IMAGE,
        kind="pre_image_manifest",
        content_type="application/json",
    )
    if lost or kept_manifest is None:
        raise StepFailed(
            "the artifact store cannot keep the pre-images "
            f"({', '.join(lost) or MANIFEST}); nothing was changed: make "
            "ORCHESTRATOR_ARTIFACT_ROOT writable and retry",
            rollback=False,
        )


def manifest(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """The recorded manifest ({} when nothing was kept yet)."""
    try:
        return dict(json.loads(ctx.store.resolve(ctx.run_id, MANIFEST).read_text()))
    except (OSError, ValueError):
        return {}


def _check_restored(full: Path, path: str, meta: dict[str, Any]) -> None:
    """The written file gets its recorded mode back and must hash to the recorded sha256
    (for a symlink: the sha256 of its target, as the snapshot records it)."""
    if meta.get("symlink_to") is not None:
        digest = hashlib.sha256(os.fsencode(os.readlink(full))).hexdigest()
    else:
        if meta.get("mode") is not None:
            os.chmod(full, int(meta["mode"]))
        digest = hashlib.sha256(full.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise StepFailed(
            f"restored {path} hashes to {digest}, not the recorded {meta['sha256']}",
            rollback=False,
        )


def restore(ctx: StepContext, out: Callable[[str], None]) -> list[str]:
    """Write back the kept bytes; remove files that did not exist before. The paths.

    Every path is checked before anything is touched, so a manifest naming a path that
    may never be written (or reading a pre-image from outside the store) restores nothing.
    """
    root = ctx.workspace
    recorded = manifest(ctx)
    refused = []
    for path in sorted(recorded):
        try:
            checked_target(root, path)  # the rule write_file/remove_file apply, checked up front
        except UnsafePathError as exc:
            refused.append(f"{path}: {exc.reason}")
    if refused:
        raise StepFailed(
            f"pre-image manifest names paths that are never written, nothing restored: "
            f"{'; '.join(refused)}",
            rollback=False,
        )
    restored: list[str] = []
    for path, meta in sorted(recorded.items()):
        if meta["existed"] and meta.get("symlink_to") is not None:
            ws.write_symlink(root, path, meta["symlink_to"])
            _check_restored(root / path, path, meta)
            out(f"restored symlink {path} -> {meta['symlink_to']}")
        elif meta["existed"]:
            data = ctx.store.resolve(ctx.run_id, f"pre-images/{path}").read_bytes()
            ws.write_file(root, path, data)
            _check_restored(root / path, path, meta)
            out(f"restored {path} (sha256 {meta['sha256'][:12]} checked, mode {meta['mode']:o})")
        elif (root / path).exists() or (root / path).is_symlink():
            ws.remove_file(root, path)
            out(f"removed {path} (did not exist before)")
        restored.append(path)
    return restored + _remove_created(ctx, recorded, out)


def _remove_created(
    ctx: StepContext, recorded: dict[str, Any], out: Callable[[str], None]
) -> list[str]:
    """Allow-listed files that appeared after the journal (e.g. an agent killed mid-way)."""
    scope = _scope(ctx)
    if not scope.get("allow"):
        return []
    known = set(recorded) | set(scope.get("existing", []))
    now = ws.Snapshot.take(
        ctx.workspace,
        ws.Scope(tuple(scope["allow"]), tuple(Path(p) for p in scope.get("exclude", []))),
    )
    removed = []
    for path in sorted(set(now.files) - known):
        ws.remove_file(ctx.workspace, path)
        out(f"removed {path} (created after the pre-images were kept)")
        removed.append(path)
    return removed
