"""What a step writes to its artifacts: redacted, and recorded even when storage fails."""

from __future__ import annotations

from pathlib import Path

from moonmind.utils.redaction import Redactor
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.steps import StepContext
from tests.support.steps import make_context

SECRET = "s3cr3t-registry-password"


def _context(root: Path) -> StepContext:
    return make_context(root, redactor=Redactor.from_environ({"REGISTRY_PASSWORD": SECRET}))


def test_streamed_log_lines_are_redacted_on_disk_and_for_listeners(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    heard: list[str] = []
    ctx.on_line = lambda step, line: heard.append(line)
    with ctx.log(StepName.BUILD, "build.log", type=ArtifactType.BUILD_LOG) as out:
        out(f"Step 3/5 : RUN login --password {SECRET}")
        out("Step 4/5 : COPY . .")
    text = (ctx.store.run_dir(ctx.run_id) / "build.log").read_text()
    assert SECRET not in text
    assert "--password ***" in text
    assert "Step 4/5 : COPY . ." in text
    assert all(SECRET not in line for line in heard)
    assert ctx.produced[0].stored.path == "build.log"


def test_storage_failure_is_noted_not_raised(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (tmp_path / "artifacts").write_text("a file where the artifact root should be")
    assert ctx.save("analysis.json", b"{}", type=ArtifactType.ANALYSIS, kind="analysis") is None
    with ctx.log(StepName.VERIFY, "verify.log", type=ArtifactType.VERIFY_LOG) as out:
        out("probe #1 ok")
    assert ctx.missing == ["analysis.json", "verify.log"]
    assert ctx.produced == []
