"""Workspace path safety: the one home of the rules about which relative paths may be touched.

Every caller that turns an operator-, agent- or log-supplied path into a file operation
goes through here: the workspace adapter (patches, rollback, restore), the service
profiles (allow-list overrides), the diagnosis rules (paths read from Dockerfiles) and
the artifact store. Protected names are compared case-insensitively (casefold), so a
case-insensitive filesystem cannot let ``.GIT/config`` or ``Docker-Compose.yml`` through.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

COMPOSE_GLOBS = ("docker-compose*.y*ml", "compose*.y*ml")
GIT_DIR = ".git"
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A workspace-relative path that is malformed, escapes the root or may never be patched."""

    def __init__(self, relpath: str, reason: str) -> None:
        self.relpath = relpath
        self.reason = reason
        super().__init__(f"refusing {relpath!r}: {reason}")


# --------------------------------------------------------------------------- lexical rules


def _split(relpath: str) -> list[str]:
    """Components of a relative POSIX path, or UnsafePathError saying why it is unusable."""
    if not relpath:
        raise UnsafePathError(relpath, "path is empty")
    if "\x00" in relpath:
        raise UnsafePathError(relpath, "path contains a NUL byte")
    if "\\" in relpath:
        raise UnsafePathError(relpath, "path contains a backslash")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if relpath.startswith("/") or (parts and _DRIVE.match(parts[0])):
        raise UnsafePathError(relpath, "path is absolute")
    if not parts:
        raise UnsafePathError(relpath, "path is empty")
    if ".." in parts:
        raise UnsafePathError(relpath, "path escapes the workspace (..)")
    return parts


def normalize_relpath(relpath: str) -> str:
    """The canonical posix form of a workspace-relative path (``./a//b`` -> ``a/b``).

    Refuses (UnsafePathError) empty paths, NUL bytes, backslashes, absolute paths and any
    ``..`` component, so an accepted path can never leave the root lexically.
    """
    return "/".join(_split(relpath))


def join_relpath(*parts: str) -> str | None:
    """Join and collapse workspace-relative parts (``a/b/../c``); "" for the root itself.

    None when the result is not a safe relative path (escapes, absolute, NUL...).
    """
    joined = posixpath.normpath(posixpath.join(*parts))
    if joined == ".":
        return ""
    try:
        return normalize_relpath(joined)
    except UnsafePathError:
        return None


def _folded(relpath: str) -> str | None:
    try:
        return normalize_relpath(relpath).casefold()
    except UnsafePathError:
        return None


def never_patchable_reason(relpath: str, compose_files: Iterable[str] = ()) -> str | None:
    """Why a path may never be changed whatever the allow-list says; None when it may.

    Unsafe paths, anything inside ``.git``, ``.env*`` files and the stack's compose files
    (the usual ``docker-compose*.y*ml`` / ``compose*.y*ml`` names plus ``compose_files``,
    workspace-relative) are refused, all compared case-insensitively.
    """
    try:
        parts = [p.casefold() for p in _split(relpath)]
    except UnsafePathError as exc:
        return exc.reason
    if GIT_DIR in parts:
        return "path is inside .git"
    base = parts[-1]
    named = {f for f in map(_folded, compose_files) if f}
    if any(fnmatch.fnmatchcase(base, pat) for pat in COMPOSE_GLOBS) or "/".join(parts) in named:
        return "compose files are never edited"
    if base.startswith(".env"):
        return ".env files are never edited"
    return None


# --------------------------------------------------------------------------- allow-list globs


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a workspace glob (with ``**``) into an anchored regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches_pattern(relpath: str, pattern: str) -> bool:
    """True when the normalized relative path matches one allow-list glob (case-sensitive)."""
    try:
        rel, pat = normalize_relpath(relpath), normalize_relpath(pattern)
    except UnsafePathError:
        return False
    return _glob_regex(pat).match(rel) is not None


def deny_reason(
    relpath: str, patterns: Sequence[str], compose_files: Iterable[str] = ()
) -> str | None:
    """Why a path may not be changed (never patchable or not allow-listed); None if allowed."""
    reason = never_patchable_reason(relpath, compose_files)
    if reason is not None:
        return reason
    if not any(matches_pattern(relpath, p) for p in patterns):
        return "path is not allow-listed"
    return None


def is_allowed(relpath: str, patterns: Sequence[str], compose_files: Iterable[str] = ()) -> bool:
    """True when a workspace-relative path may be changed by a remediation."""
    return deny_reason(relpath, patterns, compose_files) is None


def literal_prefix(pattern: str) -> str:
    """The leading directories of a glob that contain no wildcard ("" when there are none)."""
    parts: list[str] = []
    for part in pattern.split("/"):
        if re.search(r"[*?\[]", part):
            break
        parts.append(part)
    return "/".join(parts)


# --------------------------------------------------------------------------- on-disk rules


def is_inside(path: Path, root: Path) -> bool:
    """True when path is root or below it (both already resolved)."""
    return path == root or path.is_relative_to(root)


def in_git_dir(path: Path, root: Path) -> bool:
    """True when a resolved path lies inside root and in (or below) a ``.git`` directory."""
    if not is_inside(path, root):
        return False
    return any(p.casefold() == GIT_DIR for p in path.relative_to(root).parts)


def _resolve(path: Path) -> Path | None:
    """Real path (following every symlink), or None for a symlink loop."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _parent_problem(full: Path, real_root: Path) -> str | None:
    parent = _resolve(full.parent)
    if parent is None:
        return "parent directory cannot be resolved (symlink loop)"
    if not is_inside(parent, real_root):
        return "parent directory escapes workspace"
    if in_git_dir(parent, real_root):
        return "parent directory resolves into .git"
    return None


def _entry_problem(full: Path, real_root: Path, compose_files: Iterable[str]) -> str | None:
    if not full.is_symlink():
        return None
    target = _resolve(full)
    if target is None:
        return "symlink cannot be resolved (loop)"
    if not is_inside(target, real_root):
        return "symlink escapes workspace"
    if in_git_dir(target, real_root):
        return "symlink points into .git"
    if target != real_root:
        rel = target.relative_to(real_root).as_posix()
        if never_patchable_reason(rel, compose_files):
            return "symlink points at a protected file"
    return None


def symlink_problems(root: Path, relpath: str, compose_files: Iterable[str] = ()) -> list[str]:
    """Every way a (normalized) path escapes through symlinks: parents, then the entry."""
    real_root = Path(root).resolve()
    full = Path(root) / relpath
    found = [_parent_problem(full, real_root), _entry_problem(full, real_root, compose_files)]
    return [p for p in found if p is not None]


def contained_target(root: Path, relpath: str) -> Path:
    """Absolute path for an operation that never follows the entry itself.

    Restoring a snapshot must be able to put back any file the agent touched (even a
    protected one) and to remove links it planted, so only unsafe paths, ``.git`` and
    parent directories that resolve out of the root (or into ``.git``) are refused.
    """
    rel = normalize_relpath(relpath)
    if any(p.casefold() == GIT_DIR for p in rel.split("/")):
        raise UnsafePathError(relpath, "path is inside .git")
    full = Path(root) / rel
    problem = _parent_problem(full, Path(root).resolve())
    if problem is not None:
        raise UnsafePathError(relpath, problem)
    return full


def checked_target(root: Path, relpath: str, compose_files: Iterable[str] = ()) -> Path:
    """Absolute path for writing or removing relpath, after every safety rule passed.

    Refuses (UnsafePathError) unsafe or never-patchable paths, parent directories that
    resolve out of the root or into ``.git``, and an entry that is a symlink escaping the
    root, pointing into ``.git`` or at a protected file.
    """
    rel = normalize_relpath(relpath)
    compose = tuple(compose_files)
    reason = never_patchable_reason(rel, compose)
    if reason is not None:
        raise UnsafePathError(relpath, reason)
    problems = symlink_problems(Path(root), rel, compose)
    if problems:
        raise UnsafePathError(relpath, problems[0])
    return Path(root) / rel
