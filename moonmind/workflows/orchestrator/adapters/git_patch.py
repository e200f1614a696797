"""Operator patches: dry-run, apply and list the paths of a diff with the real ``git apply``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from moonmind.workflows.orchestrator.adapters.snapshot import WorkspaceError

GIT_TIMEOUT_S = 60.0


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


# What an operator's patch may not do whatever its paths: more files than a repair needs,
# binary content (unreadable in review, unchecked by the secret guard), and new modes that
# make a file executable, a symlink or a submodule (git's own summary says which).
MAX_PATCH_FILES = 200
_FORBIDDEN_MODES = {"120000": "a symlink", "160000": "a submodule"}


class PatchRefused(WorkspaceError):
    """A patch refused for what it is, before any of it is applied."""


def _new_modes(summary: str) -> list[tuple[str, str]]:
    """(mode, rest of line) for every file git would create or change the mode of."""
    found = []
    for line in summary.splitlines():
        words = line.split()
        if words[:2] == ["create", "mode"] and len(words) > 2:
            found.append((words[2], " ".join(words[3:])))
        elif words[:2] == ["mode", "change"] and len(words) > 4:
            found.append((words[4], " ".join(words[5:])))
    return found


def _refusal(root: Path, diff_text: str, numstat: list[list[str]]) -> str | None:
    if len(numstat) > MAX_PATCH_FILES:
        return f"patch touches {len(numstat)} files; at most {MAX_PATCH_FILES} are accepted"
    binary = [fields[2] for fields in numstat if fields[0] == "-"]
    if binary:
        return f"binary patch for {binary[0]}; only text changes are applied"
    proc = _git(root, ["apply", "--summary", "-"], _patch_bytes(diff_text))
    if proc.returncode != 0:
        return _git_message(proc)
    for mode, path in _new_modes(proc.stdout.decode("utf-8", "replace")):
        kind = _FORBIDDEN_MODES.get(mode)
        if kind is None and int(mode, 8) & 0o111:
            kind = "executable"
        if kind is not None:
            return f"patch makes {path} {kind} (mode {mode}); only regular files are written"
    return None


def patch_paths(root: Path, diff_text: str) -> list[str]:
    """Every path a patch would touch (both sides of renames), so callers can pre-validate.

    Raises PatchRefused for a patch no path check could make safe: too many files, binary
    content, or a file made executable, a symlink or a submodule."""
    proc = _git(Path(root), ["apply", "--numstat", "-z", "-"], _patch_bytes(diff_text))
    if proc.returncode != 0:
        raise WorkspaceError(_git_message(proc))
    numstat = [
        fields
        for entry in proc.stdout.decode("utf-8", "surrogateescape").split("\x00")
        if len(fields := entry.split("\t", 2)) == 3 and fields[2]
    ]
    reason = _refusal(Path(root), diff_text, numstat)
    if reason is not None:
        raise PatchRefused(reason)
    paths = _source_names(diff_text) + [fields[2] for fields in numstat]
    return list(dict.fromkeys(paths))
