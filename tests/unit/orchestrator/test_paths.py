"""The path rules: every entry point refuses never-patchable paths, on a real filesystem."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moonmind.workflows.orchestrator.adapters.workspace import (
    Change,
    WorkspaceError,
    is_allowed,
    remove_file,
    validate_changes,
    write_file,
)
from moonmind.workflows.orchestrator.paths import (
    UnsafePathError,
    checked_target,
    deny_reason,
    join_relpath,
    never_patchable_reason,
    normalize_relpath,
)
from moonmind.workflows.orchestrator.service_profiles import load_profiles

LEXICALLY_REFUSED = [
    ".git/config",
    ".GIT/config",
    ".git/hooks/pre-commit",
    "docker-compose.yaml",
    "compose.yml",
    ".env",
    ".env.local",
    "../x",
    "/etc/passwd",
    "a/../../x",
]
# Symlinks inside the workspace that point outside it: a directory and a file.
THROUGH_SYMLINK = ["escape/secret.txt", "escape_file"]
NEVER_PATCHABLE = LEXICALLY_REFUSED + THROUGH_SYMLINK


def _tree(base: Path) -> dict[str, str]:
    """Type and content of every entry under base, links not followed."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(base).as_posix()
            if full.is_symlink():
                out[rel] = "link:" + os.readlink(full)
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside, keep me\n")
    files = {
        ".git/config": "[core]\n",
        ".git/hooks/pre-commit": "#!/bin/sh\n",
        "docker-compose.yaml": "services: {}\n",
        "compose.yml": "services: {}\n",
        ".env": "SECRET=1\n",
        ".env.local": "SECRET=2\n",
        "a/Dockerfile": "FROM python:3.11-slim\n",
        "a/requirements.txt": "fastapi\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret.txt", root / "escape_file")
    return root


def _compose_config(root: Path) -> dict[str, Any]:
    return {"services": {"web": {"build": {"context": str(root / "a")}}}}


@pytest.mark.parametrize("relpath", NEVER_PATCHABLE)
def test_every_entry_point_refuses(workspace: Path, relpath: str) -> None:
    before = _tree(workspace.parent)
    with pytest.raises(WorkspaceError, match="refusing"):
        write_file(workspace, relpath, b"pwned\n")
    with pytest.raises(WorkspaceError, match="refusing"):
        remove_file(workspace, relpath)
    assert validate_changes(workspace, [Change(relpath, "modified")], ["**"])
    if relpath in LEXICALLY_REFUSED:
        assert not is_allowed(relpath, ["**", relpath])
    with pytest.raises(ValueError, match="allow pattern"):
        load_profiles(
            _compose_config(workspace),
            workspace=workspace,
            overrides={"web": {"allow": [relpath]}},
        )
    assert _tree(workspace.parent) == before
    assert (workspace.parent / "outside/secret.txt").read_text() == "outside, keep me\n"


def test_allowed_paths_still_work(workspace: Path) -> None:
    write_file(workspace, "a/requirements.txt", b"fastapi\nPyYAML\n")
    assert is_allowed("a/requirements.txt", ["a/requirements*.txt"])
    profiles = load_profiles(
        _compose_config(workspace),
        workspace=workspace,
        overrides={"web": {"allow": ["a/requirements.txt", "a/**/*.py"]}},
    )
    assert profiles["web"].allow == ("a/requirements.txt", "a/**/*.py")
    remove_file(workspace, "a/requirements.txt")
    assert not (workspace / "a/requirements.txt").exists()


@pytest.mark.parametrize(
    ("relpath", "reason"),
    [
        (".Git/HEAD", "path is inside .git"),
        ("sub/.GIT/config", "path is inside .git"),
        ("Docker-Compose.YML", "compose files are never edited"),
        ("deploy/COMPOSE.prod.yaml", "compose files are never edited"),
        (".ENV", ".env files are never edited"),
        ("conf/.Env.production", ".env files are never edited"),
        ("", "path is empty"),
        ("./", "path is empty"),
        ("a\x00b", "path contains a NUL byte"),
        ("a\\..\\x", "path contains a backslash"),
        ("C:/x", "path is absolute"),
        ("./c:x", "path is absolute"),
        ("a/b/../../../x", "path escapes the workspace (..)"),
    ],
)
def test_never_patchable_reason_is_case_insensitive(relpath: str, reason: str) -> None:
    assert never_patchable_reason(relpath) == reason


def test_named_compose_file_is_never_patchable() -> None:
    assert never_patchable_reason("deploy/stack.yml") is None
    assert never_patchable_reason("Deploy/Stack.YML", ["deploy/stack.yml"]) is not None
    assert never_patchable_reason("deploy/stack.yml", ["../outside.yml"]) is None


def test_normalize_and_join() -> None:
    assert normalize_relpath("./a//b/") == "a/b"
    assert join_relpath("a/b", "../c") == "a/c"
    assert join_relpath(".") == ""
    assert join_relpath("a", "../../x") is None
    assert join_relpath("a", "/etc/passwd") is None


def test_checked_target_refuses_links_into_git_and_protected(workspace: Path) -> None:
    os.symlink(".git", workspace / "gitlink")
    os.symlink(".env", workspace / "envlink")
    os.symlink("a", workspace / "inner")
    with pytest.raises(UnsafePathError, match=r"\.git"):
        checked_target(workspace, "gitlink/config")
    with pytest.raises(UnsafePathError, match="protected"):
        checked_target(workspace, "envlink")
    assert checked_target(workspace, "inner/requirements.txt") == (
        workspace / "inner/requirements.txt"
    )


def test_symlink_loop_is_refused_not_crashed(workspace: Path) -> None:
    os.symlink("loop", workspace / "loop")
    with pytest.raises(UnsafePathError, match="loop"):
        checked_target(workspace, "loop")
    with pytest.raises(UnsafePathError, match="loop"):
        checked_target(workspace, "loop/x")


# ----------------------------------------------------------------------------- allow-list

PATTERNS = ["services/api/requirements*.txt", "app/Dockerfile", "services/**/*.py", "docs/**"]


@pytest.mark.parametrize(
    "path",
    [
        "services/api/requirements.txt",
        "services/api/requirements-dev.txt",
        "./services/api/requirements.txt",
        "app/Dockerfile",
        "services/api/main.py",
        "services/api/app/deep/mod.py",
        "docs/a/b/c.md",
    ],
)
def test_allowed_paths(path: str) -> None:
    assert is_allowed(path, PATTERNS)


@pytest.mark.parametrize(
    ("path", "reason_part"),
    [
        (".git/config", ".git"),
        (".GIT/config", ".git"),
        ("services/.git/hooks/pre-commit", ".git"),
        ("Docker-Compose.YML", "compose"),
        (".ENV", ".env"),
        ("docker-compose.yml", "compose"),
        ("docs/docker-compose.override.yaml", "compose"),
        ("docs/compose.prod.yml", "compose"),
        (".env", ".env"),
        ("docs/.env.local", ".env"),
        ("../outside/requirements.txt", "escapes"),
        ("services/api/../../../etc/passwd", "escapes"),
        ("/etc/passwd", "absolute"),
        ("", "empty"),
        ("services/api/other.txt", "not allow-listed"),
        ("app/Dockerfile.bak", "not allow-listed"),
    ],
)
def test_denied_paths(path: str, reason_part: str) -> None:
    reason = deny_reason(path, [*PATTERNS, "**"])
    if reason_part == "not allow-listed":
        reason = deny_reason(path, PATTERNS)
    assert reason is not None
    assert reason_part in reason
    assert not is_allowed(path, PATTERNS)


def test_double_star_matches_zero_directories() -> None:
    assert is_allowed("services/x.py", ["services/**/*.py"])
    assert not is_allowed("other/x.py", ["services/**/*.py"])
    assert not is_allowed("services/api/requirements.txt", ["services/*/*.py"])


# ----------------------------------------------------------------------------- properties

_COMPONENTS = st.sampled_from(
    [
        *[".git", ".GIT", ".Git", "git", ".gitignore", ".env", ".ENV.local", ".envrc"],
        *["docker-compose.yml", "Compose.YAML", "compose.override.yml", "compose"],
        *["..", ".", "", "a", "src", "x.txt", "\\", "\x00", "C:", "~", " "],
        *["escape", "escape_file", "inner", "gitlink", "envlink", "loop"],
    ]
)
_PATHS = st.one_of(
    st.text(max_size=12),
    st.tuples(st.sampled_from(["", "/", "./"]), st.lists(_COMPONENTS, max_size=6)).map(
        lambda t: t[0] + "/".join(t[1])
    ),
)


def _is_protected(rel: str) -> bool:
    """Independent statement of the never-patchable names, for the property below."""
    parts = rel.casefold().split("/")
    base = parts[-1]
    compose = re.fullmatch(r"(?:docker-)?compose.*\.y.*ml", base, flags=re.DOTALL)
    return ".git" in parts or base.startswith(".env") or compose is not None


@pytest.fixture(scope="module")
def linked_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("prop")
    (base / "outside").mkdir()
    (base / "outside/secret").write_text("x")
    root = base / "ws"
    for rel in (".git", "a", "src"):
        (root / rel).mkdir(parents=True)
    (root / ".env").write_text("S=1\n")
    os.symlink(base / "outside", root / "escape")
    os.symlink(base / "outside/secret", root / "escape_file")
    os.symlink("src", root / "inner")
    os.symlink(".git", root / "gitlink")
    os.symlink(".env", root / "envlink")
    os.symlink("loop", root / "loop")
    return root


@settings(max_examples=400, deadline=None)
@given(path=_PATHS)
def test_normalized_paths_never_escape_and_are_lexically_clean(path: str) -> None:
    try:
        rel = normalize_relpath(path)
    except UnsafePathError:
        return
    assert rel
    assert not rel.startswith("/")
    assert "\x00" not in rel
    assert normalize_relpath(rel) == rel
    assert ".." not in rel.split("/")
    joined = posixpath.normpath(posixpath.join("/root", rel))
    assert joined.startswith("/root/")
    assert (never_patchable_reason(rel) is None) == (not _is_protected(rel))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_PATHS)
def test_accepted_targets_stay_inside_and_are_never_protected(linked_root: Path, path: str) -> None:
    try:
        full = checked_target(linked_root, path)
    except UnsafePathError:
        return
    real_root = linked_root.resolve()
    rel = full.relative_to(linked_root).as_posix()
    assert not _is_protected(rel)
    landed = full.resolve()
    assert landed == real_root or landed.is_relative_to(real_root)
    assert not _is_protected(landed.relative_to(real_root).as_posix() or "x")
