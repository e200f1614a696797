"""Build: tag the service's current image for rollback, then build the service: with
`compose build`, or with the `docker build` docker-compose v1 itself would run (the plan's
``docker_argv``, adapters/native_build.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from moonmind.workflows.orchestrator.adapters.native_build import native_build_enabled
from moonmind.workflows.orchestrator.adapters.snapshot import FileState
from moonmind.workflows.orchestrator.diagnosis.build_log import build_failed
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import BuildParameters
from moonmind.workflows.orchestrator.steps.context import (
    StepContext,
    StepFailed,
    StepResult,
    connect,
)
from moonmind.workflows.orchestrator.steps.pins import pin_installed, pinned_sha256

ROLLBACK_REPOSITORY = "moonmind-rollback"


def rollback_tag(run_id: uuid.UUID) -> str:
    """The tag under which a run keeps the image its build replaces."""
    return run_id.hex[:12]


def _keeping(out: Callable[[str], None], kept: list[str]) -> Callable[[str], None]:
    """A line sink that also keeps the lines, to diagnose a failed build."""

    def write(line: str) -> None:
        kept.append(line)
        out(line)

    return write


def _check_patched_files(ctx: StepContext) -> None:
    """What is built must be what was patched (and, on a protected service, approved)."""
    drifted = [
        entry["path"]
        for entry in ctx.result_of(StepName.PATCH).get("files", [])
        if "sha256" in entry
        and FileState.read(ctx.workspace / entry["path"]).sha256
        not in (entry["sha256"], pinned_sha256(ctx, entry["path"]))
    ]
    if drifted:
        raise StepFailed(
            f"files changed after the patch{' was approved' if ctx.approved_diff else ''}, "
            f"nothing was built: {', '.join(drifted)}"
        )


def build(ctx: StepContext) -> StepResult:
    svc = ctx.service
    params = ctx.params(BuildParameters)
    _check_patched_files(ctx)
    engine = connect()
    try:
        repository = f"{ROLLBACK_REPOSITORY}/{svc.project}-{svc.service}"
        tag = rollback_tag(ctx.run_id)
        # A redelivered build must not re-tag its own new image as "the previous one".
        old_image = engine.image_id(f"{repository}:{tag}")
        if old_image is None:
            old_image = engine.image_id(params.image)
            if old_image:
                engine.tag_image(old_image, repository, tag)
        rollback_ref = f"{repository}:{tag}" if old_image else None
        kept: list[str] = []
        argv = params.docker_argv if params.docker_argv and native_build_enabled() else params.argv
        with ctx.log(StepName.BUILD, "build.log", type=ArtifactType.BUILD_LOG) as out:
            out(f"$ {' '.join(argv)}")
            if argv is params.docker_argv:
                out(f"(what {' '.join(params.argv)} runs, without its start-up)")
            code = svc.compose().run_argv(argv, _keeping(out, kept), timeout_s=ctx.build_timeout_s)
            out(f"exit code {code}")
        new_image = engine.image_id(params.image)
    finally:
        engine.close()
    result: dict[str, Any] = {
        "old_image": old_image,
        "new_image": new_image,
        "rollback_image": rollback_ref,
    }
    if code != 0:
        failed = build_failed("\n".join(kept))
        why = f": {failed.kind} ({failed.subject}): {failed.remediation}" if failed else ""
        result["diagnosis"] = [asdict(failed)] if failed else []
        raise StepFailed(
            f"build of {svc.service} failed (exit {code}){why}; see build.log", result=result
        )
    # dependencies added without a version
    pins, said = pin_installed(ctx, new_image, "\n".join(kept))
    return StepResult(f"built {params.image} ({(new_image or '?')[:19]}){said}", result | pins)
