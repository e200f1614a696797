"""Workspace adapter: the git checkout that holds the Compose stack being repaired.

Everything that touches the operator's files goes through here; the path rules it
enforces (allow-list, never-patchable files, symlink escapes) live in
:mod:`moonmind.workflows.orchestrator.paths`. Snapshots, patches and diffs have their
own modules and are re-exported so callers keep one import.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from moonmind.workflows.orchestrator.adapters.git_patch import (
    GIT_TIMEOUT_S,
    apply_patch,
    check_patch,
    patch_paths,
)
from moonmind.workflows.orchestrator.adapters.snapshot import (
    Change,
    ChangeKind,
    FileState,
    Scope,
    Snapshot,
    WorkspaceError,
    changes,
)
from moonmind.workflows.orchestrator.adapters.unified_diff import unified_diff
from moonmind.workflows.orchestrator.paths import (
    UnsafePathError,
    checked_target,
    contained_target,
    deny_reason,
    is_allowed,
    matches_pattern,
    never_patchable_reason,
    normalize_relpath,
    symlink_problems,
)

__all__ = [
    "GIT_TIMEOUT_S",
    "Change",
    "ChangeKind",
    "FileState",
    "Scope",
    "Snapshot",
    "Violation",
    "WorkspaceError",
    "apply_patch",
    "changes",
    "check_patch",
    "deny_reason",
    "is_allowed",
    "matches_pattern",
    "never_patchable_reason",
    "patch_paths",
    "remove_file",
    "write_symlink",
    "restore",
    "unified_diff",
    "validate_changes",
    "write_file",
]

_REGULAR_MODE = 0o644


def _normalized(relpath: str) -> str:
    try:
        return normalize_relpath(relpath)
    except UnsafePathError as exc:
        raise WorkspaceError(f"unsafe workspace path: {exc}") from None


def _checked(root: Path, relpath: str) -> Path:
    try:
        return checked_target(Path(root), relpath)
    except UnsafePathError as exc:
        raise WorkspaceError(str(exc)) from None


def _contained(root: Path, relpath: str) -> Path:
    try:
        return contained_target(Path(root), relpath)
    except UnsafePathError as exc:
        raise WorkspaceError(str(exc)) from None


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Violation:
    """A change that breaks the workspace safety rules."""

    path: str
    reason: str


def _validate_one(
    root: Path, path: str, patterns: Sequence[str], compose_files: Sequence[str]
) -> list[str]:
    denied = deny_reason(path, patterns, compose_files)
    if denied is not None:
        return [denied]
    return symlink_problems(root, normalize_relpath(path), compose_files)


def validate_changes(
    root: Path,
    changes: Iterable[Change],
    patterns: Sequence[str],
    compose_files: Sequence[str] = (),
) -> list[Violation]:
    """Every rule each changed path breaks; an empty list means the changes are acceptable."""
    return [
        Violation(c.path, reason)
        for c in changes
        for reason in _validate_one(Path(root), c.path, patterns, compose_files)
    ]


# --------------------------------------------------------------------------- restore / write


def _remove_entry(full: Path) -> None:
    """Delete a file, symlink or empty directory at full without following links."""
    if full.is_symlink() or full.is_file():
        full.unlink()
    elif full.is_dir():
        try:
            full.rmdir()
        except OSError as exc:
            raise WorkspaceError(f"cannot remove non-empty directory {full}") from exc
    elif os.path.lexists(full):
        full.unlink()


def _prune_created_dirs(root: Path, relpath: str, keep: frozenset[str]) -> None:
    """Remove empty directories above relpath that did not exist in the snapshot."""
    parent = posixpath.dirname(relpath)
    while parent and parent not in keep:
        full = root / parent
        if full.is_symlink() or not full.is_dir() or any(full.iterdir()):
            return
        full.rmdir()
        parent = posixpath.dirname(parent)


def _atomic_replace(full: Path, state: FileState) -> None:
    """Put a file or symlink in place via a temp entry and rename in the same directory."""
    full.parent.mkdir(parents=True, exist_ok=True)
    if full.is_dir() and not full.is_symlink():
        _remove_entry(full)
    fd, tmp_name = tempfile.mkstemp(dir=full.parent, prefix=f".{full.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if state.is_symlink:
            os.close(fd)
            tmp.unlink()
            os.symlink(state.link_target or "", tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(state.data or b"")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, state.mode)
        os.replace(tmp, full)
    except BaseException:
        if os.path.lexists(tmp):
            tmp.unlink()
        raise


def restore(root: Path, before: Snapshot, changes: Iterable[Change]) -> None:
    """Put the changed paths back exactly as recorded; unrelated files are never touched.

    Unlike write_file this may put back protected files and remove planted symlinks
    (the entry itself is never followed); only parent directories are checked.
    """
    root = Path(root)
    items = list(changes)
    removals = sorted(
        (c.path for c in items if not before.get(c.path).exists), key=len, reverse=True
    )
    for rel in removals:
        full = root / _normalized(rel)
        if os.path.lexists(full):
            _remove_entry(_contained(root, rel))
        _prune_created_dirs(root, rel, before.dirs)
    for c in items:
        state = before.get(c.path)
        if state.exists:
            _atomic_replace(_contained(root, c.path), state)


def write_file(root: Path, relpath: str, data: bytes) -> None:
    """Atomically replace (or create) a regular file, keeping its permission bits.

    Refused (WorkspaceError) by :func:`paths.checked_target`, and for any symlink or
    directory already at relpath.
    """
    full = _checked(root, relpath)
    if full.is_symlink():
        raise WorkspaceError(f"refusing to overwrite symlink {relpath!r}")
    if full.is_dir():
        raise WorkspaceError(f"{relpath!r} is a directory")
    mode = stat.S_IMODE(full.stat().st_mode) if full.exists() else _REGULAR_MODE
    digest = hashlib.sha256(data).hexdigest()
    _atomic_replace(full, FileState(True, False, None, mode, digest, data))


def write_symlink(root: Path, relpath: str, target: str) -> None:
    """Atomically put a symlink (back) at relpath; its target is stored, never followed.

    The link's own path is refused like write_file's (never-patchable, escaping parents).
    """
    full = _checked(root, relpath)
    if full.is_dir() and not full.is_symlink():
        raise WorkspaceError(f"{relpath!r} is a directory")
    raw = os.fsencode(target)
    _atomic_replace(
        full, FileState(True, True, target, 0o777, hashlib.sha256(raw).hexdigest(), raw)
    )


def remove_file(root: Path, relpath: str) -> None:
    """Delete one file (a symlink is removed, never followed); missing paths are a no-op.

    Goes through the same :func:`paths.checked_target` as write_file, so it refuses
    (WorkspaceError) never-patchable paths, ``.git`` and anything reached through a
    symlink that escapes the workspace.
    """
    full = _checked(root, relpath)
    if full.is_dir() and not full.is_symlink():
        raise WorkspaceError(f"refusing to remove directory {relpath!r}")
    if os.path.lexists(full):
        full.unlink()
