"""A diff that adds a secret is refused before anything is written; the value is never shown."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind.utils.redaction import Redactor
from moonmind.workflows.orchestrator import secret_guard
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import StepFailed
from moonmind.workflows.orchestrator.steps.patch import patch
from tests.support.steps import make_context

PLAIN = Redactor()
TOKEN = "ghp_" + "Qr5St6Uv7W" * 4


def _diff(added: list[str], context: str = "flask==3.0.3", removed: str = "") -> str:
    minus = [f"-{removed}"] if removed else []
    return (
        "\n".join(
            [
                "--- a/app/requirements.txt",
                "+++ b/app/requirements.txt",
                f"@@ -1,{1 + len(minus)} +1,{1 + len(added)} @@",
                f" {context}",
                *minus,
                *(f"+{line}" for line in added),
            ]
        )
        + "\n"
    )


def test_an_added_token_is_named_by_file_and_line_not_by_value() -> None:
    reason = secret_guard.refusal(_diff(["requests==2.32.3", f"# pushed by {TOKEN}"]), PLAIN)
    assert reason is not None
    assert "app/requirements.txt (line 3" in reason
    assert TOKEN not in reason
    assert "before anything was written" in reason


def test_an_added_private_key_is_found_at_its_first_line() -> None:
    key = ["-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU=", "x"]
    found = secret_guard.find_added_secret(_diff(["ok==1.0", *key]), PLAIN)
    assert found == secret_guard.AddedSecret("app/requirements.txt", 3)


def test_a_value_known_from_the_environment_counts() -> None:
    redactor = Redactor.from_environ({"REGISTRY_PASSWORD": "pw-from-the-env-9"})
    assert secret_guard.refusal(_diff(["pw-from-the-env-9"]), redactor) is not None


@pytest.mark.parametrize(
    "diff",
    [
        _diff(["requests==2.32.3", "PyYAML==6.0.1"]),
        _diff(["requests==2.32.3"], context=f"# {TOKEN}"),  # already there: not added
        _diff([], removed=f"# {TOKEN}"),  # taking a secret out is welcome
        _diff(["# see https://github.com/org/repo.git", "max_tokens=1024"]),
    ],
)
def test_diffs_that_add_no_secret_pass(diff: str) -> None:
    assert secret_guard.refusal(diff, PLAIN) is None


def _workspace(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM moonmind/python-base:bookworm\n")
    (root / "app" / "requirements.txt").write_text("flask==3.0.3\n")
    (root / "docker-compose.yaml").write_text("services: {app: {build: ./app}}\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_the_patch_step_refuses_before_writing(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws")
    before = (root / "app" / "requirements.txt").read_bytes()
    diff = _diff(["requests==2.32.3", f"# {TOKEN}"])
    ctx = make_context(root, requested_patch=diff, artifacts=tmp_path / "artifacts")
    with pytest.raises(StepFailed) as failed:
        patch(ctx)
    assert "adds what looks like a secret to app/requirements.txt" in failed.value.message
    assert TOKEN not in failed.value.message
    assert failed.value.rollback is False
    assert (root / "app" / "requirements.txt").read_bytes() == before
    run_dir = ctx.store.run_dir(ctx.run_id)
    assert not (run_dir / "pre-images").exists()  # refused before the pre-images, too
    assert not (run_dir / "patch.diff").exists()
    assert ctx.result_of(StepName.ANALYZE) == {}


def test_an_agents_edit_adding_a_secret_is_undone(tmp_path: Path) -> None:
    """An agent writes by itself: its diff is read after it ends and the workspace restored."""
    root = _workspace(tmp_path / "ws")
    before = (root / "app" / "requirements.txt").read_bytes()
    script = tmp_path / "agent.py"
    script.write_text(
        "import pathlib, sys\n"
        "path = pathlib.Path(sys.argv[1]) / 'app' / 'requirements.txt'\n"
        f"path.write_text(path.read_text() + 'requests\\n# {TOKEN}\\n')\n"
    )
    ctx = make_context(
        root,
        agent_template=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{workspace}}",
        parameters={StepName.PATCH: {"sources": ["agent"]}},
        artifacts=tmp_path / "artifacts",
    )
    with pytest.raises(StepFailed) as failed:
        patch(ctx)
    assert "adds what looks like a secret to app/requirements.txt" in failed.value.message
    assert TOKEN not in failed.value.message
    assert (root / "app" / "requirements.txt").read_bytes() == before
    assert not (ctx.store.run_dir(ctx.run_id) / "patch.diff").exists()
