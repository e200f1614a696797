"""Rollback: put back the pre-image bytes and, if a new image was built, the previous one;
then show the service is as healthy as it was before the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moonmind.workflows.orchestrator.adapters.docker_engine import Engine
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import VerifyParameters
from moonmind.workflows.orchestrator.steps import preimages
from moonmind.workflows.orchestrator.steps.context import (
    EngineUnreachable,
    StepContext,
    StepFailed,
    StepResult,
    connect,
)
from moonmind.workflows.orchestrator.steps.restart import stamped
from moonmind.workflows.orchestrator.steps.verify import service_checks

UNVERIFIED = "rollback_unverified"


def split_ref(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a port in the registry part is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


def _restore_image(
    ctx: StepContext, engine: Engine, image_ref: str, out: Callable[[str], None]
) -> None:
    svc = ctx.service
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


def _verify_restored(
    ctx: StepContext, engine: Engine, out: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    """Run verify's container and HTTP checks again when the service was healthy before.

    A service that was broken before the run is only shown to be as it was: the image
    its container runs and the checksums of the files written back."""
    svc = ctx.service
    healthy_before = ctx.result_of(StepName.ANALYZE).get("analysis", {}).get("healthy_before")
    if healthy_before:
        out(f"{svc.service} was healthy before the run: checking it is healthy again")
        ok, reason, _ = service_checks(ctx, engine, ctx.params(VerifyParameters), out)
        if not ok:
            raise StepFailed(
                f"{UNVERIFIED}: {svc.service} was healthy before the run but not after "
                f"the rollback: {reason}; see rollback.log",
                rollback=False,
                result={"verified": False, "reason": reason},
            )
        return f"health check passed: {reason}", {"verified": True, "reason": reason}
    info = engine.container_for(svc.project, svc.service)
    image = info.image_id if info is not None else None
    files = {path: meta["sha256"] for path, meta in sorted(preimages.manifest(ctx).items())}
    listed = ", ".join(f"{path} sha256:{sha}" for path, sha in files.items()) or "no files"
    proof = f"image {image or '(no container)'}; {listed}"
    out(f"restored to its previous (unhealthy) state: {proof}")
    return (
        f"restored to its previous (unhealthy) state: {proof}",
        {"verified": None, "image_id": image, "files_sha256": files},
    )


def rollback(ctx: StepContext) -> StepResult:
    with ctx.log(StepName.ROLLBACK, "rollback.log", type=ArtifactType.ROLLBACK_LOG) as log:
        out = stamped(log)
        restored = preimages.restore(ctx, out)
        built = ctx.result_of(StepName.BUILD)
        image_ref = built.get("rollback_image")
        swap = bool(
            image_ref and built.get("new_image") and built["new_image"] != built.get("old_image")
        )
        try:
            engine = connect()  # one client for the image swap and the check after it
            try:
                if swap:
                    assert image_ref is not None
                    _restore_image(ctx, engine, image_ref, out)
                state, verification = _verify_restored(ctx, engine, out)
            finally:
                engine.close()
        except EngineUnreachable as exc:
            # The files are back; the image and the check need the engine.
            out(f"files restored; the image part is pending: {exc.message}")
            raise StepFailed(
                f"restored {len(restored)} file(s); the image part is pending "
                f"({'previous image not put back, ' if swap else ''}service not checked): "
                f"{exc.message}",
                rollback=False,
                result={"restored": restored, "image_restored": False, "image_pending": True},
            ) from None
    done = f"restored {len(restored)} file(s)" + (
        "; previous image back in service" if swap else ""
    )
    return StepResult(
        f"{done}; {state}",
        {"restored": restored, "image_restored": swap, **verification},
    )
