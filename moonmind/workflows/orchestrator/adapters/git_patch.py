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
