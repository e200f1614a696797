"""Run submission: validate against the compose file, snapshot the plan, enqueue after commit."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from api_service.db.base import Database
from api_service.db.models import OrchestratorRun
from moonmind.config import Settings
from moonmind.schemas.workflow_models import RunCreate
from moonmind.workflows.orchestrator import repositories as repo
from moonmind.workflows.orchestrator.action_plan import build_plan, service_context
from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
    normalize_project_name,
)
from moonmind.workflows.orchestrator.celery_app import create_celery
from moonmind.workflows.orchestrator.enums import StepName, TaskStateName
from moonmind.workflows.orchestrator.metrics import metrics_from_settings
from moonmind.workflows.orchestrator.service_profiles import (
    ServiceProfile,
    get_profile,
    load_profiles,
)


class ComposeUnavailable(Exception):
    """The workspace's compose file cannot be read by the compose CLI."""


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
            approval_token=request.approval_token,
            requested_patch=request.patch,
            generated_by=author,
            run_id=uuid.uuid4(),
        )
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
