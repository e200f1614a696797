"""A container's inspected state for tests that need one without an engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from moonmind.workflows.orchestrator.adapters.docker_engine import ContainerInfo

_RUNNING = ContainerInfo(
    id="c1",
    name="proj-app-1",
    status="running",
    exit_code=0,
    restart_count=0,
    health=None,
    started_at="2026-01-01T00:00:00.000000001Z",
    image_id="sha256:abc",
    oom_killed=False,
)


def container_info(**changes: Any) -> ContainerInfo:
    """A running container ``c1`` started on 2026-01-01, with ``changes`` applied."""
    return replace(_RUNNING, **changes)
