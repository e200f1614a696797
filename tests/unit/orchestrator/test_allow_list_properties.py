"""Hypothesis properties of the allow-list, over random paths *and* random patterns.

test_paths.py already states the path validator's properties (normalize_relpath,
checked_target). Here the allow-list is hostile too: whatever globs a profile holds
(``**``, ``../**``, ``/**``, ``.git/**``, ``**/.env*``...), a path it accepts never
escapes the workspace, never lands in ``.git``, a ``.env*`` file or a compose file,
lexically or through a symlink, and does match one of the globs. The last property
goes through ``git apply`` itself: the paths git says a random operator diff touches
are either refused by the patch step's pre-check or safe.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonmind.workflows.orchestrator.adapters.git_patch import PatchRefused, patch_paths
from moonmind.workflows.orchestrator.adapters.snapshot import WorkspaceError
from moonmind.workflows.orchestrator.adapters.workspace import Change, validate_changes
from moonmind.workflows.orchestrator.paths import (
    deny_reason,
    is_allowed,
    matches_pattern,
    normalize_relpath,
)

_PIECES = [
    *[".git", ".GIT", "hooks", "config", ".env", ".Env.prod", ".envrc", ".gitignore"],
    *["docker-compose.yml", "compose.YAML", "Compose.override.yml", "compose"],
    *["..", ".", "", "app", "src", "x.txt", "Dockerfile", "\\", "\x00", "C:", "~", " ", "\n"],
    *["escape", "escape_file", "inner", "gitlink", "envlink", "composelink", "loop"],
    *["*", "**", "?", "[a-z]", "[!x]", "*.txt", ".*"],
]
_SEGMENTS = st.sampled_from(_PIECES)
_PATHS = st.one_of(
    st.text(max_size=16),
    st.tuples(st.sampled_from(["", "/", "./", "../"]), st.lists(_SEGMENTS, max_size=6)).map(
        lambda t: t[0] + "/".join(t[1])
    ),
)
_PATTERNS = st.lists(
    st.one_of(
        st.sampled_from(["**", "*", "../**", "/**", ".git/**", "**/.env*", "app/**", "**/*"]),
        _PATHS,
    ),
    min_size=1,
    max_size=4,
)
_COMPOSE = re.compile(r"(?:docker-)?compose.*\.y.*ml", flags=re.DOTALL)


def _protected(rel: str) -> bool:
    """The never-patchable names, stated independently of paths.py."""
    parts = rel.casefold().split("/")
    return ".git" in parts or parts[-1].startswith(".env") or bool(_COMPOSE.fullmatch(parts[-1]))


def _inside(rel: str) -> bool:
    return posixpath.normpath(posixpath.join("/ws", rel)).startswith("/ws/")


@settings(max_examples=600, deadline=None)
@given(path=_PATHS, patterns=_PATTERNS)
def test_an_allowed_path_is_inside_unprotected_and_matched(path: str, patterns: list[str]) -> None:
    if not is_allowed(path, patterns, compose_files=["stack/my-stack.yaml"]):
        return
    rel = normalize_relpath(path)
    assert _inside(rel)
    assert "\x00" not in rel
    assert "\\" not in rel
    assert not _protected(rel)
    assert rel.casefold() != "stack/my-stack.yaml"
    assert any(matches_pattern(rel, p) for p in patterns)


@settings(max_examples=300, deadline=None)
@given(path=_PATHS)
def test_refusal_has_a_reason_and_never_depends_on_the_globs(path: str) -> None:
    """A never-patchable path is refused whatever the allow-list, even ``**`` and itself."""
    everything = ["**", "**/*", ".*", path]
    reason = deny_reason(path, everything)
    try:
        rel = normalize_relpath(path)
    except ValueError:
        assert reason is not None
        return
    if _protected(rel) or not _inside(rel):
        assert reason is not None
        assert reason != "path is not allow-listed"


@pytest.fixture(scope="module")
def linked_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("allow")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_text("x")
    root = base / "ws"
    for rel in (".git/hooks", "app", "src"):
        (root / rel).mkdir(parents=True)
    (root / ".env").write_text("S=1\n")
    (root / "docker-compose.yml").write_text("services: {}\n")
    os.symlink(base / "outside", root / "escape")
    os.symlink(base / "outside" / "secret", root / "escape_file")
    os.symlink("src", root / "inner")
    os.symlink(".git", root / "gitlink")
    os.symlink(".env", root / "envlink")
    os.symlink("docker-compose.yml", root / "composelink")
    os.symlink("loop", root / "loop")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _lands_safely(root: Path, rel: str) -> None:
    real_root = root.resolve()
    landed = (root / rel).resolve()
    assert landed == real_root or landed.is_relative_to(real_root)
    inner = landed.relative_to(real_root).as_posix()
    assert not _protected(inner or "x")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_PATHS, patterns=_PATTERNS)
def test_a_change_the_validator_accepts_lands_inside(
    linked_root: Path, path: str, patterns: list[str]
) -> None:
    """What the patch step checks after any source wrote: accepted means safe on disk."""
    if validate_changes(linked_root, [Change(path, "added")], patterns):
        return
    _lands_safely(linked_root, normalize_relpath(path))


def _diff_adding(path: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.lists(_SEGMENTS, min_size=1, max_size=5).map("/".join))
def test_paths_git_reports_for_an_operator_diff_are_refused_or_safe(
    linked_root: Path, path: str
) -> None:
    """The names come from ``git apply --numstat`` (what would really be written), then
    the patch step's pre-check runs on them with an allow-everything list."""
    if "\n" in path or "\x00" in path:
        return  # not representable in a diff header
    try:
        touched = patch_paths(linked_root, _diff_adding(path))
    except (PatchRefused, WorkspaceError):
        return  # git or the patch rules refused the diff itself
    for rel in touched:
        if validate_changes(linked_root, [Change(rel, "added")], ["**"]):
            continue
        _lands_safely(linked_root, normalize_relpath(rel))
