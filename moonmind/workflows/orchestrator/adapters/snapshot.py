"""Snapshots of the workspace tree: every file and symlink, byte-exact, for diffs and restore."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moonmind.workflows.orchestrator.paths import GIT_DIR

ChangeKind = Literal["added", "modified", "deleted"]


class WorkspaceError(Exception):
    """Raised when a workspace operation cannot be performed safely."""


@dataclass(frozen=True)
class FileState:
    """One path's state; ``data`` holds file bytes, or the encoded target for a symlink."""

    exists: bool
    is_symlink: bool = False
    link_target: str | None = None
    mode: int = 0
    sha256: str = ""
    data: bytes | None = None

    @classmethod
    def absent(cls) -> FileState:
        """State of a path that does not exist."""
        return cls(exists=False)

    @classmethod
    def read(cls, path: Path) -> FileState:
        """Capture a path without following symlinks (absent for dirs and special files)."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return cls.absent()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            raw = os.fsencode(target)
            return cls(True, True, target, 0o777, hashlib.sha256(raw).hexdigest(), raw)
        if not stat.S_ISREG(st.st_mode):
            return cls.absent()
        data = path.read_bytes()
        mode = stat.S_IMODE(st.st_mode)
        return cls(True, False, None, mode, hashlib.sha256(data).hexdigest(), data)

    def same_as(self, other: FileState) -> bool:
        """Equality that ignores the stored bytes (hash already covers them)."""
        return (self.exists, self.is_symlink, self.link_target, self.mode, self.sha256) == (
            other.exists,
            other.is_symlink,
            other.link_target,
            other.mode,
            other.sha256,
        )


@dataclass(frozen=True)
class Snapshot:
    """Every file and symlink under a root (excluding .git) plus the directories present."""

    root: Path
    files: dict[str, FileState] = field(default_factory=dict)
    dirs: frozenset[str] = frozenset()

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        """Record the tree without following symlinks so it can be restored exactly."""
        root = Path(root)
        files: dict[str, FileState] = {}
        dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            rel_dir = base.relative_to(root).as_posix()
            for name in [*dirnames, *filenames]:
                if name.casefold() == GIT_DIR:
                    continue
                full = base / name
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                state = FileState.read(full)
                if state.exists:
                    files[rel] = state
                elif full.is_dir():
                    dirs.add(rel)
            dirnames[:] = [d for d in dirnames if d.casefold() != GIT_DIR and not _is_link(base, d)]
        return cls(root=root, files=files, dirs=frozenset(dirs))

    def get(self, relpath: str) -> FileState:
        """State of one path (absent when not recorded)."""
        return self.files.get(relpath, FileState.absent())


def _is_link(base: Path, name: str) -> bool:
    return (base / name).is_symlink()


@dataclass(frozen=True)
class Change:
    """One path that differs between two snapshots."""

    path: str
    kind: ChangeKind


def changes(before: Snapshot, after: Snapshot) -> list[Change]:
    """Paths that were added, modified or deleted, sorted by path."""
    result: list[Change] = []
    for path in sorted(set(before.files) | set(after.files)):
        old, new = before.get(path), after.get(path)
        if not old.exists:
            result.append(Change(path, "added"))
        elif not new.exists:
            result.append(Change(path, "deleted"))
        elif not old.same_as(new):
            result.append(Change(path, "modified"))
    return result
