"""Workspace adapter: the git checkout that holds the Compose stack being repaired.

Everything that touches the operator's files goes through here so that the safety rules
(allow-list, hard denials, symlink escapes, exact rollback) live in one place.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
import posixpath
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

ChangeKind = Literal["added", "modified", "deleted"]

GIT_TIMEOUT_S = 60.0
_COMPOSE_GLOBS = ("docker-compose*.y*ml", "compose*.y*ml")
_REGULAR_MODE = 0o644


class WorkspaceError(Exception):
    """Raised when a workspace operation cannot be performed safely."""


# --------------------------------------------------------------------------- allow-list


def _path_parts(relpath: str) -> list[str] | None:
    """Split a relative POSIX path into components; None when it is unusable or escapes."""
    if not relpath or "\x00" in relpath or "\\" in relpath:
        return None
    if relpath.startswith("/") or re.match(r"^[A-Za-z]:", relpath):
        return None
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def protected_reason(relpath: str) -> str | None:
    """Why a path may never be changed regardless of the allow-list (None if it may)."""
    parts = _path_parts(relpath)
    if parts is None:
        return "path is absolute, empty or escapes the workspace"
    if any(p.casefold() == ".git" for p in parts):
        return "path is inside .git"
    base = parts[-1].casefold()
    if any(fnmatch.fnmatchcase(base, pat) for pat in _COMPOSE_GLOBS):
        return "compose files are never edited"
    if base.startswith(".env"):
        return ".env files are never edited"
    return None


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
    """True when the normalized relative path matches one allow-list glob."""
    parts = _path_parts(relpath)
    pat_parts = _path_parts(pattern)
    if parts is None or pat_parts is None:
        return False
    return _glob_regex("/".join(pat_parts)).match("/".join(parts)) is not None


def deny_reason(relpath: str, patterns: Sequence[str]) -> str | None:
    """Why a path may not be changed (hard denial or not allow-listed); None if allowed."""
    reason = protected_reason(relpath)
    if reason is not None:
        return reason
    if not any(matches_pattern(relpath, p) for p in patterns):
        return "path is not allow-listed"
    return None


def is_allowed(relpath: str, patterns: Sequence[str]) -> bool:
    """True when a workspace-relative path may be changed by a remediation."""
    return deny_reason(relpath, patterns) is None


def _normalize_rel(relpath: str) -> str:
    """Canonical relative form of a path, or WorkspaceError when it escapes."""
    parts = _path_parts(relpath)
    if parts is None:
        raise WorkspaceError(f"unsafe workspace path: {relpath!r}")
    return "/".join(parts)


# --------------------------------------------------------------------------- snapshots


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
                if name.casefold() == ".git":
                    continue
                full = base / name
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                state = FileState.read(full)
                if state.exists:
                    files[rel] = state
                elif full.is_dir():
                    dirs.add(rel)
            dirnames[:] = [d for d in dirnames if d.casefold() != ".git" and not _is_link(base, d)]
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


def preimages(before: Snapshot, changes: Iterable[Change]) -> dict[str, bytes | None]:
    """Original bytes per touched path (symlinks give their target; None = did not exist)."""
    return {c.path: before.get(c.path).data for c in changes}


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Violation:
    """A change that breaks the workspace safety rules."""

    path: str
    reason: str


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _in_git_dir(path: Path, root: Path) -> bool:
    if not _inside(path, root):
        return False
    return any(p.casefold() == ".git" for p in path.relative_to(root).parts)


def _validate_one(root: Path, real_root: Path, path: str, patterns: Sequence[str]) -> list[str]:
    reasons: list[str] = []
    denied = deny_reason(path, patterns)
    if denied is not None:
        return [denied]
    full = root / path
    parent = full.parent.resolve()
    if not _inside(parent, real_root):
        reasons.append("parent directory escapes workspace")
    elif _in_git_dir(parent, real_root):
        reasons.append("parent directory resolves into .git")
    if full.is_symlink():
        target = full.resolve()
        if not _inside(target, real_root):
            reasons.append("symlink escapes workspace")
        elif _in_git_dir(target, real_root):
            reasons.append("symlink points into .git")
        elif target != real_root and protected_reason(target.relative_to(real_root).as_posix()):
            reasons.append("symlink points at a protected file")
    return reasons


def validate_changes(
    root: Path, changes: Iterable[Change], patterns: Sequence[str]
) -> list[Violation]:
    """Every rule each changed path breaks; an empty list means the changes are acceptable."""
    real_root = Path(root).resolve()
    return [
        Violation(c.path, reason)
        for c in changes
        for reason in _validate_one(Path(root), real_root, c.path, patterns)
    ]


# --------------------------------------------------------------------------- restore / write


def _checked_target(root: Path, relpath: str) -> Path:
    """Absolute path for relpath after making sure its parent stays inside root."""
    rel = _normalize_rel(relpath)
    if any(part.casefold() == ".git" for part in rel.split("/")):
        raise WorkspaceError(f"refusing to touch {relpath!r} inside .git")
    full = Path(root) / rel
    real_root = Path(root).resolve()
    parent = full.parent.resolve()
    if not _inside(parent, real_root) or _in_git_dir(parent, real_root):
        raise WorkspaceError(f"parent of {relpath!r} resolves outside the workspace")
    return full


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
    """Put the changed paths back exactly as recorded; unrelated files are never touched."""
    root = Path(root)
    items = list(changes)
    removals = sorted(
        (c.path for c in items if not before.get(c.path).exists), key=len, reverse=True
    )
    for rel in removals:
        full = root / _normalize_rel(rel)
        if os.path.lexists(full):
            _checked_target(root, rel)
            _remove_entry(full)
        _prune_created_dirs(root, rel, before.dirs)
    for c in items:
        state = before.get(c.path)
        if state.exists:
            _atomic_replace(_checked_target(root, c.path), state)


def write_file(root: Path, relpath: str, data: bytes) -> None:
    """Atomically replace (or create) a regular file, keeping its permission bits."""
    full = _checked_target(Path(root), relpath)
    if full.is_symlink():
        raise WorkspaceError(f"refusing to overwrite symlink {relpath!r}")
    if full.is_dir():
        raise WorkspaceError(f"{relpath!r} is a directory")
    mode = stat.S_IMODE(full.stat().st_mode) if full.exists() else _REGULAR_MODE
    digest = hashlib.sha256(data).hexdigest()
    _atomic_replace(full, FileState(True, False, None, mode, digest, data))


# --------------------------------------------------------------------------- patches


def _git(root: Path, args: Sequence[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args],
            input=stdin,
            cwd=root,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkspaceError(f"git {' '.join(args)} failed: {exc}") from exc


def _git_message(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
    return text or f"git exited with status {proc.returncode}"


def _patch_bytes(diff_text: str) -> bytes:
    if not diff_text.strip():
        raise WorkspaceError("empty patch")
    return diff_text.encode("utf-8", "surrogateescape")


def check_patch(root: Path, diff_text: str) -> None:
    """Dry-run a patch with ``git apply --check``; raise with git's own message if it fails."""
    proc = _git(
        Path(root), ["apply", "--check", "--whitespace=nowarn", "-"], _patch_bytes(diff_text)
    )
    if proc.returncode != 0:
        raise WorkspaceError(_git_message(proc))


def apply_patch(root: Path, diff_text: str) -> None:
    """Apply a patch to the working tree after a successful dry run."""
    check_patch(root, diff_text)
    proc = _git(Path(root), ["apply", "--whitespace=nowarn", "-"], _patch_bytes(diff_text))
    if proc.returncode != 0:
        raise WorkspaceError(_git_message(proc))


def _unquote(name: str) -> str:
    """Undo git's C-style quoting of a path in a patch header."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    raw = name[1:-1].encode("utf-8").decode("unicode_escape")
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def _source_names(diff_text: str) -> list[str]:
    """Old names of renamed or copied files, which git's numstat does not report."""
    names = []
    for line in diff_text.splitlines():
        for prefix in ("rename from ", "copy from "):
            if line.startswith(prefix):
                names.append(_unquote(line[len(prefix) :]))
    return names


def patch_paths(root: Path, diff_text: str) -> list[str]:
    """Every path a patch would touch (both sides of renames), so callers can pre-validate."""
    proc = _git(Path(root), ["apply", "--numstat", "-z", "-"], _patch_bytes(diff_text))
    if proc.returncode != 0:
        raise WorkspaceError(_git_message(proc))
    paths = _source_names(diff_text)
    for entry in proc.stdout.decode("utf-8", "surrogateescape").split("\x00"):
        fields = entry.split("\t", 2)
        if len(fields) == 3 and fields[2]:
            paths.append(fields[2])
    return list(dict.fromkeys(paths))


# --------------------------------------------------------------------------- diffs


def _git_mode(state: FileState) -> str:
    if state.is_symlink:
        return "120000"
    return "100755" if state.mode & 0o111 else "100644"


def _quote(path: str, prefix: str) -> str:
    """Quote a diff path the way git does when it contains special characters."""
    full = prefix + path
    if not re.search(r'["\\\x00-\x1f\x7f]', full) and full.isascii():
        return full
    out = []
    for byte in full.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append({0x09: "\\t", 0x0A: "\\n"}.get(byte, f"\\{byte:03o}"))
    return '"' + "".join(out) + '"'


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _range(start: int, length: int) -> str:
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def _emit_line(out: list[str], tag: str, line: str) -> None:
    if line.endswith("\n"):
        out.append(tag + line)
    else:
        out.append(tag + line + "\n")
        out.append("\\ No newline at end of file\n")


def _lines(text: str) -> list[str]:
    """Split on LF only, as git does (str.splitlines also breaks on CR, FF and others)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _hunks(old: str, new: str) -> list[str]:
    """Unified hunks with git's 'No newline at end of file' markers."""
    a, b = _lines(old), _lines(new)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(3):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@\n")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                for line in a[a1:a2]:
                    _emit_line(out, " ", line)
                continue
            for line in a[a1:a2]:
                _emit_line(out, "-", line)
            for line in b[b1:b2]:
                _emit_line(out, "+", line)
    return out


def _content(state: FileState) -> str:
    return (state.data or b"").decode("utf-8") if state.exists else ""


def _file_diff(path: str, old: FileState, new: FileState) -> list[str]:
    """git-style diff lines for one path; a type change becomes delete + add."""
    if old.exists and new.exists and old.is_symlink != new.is_symlink:
        return _file_diff(path, old, FileState.absent()) + _file_diff(path, FileState.absent(), new)
    a, b = _quote(path, "a/"), _quote(path, "b/")
    head = [f"diff --git {a} {b}\n"]
    if not old.exists:
        head.append(f"new file mode {_git_mode(new)}\n")
    elif not new.exists:
        head.append(f"deleted file mode {_git_mode(old)}\n")
    elif _git_mode(old) != _git_mode(new):
        head += [f"old mode {_git_mode(old)}\n", f"new mode {_git_mode(new)}\n"]
    old_data, new_data = old.data or b"", new.data or b""
    if old_data == new_data:
        return head if len(head) > 1 else []
    if not (_is_text(old_data) and _is_text(new_data)):
        return [*head, f"Binary files {a} and {b} differ\n"]
    left = a if old.exists else "/dev/null"
    right = b if new.exists else "/dev/null"
    hunks = _hunks(_content(old), _content(new))
    return [*head, f"--- {left}\n", f"+++ {right}\n", *hunks]


def unified_diff(root: Path, before: Snapshot, changes: Iterable[Change]) -> str:
    """git-style diff from the snapshot to the current tree, applicable with ``git apply``."""
    lines: list[str] = []
    for c in sorted(changes, key=lambda item: item.path):
        current = FileState.read(Path(root) / _normalize_rel(c.path))
        lines += _file_diff(c.path, before.get(c.path), current)
    return "".join(lines)
