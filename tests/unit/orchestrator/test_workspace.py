"""Workspace adapter tests against real files, real symlinks and a real git binary."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.adapters.workspace import (
    Change,
    Snapshot,
    WorkspaceError,
    apply_patch,
    changes,
    check_patch,
    patch_paths,
    remove_file,
    restore,
    unified_diff,
    validate_changes,
    write_file,
)

PATTERNS = ["services/api/requirements*.txt", "app/Dockerfile", "services/**/*.py", "docs/**"]


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "stack"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.name", "Test Operator")
    git(root, "config", "user.email", "operator@example.invalid")
    files = {
        "docker-compose.yml": "services:\n  api:\n    build: services/api\n",
        "services/api/requirements.txt": "fastapi==0.110\nuvicorn\n",
        "services/api/Dockerfile": "FROM python:3.11-slim\n",
        "services/api/app/main.py": "print('hi')\n",
        "app/Dockerfile": "FROM node:20\n",
        "notes.txt": "no trailing newline",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(root / "run.sh", 0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """Hash of every entry (type, mode, content or link target) outside .git."""
    result: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if full.is_symlink():
                result[rel] = "link:" + os.readlink(full)
            elif full.is_dir():
                result[rel] = "dir"
            else:
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                result[rel] = f"{oct(st.st_mode)}:{digest}"
    return result


# ----------------------------------------------------------------------------- snapshots


def test_snapshot_skips_git_and_records_modes(repo: Path) -> None:
    snap = Snapshot.take(repo)
    assert not any(p.startswith(".git") for p in snap.files)
    assert snap.get("run.sh").mode == 0o755
    assert snap.get("notes.txt").data == b"no trailing newline"
    assert "services/api/app" in snap.dirs
    assert not snap.get("missing").exists


def test_changes_add_modify_delete(repo: Path) -> None:
    before = Snapshot.take(repo)
    (repo / "services/api/requirements.txt").write_text("fastapi==0.110\nuvicorn\nPyYAML\n")
    (repo / "notes.txt").unlink()
    (repo / "services/api/requirements-dev.txt").write_text("pytest\n")
    assert changes(before, Snapshot.take(repo)) == [
        Change("notes.txt", "deleted"),
        Change("services/api/requirements-dev.txt", "added"),
        Change("services/api/requirements.txt", "modified"),
    ]


def test_changes_rename_mode_and_symlink(repo: Path) -> None:
    os.symlink("requirements.txt", repo / "services/api/req-link.txt")
    before = Snapshot.take(repo)
    (repo / "notes.txt").rename(repo / "notes.md")
    os.chmod(repo / "run.sh", 0o644)
    (repo / "services/api/req-link.txt").unlink()
    os.symlink("Dockerfile", repo / "services/api/req-link.txt")
    found = changes(before, Snapshot.take(repo))
    assert found == [
        Change("notes.md", "added"),
        Change("notes.txt", "deleted"),
        Change("run.sh", "modified"),
        Change("services/api/req-link.txt", "modified"),
    ]


def test_snapshot_does_not_follow_symlinked_directories(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    os.symlink(outside, repo / "docs")
    snap = Snapshot.take(repo)
    assert snap.get("docs").is_symlink
    assert not snap.get("docs/secret.txt").exists


# ----------------------------------------------------------------------------- validation


def test_validate_accepts_allowed_edit(repo: Path) -> None:
    before = Snapshot.take(repo)
    (repo / "services/api/requirements.txt").write_text("PyYAML\n")
    assert validate_changes(repo, changes(before, Snapshot.take(repo)), PATTERNS) == []


def test_validate_rejects_protected_and_unlisted(repo: Path) -> None:
    before = Snapshot.take(repo)
    (repo / "docker-compose.yml").write_text("services: {}\n")
    (repo / "services/api/.env").write_text("SECRET=1\n")
    (repo / "services/api/Dockerfile").write_text("FROM scratch\n")
    violations = validate_changes(repo, changes(before, Snapshot.take(repo)), PATTERNS)
    assert {v.path for v in violations} == {
        "docker-compose.yml",
        "services/api/.env",
        "services/api/Dockerfile",
    }


def test_validate_flags_symlink_to_etc_passwd(repo: Path) -> None:
    before = Snapshot.take(repo)
    os.symlink("/etc/passwd", repo / "services/api/requirements-evil.txt")
    violations = validate_changes(repo, changes(before, Snapshot.take(repo)), PATTERNS)
    assert [v.reason for v in violations] == ["symlink escapes workspace"]


def test_validate_flags_relative_symlink_escape_and_git(repo: Path) -> None:
    before = Snapshot.take(repo)
    os.symlink("../../../outside.txt", repo / "services/api/requirements-a.txt")
    os.symlink("../../.git/config", repo / "services/api/requirements-b.txt")
    os.symlink("../../docker-compose.yml", repo / "services/api/requirements-c.txt")
    violations = validate_changes(repo, changes(before, Snapshot.take(repo)), PATTERNS)
    reasons = {v.path: v.reason for v in violations}
    assert reasons == {
        "services/api/requirements-a.txt": "symlink escapes workspace",
        "services/api/requirements-b.txt": "symlink points into .git",
        "services/api/requirements-c.txt": "symlink points at a protected file",
    }


def test_validate_flags_symlinked_directory_escape(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    before = Snapshot.take(repo)
    os.symlink(outside, repo / "docs")
    (repo / "docs/guide.md").write_text("written through the link\n")
    found = changes(before, Snapshot.take(repo))
    assert found == [Change("docs", "added")]
    violations = validate_changes(repo, found, ["**"])
    assert [(v.path, v.reason) for v in violations] == [("docs", "symlink escapes workspace")]


def test_validate_flags_write_below_existing_directory_link(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / "docs")
    # e.g. a path reported by patch_paths before applying: its parent resolves outside.
    violations = validate_changes(repo, [Change("docs/guide.md", "added")], PATTERNS)
    assert [v.reason for v in violations] == ["parent directory escapes workspace"]


def test_validate_flags_directory_link_into_git(repo: Path) -> None:
    os.symlink(".git/hooks", repo / "docs")
    violations = validate_changes(repo, [Change("docs/pre-commit", "added")], PATTERNS)
    assert [v.reason for v in violations] == ["parent directory resolves into .git"]


# ----------------------------------------------------------------------------- restore


def test_restore_is_byte_identical_and_keeps_unrelated_dirt(repo: Path) -> None:
    (repo / "notes.txt").write_text("operator's uncommitted edit\n")
    (repo / "scratch").mkdir()
    (repo / "scratch/untracked.bin").write_bytes(b"\x00\x01")
    os.symlink("notes.txt", repo / "services/api/requirements-link.txt")
    expected = tree_hashes(repo)
    before = Snapshot.take(repo)

    (repo / "services/api/requirements.txt").write_bytes(b"changed\r\n")
    os.chmod(repo / "run.sh", 0o600)
    (repo / "app/Dockerfile").unlink()
    (repo / "new/deep/dir").mkdir(parents=True)
    (repo / "new/deep/dir/file.txt").write_text("added\n")
    (repo / "services/api/requirements-link.txt").unlink()
    os.symlink("/etc/passwd", repo / "services/api/requirements-link.txt")
    shutil.rmtree(repo / "services/api/app")
    (repo / "services/api/app").write_text("now a file\n")

    found = changes(before, Snapshot.take(repo))
    assert before.get("new/deep/dir/file.txt").exists is False
    assert before.get("app/Dockerfile").data == b"FROM node:20\n"
    assert before.get("services/api/requirements-link.txt").link_target == "notes.txt"

    restore(repo, before, found)
    assert tree_hashes(repo) == expected
    assert not (repo / "new").exists()
    assert changes(before, Snapshot.take(repo)) == []


def test_restore_undoes_directory_replaced_by_symlink(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    expected = tree_hashes(repo)
    before = Snapshot.take(repo)
    shutil.rmtree(repo / "services/api/app")
    os.symlink(outside, repo / "services/api/app")
    restore(repo, before, changes(before, Snapshot.take(repo)))
    assert tree_hashes(repo) == expected
    assert list(outside.iterdir()) == []


# ----------------------------------------------------------------------------- write_file


def test_write_file_is_atomic_and_keeps_mode(repo: Path) -> None:
    write_file(repo, "run.sh", b"#!/bin/sh\necho new\n")
    assert (repo / "run.sh").read_bytes() == b"#!/bin/sh\necho new\n"
    assert (repo / "run.sh").stat().st_mode & 0o777 == 0o755
    write_file(repo, "services/api/extra/new.txt", b"x")
    assert (repo / "services/api/extra/new.txt").read_bytes() == b"x"
    leftovers = [p for p in (repo / "services/api/extra").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_file_refuses_escapes_and_symlinks(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError):
        write_file(repo, "../escape.txt", b"x")
    os.symlink(tmp_path, repo / "docs")
    with pytest.raises(WorkspaceError):
        write_file(repo, "docs/x.txt", b"x")
    os.symlink("notes.txt", repo / "link.txt")
    with pytest.raises(WorkspaceError):
        write_file(repo, "link.txt", b"x")
    with pytest.raises(WorkspaceError, match=".git"):
        write_file(repo, ".git/hooks/pre-commit", b"#!/bin/sh\n")
    assert not (repo / ".git/hooks/pre-commit").exists()
    assert (repo / "notes.txt").read_text() == "no trailing newline"


def test_restore_puts_back_a_protected_file_the_agent_changed(repo: Path) -> None:
    expected = tree_hashes(repo)
    before = Snapshot.take(repo)
    (repo / "docker-compose.yml").write_text("services: {}\n")
    (repo / ".env").write_text("SECRET=1\n")
    restore(repo, before, changes(before, Snapshot.take(repo)))
    assert tree_hashes(repo) == expected


def test_write_file_refuses_never_patchable_names(repo: Path) -> None:
    for rel in (".env", "docs/.ENV.local", "Docker-Compose.yml", ".GIT/config"):
        with pytest.raises(WorkspaceError, match="refusing"):
            write_file(repo, rel, b"x")
    assert not (repo / ".env").exists()


# ----------------------------------------------------------------------------- remove_file


def test_remove_file_removes_files_and_links_without_following(repo: Path) -> None:
    os.symlink("notes.txt", repo / "link.txt")
    remove_file(repo, "link.txt")
    assert not os.path.lexists(repo / "link.txt")
    assert (repo / "notes.txt").read_text() == "no trailing newline"
    remove_file(repo, "./services/api/requirements.txt")
    assert not (repo / "services/api/requirements.txt").exists()
    remove_file(repo, "services/api/requirements.txt")  # already gone: no-op


def test_remove_file_refuses_directories_escapes_and_protected(repo: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, repo / "evil.txt")
    os.symlink(tmp_path, repo / "docs")
    for rel in ("services/api", "evil.txt", "docs/victim.txt", "docker-compose.yml", "../x"):
        with pytest.raises(WorkspaceError):
            remove_file(repo, rel)
    assert victim.read_text() == "keep me"
    assert (repo / "docker-compose.yml").exists()
    assert (repo / "services/api/Dockerfile").exists()


# ----------------------------------------------------------------------------- patches

GOOD_PATCH = """\
diff --git a/services/api/requirements.txt b/services/api/requirements.txt
--- a/services/api/requirements.txt
+++ b/services/api/requirements.txt
@@ -1,2 +1,3 @@
 fastapi==0.110
 uvicorn
+PyYAML
"""

STALE_PATCH = """\
diff --git a/services/api/requirements.txt b/services/api/requirements.txt
--- a/services/api/requirements.txt
+++ b/services/api/requirements.txt
@@ -1,2 +1,2 @@
 flask==2.0
-gunicorn
+gunicorn==21
"""


def test_apply_patch_good(repo: Path) -> None:
    assert patch_paths(repo, GOOD_PATCH) == ["services/api/requirements.txt"]
    apply_patch(repo, GOOD_PATCH)
    assert (repo / "services/api/requirements.txt").read_text() == (
        "fastapi==0.110\nuvicorn\nPyYAML\n"
    )


def test_check_patch_failure_reports_git_message(repo: Path) -> None:
    before = tree_hashes(repo)
    with pytest.raises(WorkspaceError, match="patch does not apply"):
        check_patch(repo, STALE_PATCH)
    with pytest.raises(WorkspaceError):
        apply_patch(repo, STALE_PATCH)
    with pytest.raises(WorkspaceError):
        check_patch(repo, "   \n")
    assert tree_hashes(repo) == before


def test_patch_paths_lists_both_sides_of_a_rename(repo: Path) -> None:
    patch = (
        "diff --git a/notes.txt b/docs/notes.txt\n"
        "similarity index 100%\n"
        "rename from notes.txt\n"
        "rename to docs/notes.txt\n"
    )
    assert patch_paths(repo, patch) == ["notes.txt", "docs/notes.txt"]


def test_unified_diff_round_trips_through_git_apply(repo: Path, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(repo, pristine, symlinks=True)
    before = Snapshot.take(repo)

    (repo / "services/api/requirements.txt").write_text("fastapi==0.111\nuvicorn\nPyYAML")
    (repo / "notes.txt").write_text("no trailing newline\nnow there is one\n")
    os.chmod(repo / "run.sh", 0o644)
    (repo / "app/Dockerfile").unlink()
    (repo / "services/api/new dir").mkdir()
    (repo / "services/api/new dir/requirements extra.txt").write_text("a\nb\n")
    (repo / "services/api/empty.txt").write_bytes(b"")
    (repo / "services/api/odd.txt").write_bytes(b"form\x0cfeed\r\ncr\ronly\n\x1cgs")
    os.symlink("requirements.txt", repo / "services/api/req-link")

    diff = unified_diff(repo, before, changes(before, Snapshot.take(repo)))
    assert "diff --git a/app/Dockerfile b/app/Dockerfile\ndeleted file mode 100644\n" in diff
    assert "old mode 100755\nnew mode 100644\n" in diff
    assert "\\ No newline at end of file\n" in diff
    assert "+++ b/services/api/new dir/requirements extra.txt\n" in diff

    check_patch(pristine, diff)
    apply_patch(pristine, diff)
    # git apply also prunes the emptied app/ directory; compare files, modes and links.
    assert changes(Snapshot.take(repo), Snapshot.take(pristine)) == []


def test_unified_diff_of_no_changes_is_empty(repo: Path) -> None:
    before = Snapshot.take(repo)
    assert unified_diff(repo, before, changes(before, Snapshot.take(repo))) == ""
