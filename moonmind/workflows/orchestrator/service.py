"""Run submission: validate against the compose file, snapshot the plan, enqueue after commit."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.orm import Session

from api_service.db.base import Database
from api_service.db.insert_new import insert_new
from api_service.db.models import OrchestratorRun, TaskState
from moonmind.auth import Principal
from moonmind.config import Settings
from moonmind.schemas.workflow_models import ApprovalRequest, RunCreate
from moonmind.workflows.orchestrator import audit, cancellation, policies
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.action_plan import (
    build_plan,
    dependents_of,
    service_context,
)
from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
    normalize_project_name,
)
from moonmind.workflows.orchestrator.adapters.native_build import docker_build_argv
from moonmind.workflows.orchestrator.dispatch import (
    QueuedStep,
    consumer_count,
    enqueue,
    next_message,
)
from moonmind.workflows.orchestrator.enums import (
    STEP_ORDER,
    ApprovalRequirement,
    RunStatus,
    StepName,
    StepStatus,
    TaskStateName,
)
from moonmind.workflows.orchestrator.errors import (
    ApprovalConflict,
    ComposeUnavailable,
    Forbidden,
    RunNotFound,
)
from moonmind.workflows.orchestrator.metrics import Metrics, metrics_from_settings
from moonmind.workflows.orchestrator.plan import Plan, context_of
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


Stamp = tuple[int, int] | None
_cache: dict[tuple[str, int, int, Stamp], StackView] = {}
_cache_lock = threading.Lock()


def _stamp(path: Path) -> Stamp:
    """A file's version (modification time and size); None when it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def load_stack(settings: Settings) -> StackView:
    """Parse `compose config` once per version of the compose file and of the ``.env``
    beside it, which compose interpolates it with: an edited ``.env`` changes image names,
    ports and build args."""
    path = settings.compose_path
    try:
        stat = path.stat()
    except OSError as exc:
        raise ComposeUnavailable(f"compose file {path} is not readable: {exc}") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, _stamp(path.parent / ".env"))
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


def _metrics(settings: Settings) -> Metrics:
    return metrics_from_settings(settings.statsd_host, settings.statsd_port, settings.statsd_prefix)


def _queue(session: Session, run: OrchestratorRun, step: StepName, attempt: int = 1) -> QueuedStep:
    """Record the step PENDING under a fresh task id."""
    queued = next_message(run, step)
    repo.record_task_state(
        session, run.id, step, TaskStateName.PENDING, celery_task_id=queued.task_id,
        attempt=attempt,
    )  # fmt: skip
    return queued


def submit_run(
    settings: Settings, db: Database, request: RunCreate, principal: Principal
) -> OrchestratorRun:
    """Create the run row (raises UnknownService / ComposeUnavailable before touching anything).

    The requester is the authenticated principal; a body naming someone else is refused."""
    if request.requested_by is not None and request.requested_by != principal.id:
        raise Forbidden(
            f"requested_by is {request.requested_by!r} but the caller is {principal.id!r}; "
            "the requester is taken from the bearer token (omit requested_by)"
        )
    stack = load_stack(settings)
    profile = get_profile(stack.profiles, request.target_service, settings.compose_path)
    ctx = service_context(settings, stack.compose, profile, stack.config)
    steps, author = build_plan(
        ctx,
        has_operator_patch=bool(request.patch),
        mode="dry_run" if request.dry_run else request.mode,
        signatures=[sig.model_dump() for sig in settings.signatures],
        dependents=dependents_of(stack.config, stack.profiles, profile.name),
        docker_build=docker_build_argv(
            stack.compose.command, ctx.image, (stack.config.get("services") or {})[profile.name]
        ),
    )
    run = repo.new_run(
        instruction=request.instruction,
        target_service=request.target_service,
        steps=steps,
        service_context=ctx,
        artifact_root=str(settings.artifact_root),
        priority=request.priority,
        approval_token=policies.token_sha256(request.approval_token)
        if request.approval_token
        else None,
        requested_patch=request.patch,
        generated_by=author,
        run_id=uuid.uuid4(),
        requested_by=principal.id,
    )
    run.dry_run, gate = request.dry_run, policies.gate_for(profile)
    if gate is not None:  # the gate row follows the configuration, whatever becomes of the run
        with db.session() as session:
            run.approval_gate_id = policies.sync_gate(session, profile.name, gate).id
    queued = next_message(run, StepName.ANALYZE)
    first = TaskState(
        id=uuid.uuid4(),
        run_id=run.id,
        plan_step=queued.step,
        state=TaskStateName.PENDING,
        celery_task_id=queued.task_id,
    )
    insert_new(db, run.action_plan, run, first)  # one round trip on PostgreSQL
    # Only now, with the row committed, may a worker see the run.
    enqueue(settings, queued)
    _metrics(settings).incr("runs.queued")
    _say_if_no_worker(settings, db, run, ctx.host)
    return run


def _say_if_no_worker(
    settings: Settings, db: Database, run: OrchestratorRun, host: str | None
) -> None:
    """A run for a host no worker consumes says so, instead of waiting silently."""
    queue = settings.host_queue(host)
    if consumer_count(settings, queue) != 0:
        return  # someone consumes it, or the transport cannot tell (filesystem: one host)
    message = (
        f"no live worker consumes {queue} (host {host or 'local'}); the run waits until one starts"
    )
    with db.session() as session:
        row = repo.get_run(session, run.id, for_update=True)
        if row is not None and row.status == RunStatus.PENDING and row.message is None:
            row.message = message
    run.message = message


def _check_approver(
    db: Database, run_id: uuid.UUID, request: ApprovalRequest, principal: Principal
) -> None:
    """The approver is the caller: a body naming someone else, or a role not held, is 403."""
    reason = None
    if request.approver.id != principal.id:
        reason = (
            f"the approval names {request.approver.id!r} but the caller is {principal.id!r}; "
            "an approval is given by the bearer token's principal"
        )
    elif not principal.has_role(request.approver.role):
        reason = f"{principal.id} does not hold the role {request.approver.role!r}"
    if reason is not None:
        audit.record(db, run_id, "approval_refused", principal.id, reason=reason)
        raise Forbidden(reason)


def approve_run(
    settings: Settings,
    db: Database,
    run_id: uuid.UUID,
    request: ApprovalRequest,
    principal: Principal,
) -> OrchestratorRun:
    """Record an approval; a run waiting at its gate continues from the gated step."""
    _check_approver(db, run_id, request, principal)
    now = policies.utcnow()
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            raise RunNotFound(run_id)
        diff_sha = Plan.of(run.action_plan).result(StepName.PATCH).get("diff_sha256")
        gate = policies.run_gate(run, patched=diff_sha is not None)
        if gate is None:
            raise ApprovalConflict(
                f"{run.target_service} is not protected; this run needs no approval"
            )
        if gate.requirement == ApprovalRequirement.PRE_VERIFY and (
            run.status != RunStatus.AWAITING_APPROVAL
        ):
            diff_sha = None  # the diff to approve does not exist yet
        try:
            run.approval = policies.accept(run, gate, request, now=now, diff_sha256=diff_sha)
        except policies.ApprovalRejected as exc:
            refused: policies.ApprovalRejected | None = exc  # recorded after this transaction
            queued, waited_s = None, None
        else:
            refused = None
            audit.note(session, run, "approval_granted", principal.id, role=request.approver.role)
            run.approval_token = policies.token_sha256(request.token)
            session.flush()
            queued = (
                _resume_at_gate(session, run, _continue_at(run, gate.step), request, now)
                if (run.status == RunStatus.AWAITING_APPROVAL)
                else None
            )
            waited_s = (run.metrics_snapshot or {}).get("approval_wait_seconds")
    if refused is not None:
        _refuse(db, run_id, principal, refused)
    if queued is not None:
        if waited_s is not None:
            _metrics(settings).timing_ms("approvals.wait", float(waited_s) * 1000)
        enqueue(settings, queued)
    return _reload(db, run_id)


def _refuse(
    db: Database, run_id: uuid.UUID, principal: Principal, refused: policies.ApprovalRejected
) -> NoReturn:
    audit.record(db, run_id, "approval_refused", principal.id, reason=str(refused))
    if isinstance(refused, policies.ApprovalForbidden):
        raise Forbidden(str(refused)) from None
    raise ApprovalConflict(str(refused)) from None


def _continue_at(run: OrchestratorRun, gated: StepName) -> StepName:
    """The step an approved run continues with: its gated step, or, for a retry that resumed
    past its gate (retry.py), the step it resumed at: the first one still pending."""
    pending = [
        s.name
        for s in Plan.of(run.action_plan).steps
        if s.status == StepStatus.PENDING and s.name != StepName.ROLLBACK
    ]
    return max(gated, *pending[:1], key=STEP_ORDER.index)


def _resume_at_gate(
    session: Session,
    run: OrchestratorRun,
    step: StepName,
    request: ApprovalRequest,
    now: datetime,
) -> QueuedStep:
    """Continue an approved run at ``step``. Waiting at the gate held the service, but if
    another run holds it too (a parked run from before retries took the lock), the run goes
    back to pending: the worker's claim then takes the service's lock and waits its turn."""
    approved = f"approved by {request.approver.id} ({request.approver.role})"
    project, service = context_of(run.action_plan).project, run.target_service
    repo.lock_service(session, project, service)
    holder = repo.active_run_for_service(session, project, service, exclude=run.id)
    waiting = "" if holder is None else f"; waiting for run {holder.id}, which holds {service}"
    repo.transition_run(
        session,
        run.id,
        expected=[RunStatus.AWAITING_APPROVAL],
        new=RunStatus.RUNNING if holder is None else RunStatus.PENDING,
        message=approved + waiting,
    )
    asked = (run.metrics_snapshot or {}).get("approval_requested_at")
    if asked:
        waited_s = (now - datetime.fromisoformat(asked)).total_seconds()
        repo.set_metrics(session, run, approval_wait_seconds=round(waited_s, 3))
    return _queue(session, run, step)


def cancel_run(
    settings: Settings, db: Database, run_id: uuid.UUID, *, cancelled_by: str | None = None
) -> OrchestratorRun:
    """Cancel a run: at once when idle, at the worker's next safe point when running."""
    with db.session() as session:
        run = repo.get_run(session, run_id, for_update=True)
        if run is None:
            raise RunNotFound(run_id)
        queued = cancellation.request_cancel(session, run, by=cancelled_by)
        audit.note(session, run, "cancel", cancelled_by)
    if queued is not None:
        enqueue(settings, queued)
    return _reload(db, run_id)


def _reload(db: Database, run_id: uuid.UUID) -> OrchestratorRun:
    with db.session() as session:
        run = repo.get_run(session, run_id)
        assert run is not None  # runs are never deleted
        return run
