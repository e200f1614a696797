"""Run submission: validate against the compose file, snapshot the plan, enqueue after commit."""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.config import Settings
from moonmind.schemas.workflow_models import ApprovalRequest, RetryRequest, RunCreate
from moonmind.workflows.orchestrator import policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.action_plan import (
    build_plan,
    service_context,
)
from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
    normalize_project_name,
)
from moonmind.workflows.orchestrator.celery_app import create_celery
from moonmind.workflows.orchestrator.enums import (
    STEP_ORDER,
    Priority,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.errors import ComposeUnavailable, RunConflict, RunNotFound
from moonmind.workflows.orchestrator.metrics import metrics_from_settings
from moonmind.workflows.orchestrator.service_profiles import (
    ServiceProfile,
    get_profile,
    load_profiles,
)


@dataclass(frozen=True)
class StackView:
    compose: Compose
    config: dict[str, Any]
    profiles: dict[str, ServiceProfile]


_cache: dict[tuple[str, int, int], StackView] = {}
_cache_lock = threading.Lock()


def load_stack(settings: Settings) -> StackView:
    """Parse `compose config` once per version of the compose file."""
    path = settings.compose_path
    try:
        stat = path.stat()
    except OSError as exc:
        raise ComposeUnavailable(f"compose file {path} is not readable: {exc}") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        command = detect_compose_command(settings.compose_command or None)
        compose = Compose(
            command=tuple(command),
            project=normalize_project_name(settings.project_name, command),
            compose_file=path,
            workspace=settings.workspace_path,
        )
        config = compose.config()
        profiles = load_profiles(
            config,
            workspace=settings.workspace_path,
            overrides=settings.service_overrides,
            compose_file=path,
        )
    except (ComposeError, ValueError) as exc:
        raise ComposeUnavailable(str(exc)) from None
    view = StackView(compose, config, profiles)
    with _cache_lock:
        _cache[key] = view
    return view


_producers: dict[tuple[str, str], Celery] = {}


def _producer(settings: Settings) -> Celery:
    """A Celery app for these settings' broker and queue (not the import-time default)."""
    key = (settings.broker_url, settings.queue)
    with _cache_lock:
        if key not in _producers:
            _producers[key] = create_celery(settings)
        return _producers[key]


def submit_run(settings: Settings, db: Database, request: RunCreate) -> OrchestratorRun:
    """Create the run row (raises UnknownService / ComposeUnavailable before touching anything)."""
    stack = load_stack(settings)
    profile = get_profile(stack.profiles, request.target_service)
    ctx = service_context(settings, stack.compose, profile, stack.config)
    steps, author = build_plan(
        ctx, has_operator_patch=bool(request.patch), agent_configured=bool(settings.patch_agent)
    )
    with db.session() as session:
        run = repo.create_run(
            session,
            instruction=request.instruction,
            target_service=request.target_service,
            steps=steps,
            service_context=ctx.to_json(),
            artifact_root=str(settings.artifact_root),
            priority=request.priority,
            approval_token=_token_evidence(request.approval_token),
            requested_patch=request.patch,
            generated_by=author,
            run_id=uuid.uuid4(),
        )
        run.requested_by = request.requested_by
        gate = policies.gate_for(profile)
        if gate is not None:
            run.approval_gate_id = policies.sync_gate(session, profile.name, gate).id
        task_id = str(uuid.uuid4())
        repo.record_task_state(
            session, run.id, StepName.ANALYZE, TaskStateName.PENDING, celery_task_id=task_id
        )
    # Only now, with the row committed, may a worker see the run.
    from moonmind.workflows.orchestrator.tasks import enqueue_step

    enqueue_step(
        _producer(settings), settings, StepName.ANALYZE, run.id, request.priority, task_id=task_id
    )
    metrics_from_settings(settings.statsd_host, settings.statsd_port, settings.statsd_prefix).incr(
        "runs.queued"
    )
    return run


def _token_evidence(token: str | None) -> str | None:
    """Keep proof that a token was given, never the token."""
    return f"sha256:{hashlib.sha256(token.encode()).hexdigest()}" if token else None


def _step_state(run: OrchestratorRun, step: StepName) -> dict[str, Any]:
    return next((s for s in run.action_plan.steps if s["name"] == step.value), {})


def approve_run(
    settings: Settings, db: Database, run_id: uuid.UUID, request: ApprovalRequest
) -> OrchestratorRun:
    """Record an approval; a run waiting at its gate continues from the gated step."""
    now = policies.utcnow()
    resume: tuple[StepName, str, Priority] | None = None
    waited_s: float | None = None
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            raise RunNotFound(run_id)
        gate = policies.gate_from_context(run.action_plan.service_context)
        if gate is None:
            raise RunConflict(f"{run.target_service} is not protected; this run needs no approval")
        diff_sha = (_step_state(run, StepName.PATCH).get("result") or {}).get("diff_sha256")
        if gate.requirement == "pre-verify" and run.status != RunStatus.AWAITING_APPROVAL:
            diff_sha = None  # the diff to approve does not exist yet
        try:
            run.approval = policies.accept(run, gate, request, now=now, diff_sha256=diff_sha)
        except policies.ApprovalRejected as exc:
            raise RunConflict(str(exc)) from None
        run.approval_token = _token_evidence(request.token)
        session.flush()
        if run.status == RunStatus.AWAITING_APPROVAL:
            repo.transition_run(
                session,
                run.id,
                expected=[RunStatus.AWAITING_APPROVAL],
                new=RunStatus.RUNNING,
                message=f"approved by {request.approver.id} ({request.approver.role})",
            )
            asked = (run.metrics_snapshot or {}).get("approval_requested_at")
            if asked:
                waited_s = (now - datetime.fromisoformat(asked)).total_seconds()
                repo.set_metrics(session, run, approval_wait_seconds=round(waited_s, 3))
            task_id = str(uuid.uuid4())
            repo.record_task_state(
                session, run.id, gate.step, TaskStateName.PENDING, celery_task_id=task_id
            )
            resume = (gate.step, task_id, run.priority)
    metrics = metrics_from_settings(
        settings.statsd_host, settings.statsd_port, settings.statsd_prefix
    )
    if waited_s is not None:
        metrics.timing_ms("approvals.wait", waited_s * 1000)
    if resume is not None:
        from moonmind.workflows.orchestrator.tasks import enqueue_step

        step, task_id, priority = resume
        enqueue_step(_producer(settings), settings, step, run_id, priority, task_id=task_id)
    return _reload(db, run_id)


def retry_run(
    settings: Settings, db: Database, run_id: uuid.UUID, request: RetryRequest
) -> OrchestratorRun:
    """Replay a failed or rolled-back run from a step that is safe to repeat."""
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            raise RunNotFound(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.ROLLED_BACK):
            raise RunConflict(
                f"run is {run.status.value}; only failed or rolled_back runs can be retried"
            )
        step = _resume_step(run, request.resume_from_step)
        order = [name.value for name in STEP_ORDER]
        planned = {s["name"] for s in run.action_plan.steps}
        reset = planned & (
            {StepName.ROLLBACK.value}
            if step == StepName.ROLLBACK
            else {name for name in order if order.index(name) >= order.index(step.value)}
        )
        for name in reset:
            repo.update_step(
                session,
                run,
                StepName(name),
                status=StepStatus.PENDING.value,
                started_at=None,
                completed_at=None,
                celery_task_id=None,
                message=None,
                artifact_refs=[],
                result={},
            )
        latest = repo.latest_task_state(session, run.id, step)
        task_id = str(uuid.uuid4())
        repo.record_task_state(
            session,
            run.id,
            step,
            TaskStateName.PENDING,
            celery_task_id=task_id,
            attempt=(latest.attempt + 1) if latest is not None else 1,
        )
        note = f"retry from {step.value}" + (f": {request.reason}" if request.reason else "")
        retries = [*(run.metrics_snapshot or {}).get("retries", []), note]
        repo.set_metrics(session, run, retries=retries)
        run.status = RunStatus.PENDING
        run.completed_at = None
        run.message = note
        session.flush()
        priority = run.priority
    from moonmind.workflows.orchestrator.tasks import enqueue_step

    enqueue_step(_producer(settings), settings, step, run_id, priority, task_id=task_id)
    return _reload(db, run_id)


def _resume_step(run: OrchestratorRun, asked: str | None) -> StepName:
    order = list(STEP_ORDER)
    failed = next(
        (
            StepName(s["name"])
            for s in run.action_plan.steps
            if s["status"] == "failed" and s["name"] != StepName.ROLLBACK.value
        ),
        None,
    )
    rollback_failed = _step_state(run, StepName.ROLLBACK).get("status") == StepStatus.FAILED.value
    if run.status == RunStatus.ROLLED_BACK:
        # The rollback put the files and the image back: everything after analyze is undone.
        default = StepName.PATCH
    elif rollback_failed:
        default = StepName.ROLLBACK
    else:
        default = failed or StepName.ANALYZE
    if asked is None:
        return default
    step = StepName(asked)
    if step == StepName.ROLLBACK:
        if not rollback_failed:
            raise RunConflict("only a failed rollback can be resumed from rollback")
        return step
    if order.index(step) > order.index(default):
        raise RunConflict(
            f"resuming from {step.value} would skip {default.value}, which did not complete; "
            f"resume from {default.value} or earlier"
        )
    return step


def _reload(db: Database, run_id: uuid.UUID) -> OrchestratorRun:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None  # runs are never deleted
        return run
