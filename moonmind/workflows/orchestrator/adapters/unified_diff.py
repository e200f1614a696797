"""git-style diffs of a workspace change, rendered from snapshots (``git apply`` accepts them)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

from moonmind.workflows.orchestrator.adapters.snapshot import (
    Change,
    FileState,
    Snapshot,
    WorkspaceError,
)
from moonmind.workflows.orchestrator.paths import UnsafePathError, normalize_relpath


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
        try:
            rel = normalize_relpath(c.path)
        except UnsafePathError as exc:
            raise WorkspaceError(f"unsafe workspace path: {exc}") from None
        current = FileState.read(Path(root) / rel)
        lines += _file_diff(c.path, before.get(c.path), current)
    return "".join(lines)
