"""Snapshots of the workspace tree: files and symlinks, byte-exact, for diffs and restore.

A snapshot reads the paths of its :class:`Scope`: the allow-list of the run (so two runs on
two services of one workspace never see each other's edits), never ``.git`` and never the
orchestrator's own state (artifact root, SQLite file, broker folder, its ``var/``) when that
lives inside the workspace.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moonmind.workflows.orchestrator.paths import GIT_DIR, is_inside, matches_pattern

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
class Scope:
    """What a snapshot reads: paths matching ``allow`` (None: every path), minus ``exclude``.

    ``exclude`` holds absolute paths (files or folders) that are never read, listed or
    restored, wherever they are; those outside the workspace simply do not matter.
    """

    allow: tuple[str, ...] | None = None
    exclude: tuple[Path, ...] = ()

    def covers(self, relpath: str) -> bool:
        """True when relpath is one of the paths this scope reads (exclusions aside)."""
        return self.allow is None or any(matches_pattern(relpath, p) for p in self.allow)

    def excluded_under(self, root: Path) -> frozenset[str]:
        """The excluded paths that lie strictly inside root, workspace-relative."""
        real_root = Path(root).resolve()
        found: set[str] = set()
        for path in self.exclude:
            real = Path(path).expanduser().resolve()
            if real != real_root and is_inside(real, real_root):
                found.add(real.relative_to(real_root).as_posix())
        return frozenset(found)


def _skipped(name: str, rel: str, excluded: frozenset[str]) -> bool:
    return name.casefold() == GIT_DIR or rel in excluded


@dataclass(frozen=True)
class Snapshot:
    """The files and symlinks of a scope under a root, plus every directory present."""

    root: Path
    files: dict[str, FileState] = field(default_factory=dict)
    dirs: frozenset[str] = frozenset()
    scope: Scope = Scope()

    @classmethod
    def take(cls, root: Path, scope: Scope | None = None) -> Snapshot:
        """Record the tree without following symlinks so it can be restored exactly.

        Directories are all listed (restore prunes only the ones it created); file bytes
        are read only for paths the scope covers.
        """
        root = Path(root)
        scope = scope or Scope()
        excluded = scope.excluded_under(root)
        files: dict[str, FileState] = {}
        dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            rel_dir = base.relative_to(root).as_posix()
            prefix = "" if rel_dir == "." else f"{rel_dir}/"
            for name in [*dirnames, *filenames]:
                rel = prefix + name
                if _skipped(name, rel, excluded):
                    continue
                full = base / name
                if full.is_dir() and not full.is_symlink():
                    dirs.add(rel)
                elif scope.covers(rel) and (state := FileState.read(full)).exists:
                    files[rel] = state
            dirnames[:] = [
                d
                for d in dirnames
                if not _skipped(d, prefix + d, excluded) and not _is_link(base, d)
            ]
        return cls(root=root, files=files, dirs=frozenset(dirs), scope=scope)

    def again(self) -> Snapshot:
        """A new snapshot of the same root and scope (to compare with this one)."""
        return Snapshot.take(self.root, self.scope)

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
