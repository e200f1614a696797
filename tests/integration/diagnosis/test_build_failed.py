"""build_failed from a real `docker build`: the build step names the failing Dockerfile step.

A FROM scratch busybox image built by the real build step (compose v1, legacy builder) on
a throw-away stack whose Dockerfile really fails: a RUN that exits 1, or a COPY of a file
the context does not have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepFailed
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker

RUN_FALSE = 'RUN ["/bin/busybox", "false"]'
COPY_MISSING = "COPY ledger.conf /etc/ledger/ledger.conf"

# Dockerfile -> (the failing step as the build log numbers it, what the remediation says)
CASES: dict[str, tuple[str, str, str]] = {
    "run_exits_1": (
        f"FROM scratch\nCOPY busybox /bin/busybox\n{RUN_FALSE}\n",
        f"step 3/3: {RUN_FALSE}",
        "(exit 1)",
    ),
    "copy_missing_file": (
        f"FROM scratch\n{COPY_MISSING}\nCOPY busybox /bin/busybox\n",
        f"step 2/3: {COPY_MISSING}",
        "failed: fix",
    ),
}


def _stack(root: Path, dockerfile: str) -> None:
    (root / "app").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "app" / "busybox")
    (root / "app" / "Dockerfile").write_text(dockerfile)
    (root / "docker-compose.yaml").write_text(
        'version: "3"\nservices:\n  app:\n    build: app\n    command: ["/bin/busybox", "true"]\n'
    )


@pytest.mark.parametrize("case", list(CASES))
def test_build_step_names_the_failing_dockerfile_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    dockerfile, subject, says = CASES[case]
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")  # the legacy builder, as in CI
    root = tmp_path / "workspace"
    _stack(root, dockerfile)
    project = f"mmbuild{uuid.uuid4().hex[:8]}"
    ctx = make_context(
        root,
        service=service_context(root, project=project),
        artifacts=tmp_path / "artifacts",
    )
    log = ctx.store.run_dir(ctx.run_id) / "build.log"
    try:
        with pytest.raises(StepFailed) as failed:
            STEP_FUNCTIONS[StepName.BUILD](ctx)
    finally:
        # The legacy builder keeps the container of a failed RUN: it is ours to remove.
        text = log.read_text() if log.exists() else ""
        for container in re.findall(r"---> Running in ([0-9a-f]{12})", text):
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    message = failed.value.message
    assert "build_failed" in message, f"{message}\n{text}"
    assert subject in message
    assert says in message
    diagnosis = failed.value.result["diagnosis"]
    assert [d["kind"] for d in diagnosis] == ["build_failed"]
    assert diagnosis[0]["subject"] == subject
    assert diagnosis[0]["evidence"]  # the builder's own failure line
    assert failed.value.result["new_image"] is None  # nothing was tagged
    assert "Step " in text  # really built by the legacy builder, step by step
