"""The steps of a run. Each takes a StepContext, calls adapters, and returns a StepResult.

Steps hold no database code: tasks.py records what they return. A step that cannot
continue raises StepFailed; anything it produced before failing is still recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moonmind.utils.redaction import Redactor, default_redactor
from moonmind.workflows.orchestrator.action_plan import ServiceContext
from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.adapters.agent import build_agent_argv, run_agent
from moonmind.workflows.orchestrator.adapters.docker_engine import (
    ContainerInfo,
    Engine,
    EngineUnavailable,
)
from moonmind.workflows.orchestrator.adapters.probe import (
    Attempt,
    probe_http,
    wait_container_stable,
)
from moonmind.workflows.orchestrator.diagnosis import (
    Signature,
    derive_rule_edits,
    detect_signatures,
)
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.storage import (
    ArtifactStorageError,
    ArtifactStore,
    StoredArtifact,
)

ROLLBACK_REPOSITORY = "moonmind-rollback"
ANALYZE_PROBE_DEADLINE_S = 3.0
CONTAINER_STABLE_S = 3.0


class StepFailed(Exception):
    """A step could not finish. ``rollback`` says whether earlier effects must be undone."""

    def __init__(
        self,
        message: str,
        *,
        infrastructure: bool = False,
        rollback: bool = True,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.infrastructure = infrastructure
        self.rollback = rollback
        self.result = result or {}


@dataclass(frozen=True)
class ProducedArtifact:
    stored: StoredArtifact
    type: ArtifactType
    kind: str
    content_type: str


@dataclass
class StepContext:
    run_id: uuid.UUID
    instruction: str
    service: ServiceContext
    store: ArtifactStore
    previous: dict[str, dict[str, Any]]  # step name -> its recorded result
    requested_patch: str | None = None
    agent_template: str = ""
    agent_timeout_s: float = 600.0
    on_line: Callable[[str, str], None] = lambda step, line: None
    produced: list[ProducedArtifact] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # Everything that came from a process (logs, agent output) passes through this first.
    redactor: Redactor = field(default_factory=default_redactor)

    @property
    def workspace(self) -> Path:
        return Path(self.service.workspace)

    def save(
        self,
        relpath: str,
        data: bytes,
        *,
        type: ArtifactType,
        kind: str,
        content_type: str = "text/plain",
    ) -> StoredArtifact | None:
        """Write an artifact; when storage is down, note it and let the run go on."""
        try:
            stored = self.store.write(self.run_id, relpath, data)
        except ArtifactStorageError:
            self.missing.append(relpath)
            return None
        self.produced.append(ProducedArtifact(stored, type, kind, content_type))
        return stored

    @contextmanager
    def log(
        self, step: StepName, relpath: str, *, type: ArtifactType, kind: str
    ) -> Iterator[Callable[[str], None]]:
        """A log file that grows as lines arrive; each line is also announced to listeners."""
        try:
            stream = self.store.stream(self.run_id, relpath)
        except ArtifactStorageError:
            self.missing.append(relpath)
            stream = None

        def write(line: str) -> None:
            line = self.redactor.redact(line)
            if stream is not None:
                try:
                    stream.line(line)
                except OSError:
                    pass
            self.on_line(step.value, line)

        try:
            yield write
        finally:
            if stream is not None:
                try:
                    self.produced.append(ProducedArtifact(stream.close(), type, kind, "text/plain"))
                except OSError:
                    self.missing.append(relpath)


@dataclass
class StepResult:
    message: str
    result: dict[str, Any] = field(default_factory=dict)


def _connect() -> Engine:
    try:
        return Engine.connect()
    except EngineUnavailable as exc:
        raise StepFailed(
            f"infrastructure: Docker engine unreachable: {exc}", infrastructure=True, rollback=False
        ) from None


def _describe(info: ContainerInfo | None) -> dict[str, Any] | None:
    return asdict(info) if info is not None else None


# ---------------------------------------------------------------------------- analyze


def analyze(ctx: StepContext) -> StepResult:
    svc = ctx.service
    engine = _connect()
    try:
        info = engine.container_for(svc.project, svc.profile.name)
        logs = ctx.redactor.redact(engine.logs(info.id, tail=300)) if info is not None else ""
    finally:
        engine.close()
    signatures = detect_signatures(logs)
    probe: dict[str, Any] | None = None
    if svc.profile.health_url:
        outcome = probe_http(
            svc.profile.health_url,
            expected_status=svc.profile.health_expected_status,
            deadline_s=ANALYZE_PROBE_DEADLINE_S,
        )
        last = outcome.attempts[-1] if outcome.attempts else None
        probe = {
            "url": svc.profile.health_url,
            "ok": outcome.ok,
            "status_code": last.status_code if last else None,
            "error": last.error if last else None,
        }
    analysis = {
        "service": svc.profile.name,
        "instruction": ctx.instruction,
        "container": _describe(info),
        "health_probe": probe,
        "signatures": [asdict(sig) for sig in signatures],
        "log_lines": len(logs.splitlines()),
    }
    ctx.save(
        "analysis.json",
        json.dumps(analysis, indent=2).encode(),
        type=ArtifactType.PLAN_SNAPSHOT,
        kind="analysis",
        content_type="application/json",
    )
    ctx.save("analyze.log", logs.encode(), type=ArtifactType.VERIFY_LOG, kind="analyze_log")
    state = "no container" if info is None else f"container {info.status} (exit {info.exit_code})"
    found = ", ".join(f"{s.kind} {s.subject}" for s in signatures) or "no known failure signature"
    return StepResult(f"{state}; {found}", {"analysis": analysis})


# ------------------------------------------------------------------------------ patch


def _signatures(ctx: StepContext) -> list[Signature]:
    analysis = ctx.previous.get(StepName.ANALYZE.value, {}).get("analysis", {})
    return [Signature(**sig) for sig in analysis.get("signatures", [])]


def _save_preimages(ctx: StepContext, before: ws.Snapshot, paths: list[str]) -> None:
    manifest = {}
    for path in paths:
        state = before.get(path)
        manifest[path] = {"existed": state.exists, "mode": state.mode, "sha256": state.sha256}
        if state.exists and state.data is not None:
            ctx.save(
                f"pre-images/{path}", state.data, type=ArtifactType.PATCH_DIFF, kind="pre_image"
            )
    ctx.save(
        "pre-images/manifest.json",
        json.dumps(manifest, indent=2).encode(),
        type=ArtifactType.PATCH_DIFF,
        kind="pre_image_manifest",
        content_type="application/json",
    )


def _check_allowed(ctx: StepContext, paths: list[str]) -> None:
    denied = [p for p in paths if not ws.is_allowed(p, ctx.service.profile.allow)]
    if denied:
        raise StepFailed(
            f"patch touches files outside the allow-list: {', '.join(sorted(denied))}",
            rollback=False,
        )


def _apply_source(ctx: StepContext, source: str, before: ws.Snapshot) -> bool:
    """Try one patch source; True when it changed something (or tried to)."""
    root = ctx.workspace
    if source == "operator_patch":
        assert ctx.requested_patch is not None
        try:
            paths = ws.patch_paths(root, ctx.requested_patch)
            _check_allowed(ctx, paths)
            _save_preimages(ctx, before, paths)
            ws.apply_patch(root, ctx.requested_patch)
        except ws.WorkspaceError as exc:
            raise StepFailed(f"operator patch does not apply: {exc}", rollback=False) from None
        return True
    if source == "rules":
        profile = ctx.service.profile
        if not profile.build_context or not profile.dockerfile:
            return False
        edits = derive_rule_edits(
            _signatures(ctx),
            workspace=root,
            build_context=profile.build_context,
            dockerfile=profile.dockerfile,
        )
        if not edits:
            return False
        _check_allowed(ctx, [edit.path for edit in edits])
        _save_preimages(ctx, before, [edit.path for edit in edits])
        for edit in edits:
            ws.write_file(root, edit.path, edit.new_data)
        return True
    if source == "agent" and ctx.agent_template:
        analysis = ctx.store.run_dir(ctx.run_id) / "analysis.json"
        argv = build_agent_argv(
            ctx.agent_template, instruction=ctx.instruction, analysis_path=analysis, workspace=root
        )
        outcome = run_agent(argv, cwd=root, timeout=ctx.agent_timeout_s)
        ctx.save(
            "agent.log",
            ctx.redactor.redact(outcome.output).encode(),
            type=ArtifactType.PATCH_DIFF,
            kind="agent_log",
        )
        if outcome.timed_out:
            raise StepFailed(f"patch agent timed out after {ctx.agent_timeout_s:.0f}s")
        return True
    return False


def patch(ctx: StepContext) -> StepResult:
    root = ctx.workspace
    sources: list[str] = []
    if ctx.requested_patch:
        sources.append("operator_patch")
    else:
        sources.append("rules")
        if ctx.agent_template:
            sources.append("agent")
    if _manifest(ctx):  # an earlier delivery of this step died half-way: start clean
        _restore_preimages(ctx, lambda line: None)
    before = ws.Snapshot.take(root)
    used = None
    try:
        for source in sources:
            if _apply_source(ctx, source, before) and ws.changes(before, ws.Snapshot.take(root)):
                used = source
                break
    except BaseException:
        ws.restore(root, before, ws.changes(before, ws.Snapshot.take(root)))
        raise
    changed = ws.changes(before, ws.Snapshot.take(root))
    if used is None or not changed:
        ws.restore(root, before, changed)
        raise StepFailed(
            f"no patch derived (tried: {', '.join(sources)}); nothing was changed", rollback=False
        )
    violations = ws.validate_changes(root, changed, ctx.service.profile.allow)
    if violations:
        ws.restore(root, before, changed)
        listing = "; ".join(f"{v.path}: {v.reason}" for v in violations)
        raise StepFailed(f"patch rejected, workspace restored: {listing}", rollback=False)
    recorded = set(_manifest(ctx))
    extra = [c.path for c in changed if c.path not in recorded]
    if extra:  # the agent's edits are only known afterwards; the snapshot kept their bytes
        _save_preimages(ctx, before, sorted(recorded | set(extra)))
    diff = ws.unified_diff(root, before, changed)
    ctx.save("patch.diff", diff.encode(), type=ArtifactType.PATCH_DIFF, kind="patch_diff")
    files = [{"path": c.path, "change": c.kind} for c in changed]
    return StepResult(
        f"{used}: changed {', '.join(c.path for c in changed)}",
        {"source": used, "files": files, "diff_sha256": _sha(diff)},
    )


def _manifest(ctx: StepContext) -> dict[str, dict[str, Any]]:
    try:
        path = ctx.store.resolve(ctx.run_id, "pre-images/manifest.json")
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _split_ref(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a port in the registry part is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


# ------------------------------------------------------------------------------ build


def build(ctx: StepContext) -> StepResult:
    svc = ctx.service
    engine = _connect()
    try:
        repository = f"{ROLLBACK_REPOSITORY}/{svc.project}-{svc.profile.name}"
        tag = ctx.run_id.hex[:12]
        # A redelivered build must not re-tag its own new image as "the previous one".
        old_image = engine.image_id(f"{repository}:{tag}")
        if old_image is None:
            old_image = engine.image_id(svc.image)
            if old_image:
                engine.tag_image(old_image, repository, tag)
        rollback_ref = f"{repository}:{tag}" if old_image else None
        with ctx.log(
            StepName.BUILD, "build.log", type=ArtifactType.BUILD_LOG, kind="build_log"
        ) as out:
            out(f"$ {' '.join(svc.compose().argv('build', svc.profile.name))}")
            code = svc.compose().build(svc.profile.name, out)
            out(f"exit code {code}")
        new_image = engine.image_id(svc.image)
    finally:
        engine.close()
    result = {"old_image": old_image, "new_image": new_image, "rollback_image": rollback_ref}
    if code != 0:
        raise StepFailed(
            f"build of {svc.profile.name} failed (exit {code}); see build.log", result=result
        )
    return StepResult(f"built {svc.image} ({(new_image or '?')[:19]})", result)


# ---------------------------------------------------------------------------- restart


def restart(ctx: StepContext) -> StepResult:
    svc = ctx.service
    name = svc.profile.name
    engine = _connect()
    try:
        before = engine.services_snapshot(svc.project)
        with ctx.log(
            StepName.RESTART, "restart.log", type=ArtifactType.BUILD_LOG, kind="restart_log"
        ) as out:
            for service, (cid, started) in sorted(before.items()):
                out(f"before {service}: container {cid[:12]} started {started}")
            out(f"$ {' '.join(svc.compose().argv('up', '-d', '--no-deps', name))}")
            code = svc.compose().up_no_deps(name, out)
            out(f"exit code {code}")
            after = engine.services_snapshot(svc.project)
            for service, (cid, started) in sorted(after.items()):
                out(f"after {service}: container {cid[:12]} started {started}")
            disturbed = sorted(
                s for s, state in before.items() if s != name and after.get(s) != state
            )
            if disturbed:
                out(f"other services changed: {', '.join(disturbed)}")
    finally:
        engine.close()
    result = {
        "before": {s: list(v) for s, v in before.items()},
        "after": {s: list(v) for s, v in after.items()},
    }
    if code != 0:
        raise StepFailed(
            f"compose up of {name} failed (exit {code}); see restart.log", result=result
        )
    if disturbed:
        raise StepFailed(f"restart disturbed other services: {', '.join(disturbed)}", result=result)
    old = before.get(name, ("", ""))[0]
    new = after.get(name, ("", ""))[0]
    verb = "recreated" if old != new else "restarted"
    return StepResult(f"{verb} {name} (container {new[:12]})", result)


# ----------------------------------------------------------------------------- verify


def _verify_container(
    ctx: StepContext, engine: Engine, out: Callable[[str], None], deadline_s: float
) -> tuple[bool, str]:
    svc = ctx.service
    return wait_container_stable(
        lambda: engine.container_for(svc.project, svc.profile.name),
        require_healthy=svc.profile.has_healthcheck,
        deadline_s=deadline_s,
        stable_for_s=CONTAINER_STABLE_S,
        on_check=out,
    )


def _attempt_line(attempt: Attempt) -> str:
    outcome = attempt.status_code if attempt.status_code is not None else attempt.error
    return (
        f"probe #{attempt.number} at {attempt.at} (+{attempt.elapsed_s:.2f}s): "
        f"{outcome} {'ok' if attempt.ok else 'not ready'}"
    )


def verify(ctx: StepContext) -> StepResult:
    svc = ctx.service
    profile = svc.profile
    started = time.monotonic()
    engine = _connect()
    try:
        with ctx.log(
            StepName.VERIFY, "verify.log", type=ArtifactType.VERIFY_LOG, kind="verify_log"
        ) as out:
            ok, reason = _verify_container(ctx, engine, out, profile.health_timeout_seconds)
            out(f"container check: {'ok' if ok else 'failed'}: {reason}")
            attempts = 0
            if ok and profile.health_url:
                remaining = max(profile.health_timeout_seconds - (time.monotonic() - started), 1.0)
                outcome = probe_http(
                    profile.health_url,
                    expected_status=profile.health_expected_status,
                    deadline_s=remaining,
                    on_attempt=lambda a: out(_attempt_line(a)),
                )
                attempts = len(outcome.attempts)
                ok = outcome.ok
                reason = (
                    f"{profile.health_url} answered {profile.health_expected_status}"
                    if ok
                    else f"{profile.health_url} did not answer {profile.health_expected_status} "
                    f"within {profile.health_timeout_seconds:.0f}s"
                )
                out(f"health check: {'ok' if ok else 'failed'}: {reason}")
            final = engine.container_for(svc.project, profile.name)
    finally:
        engine.close()
    result = {
        "healthy": ok,
        "reason": reason,
        "probe_attempts": attempts,
        "container": _describe(final),
    }
    if not ok:
        raise StepFailed(f"verification failed: {reason}", result=result)
    return StepResult(f"healthy: {reason}", result)


# --------------------------------------------------------------------------- rollback


def _restore_preimages(ctx: StepContext, out: Callable[[str], None]) -> list[str]:
    """Write back the bytes kept before patching; remove files that did not exist."""
    root = ctx.workspace
    restored: list[str] = []
    for path, meta in sorted(_manifest(ctx).items()):
        if meta["existed"]:
            data = ctx.store.resolve(ctx.run_id, f"pre-images/{path}").read_bytes()
            ws.write_file(root, path, data)
            out(f"restored {path} ({meta['sha256'][:12]})")
        elif (root / path).exists() or (root / path).is_symlink():
            (root / path).unlink()
            out(f"removed {path} (did not exist before)")
        restored.append(path)
    return restored


def rollback(ctx: StepContext) -> StepResult:
    """Put back the pre-image bytes and, if a new image was built, the previous image."""
    svc = ctx.service
    with ctx.log(
        StepName.ROLLBACK, "rollback.log", type=ArtifactType.ROLLBACK_LOG, kind="rollback_log"
    ) as out:
        restored = _restore_preimages(ctx, out)
        built = ctx.previous.get(StepName.BUILD.value, {})
        image_ref = built.get("rollback_image")
        recreated = False
        if (
            image_ref
            and built.get("new_image")
            and built.get("new_image") != built.get("old_image")
        ):
            engine = _connect()
            try:
                old_id = engine.image_id(image_ref)
                if old_id is None:
                    raise StepFailed(f"rollback image {image_ref} is gone", rollback=False)
                repo, tag = _split_ref(svc.image)
                engine.tag_image(old_id, repo, tag)
                out(f"re-pointed {svc.image} at {old_id[:19]} ({image_ref})")
                code = svc.compose().up_no_deps(svc.profile.name, out)
                out(f"compose up exit code {code}")
                recreated = code == 0
                if code != 0:
                    raise StepFailed(
                        f"rollback could not recreate {svc.profile.name} (exit {code})"
                    )
            finally:
                engine.close()
    return StepResult(
        f"restored {len(restored)} file(s)"
        + ("; previous image back in service" if recreated else ""),
        {"restored": restored, "image_restored": recreated},
    )


STEP_FUNCTIONS: dict[StepName, Callable[[StepContext], StepResult]] = {
    StepName.ANALYZE: analyze,
    StepName.PATCH: patch,
    StepName.BUILD: build,
    StepName.RESTART: restart,
    StepName.VERIFY: verify,
    StepName.ROLLBACK: rollback,
}
