"""Rollback: put back the pre-image bytes and, if a new image was built, the previous one."""

from __future__ import annotations

from collections.abc import Callable

from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.steps import preimages
from moonmind.workflows.orchestrator.steps.context import (
    StepContext,
    StepFailed,
    StepResult,
    connect,
)


def split_ref(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a port in the registry part is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


def _restore_image(ctx: StepContext, image_ref: str, out: Callable[[str], None]) -> None:
    svc = ctx.service
    engine = connect()
    try:
        old_id = engine.image_id(image_ref)
        if old_id is None:
            raise StepFailed(f"rollback image {image_ref} is gone", rollback=False)
        repository, tag = split_ref(svc.image)
        engine.tag_image(old_id, repository, tag)
        out(f"re-pointed {svc.image} at {old_id[:19]} ({image_ref})")
        code = svc.compose().up_no_deps(svc.service, out)
        out(f"compose up exit code {code}")
        if code != 0:
            raise StepFailed(f"rollback could not recreate {svc.service} (exit {code})")
    finally:
        engine.close()


def rollback(ctx: StepContext) -> StepResult:
    with ctx.log(StepName.ROLLBACK, "rollback.log", type=ArtifactType.ROLLBACK_LOG) as out:
        restored = preimages.restore(ctx, out)
        built = ctx.result_of(StepName.BUILD)
        image_ref = built.get("rollback_image")
        swap = bool(
            image_ref and built.get("new_image") and built["new_image"] != built.get("old_image")
        )
        if swap:
            assert image_ref is not None
            _restore_image(ctx, image_ref, out)
    return StepResult(
        f"restored {len(restored)} file(s)" + ("; previous image back in service" if swap else ""),
        {"restored": restored, "image_restored": swap},
    )
