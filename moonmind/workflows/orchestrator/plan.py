"""The stored plan of a run, typed: its target (ServiceContext) and its steps.

A run's plan is snapshotted as JSON at submission (``orchestrator_action_plans``). This
module is the one place that decodes it: the steps read their parameters from it, the
worker records progress on it, and the API serialises it. Older rows that lack a newer
parameter get the model's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from api_service.db.models import ActionPlan
from moonmind.workflows.orchestrator.adapters.compose import Compose
from moonmind.workflows.orchestrator.enums import StepName, StepStatus
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile


class ServiceContext(BaseModel):
    """What every step needs to reach the target; fixed when the run is queued."""

    model_config = ConfigDict(frozen=True)

    workspace: str
    compose_file: str
    compose_command: list[str]
    project: str
    image: str
    profile: ServiceProfile
    # The Docker host whose worker runs every step, and its queue (None: the local host).
    host: str | None = None
    queue: str | None = None

    @property
    def service(self) -> str:
        return self.profile.name

    def compose(self) -> Compose:
        return Compose(
            command=tuple(self.compose_command),
            project=self.project,
            compose_file=Path(self.compose_file),
            workspace=Path(self.workspace),
        )


# ------------------------------------------------------------------ step parameters


class StepParameters(BaseModel):
    """Base of each step's parameters; ``step`` says which plan step they belong to."""

    model_config = ConfigDict(frozen=True)
    step: ClassVar[StepName]


class AnalyzeParameters(StepParameters):
    step = StepName.ANALYZE
    service: str
    log_tail_lines: int = 300
    health_url: str | None = None
    # One HTTP attempt of at most this long, and only when the container is running.
    probe_deadline_seconds: float = 1.0
    # Operators' signatures from config.toml ({pattern, kind, remediation}), as the API saw them.
    signatures: list[dict[str, str]] = Field(default_factory=list)


class PatchParameters(StepParameters):
    step = StepName.PATCH
    sources: list[str]
    allow: list[str] = Field(default_factory=list)
    dry_run: bool = False  # derive the diff in a scratch copy (steps/dry_run.py)


class BuildParameters(StepParameters):
    step = StepName.BUILD
    argv: list[str]
    image: str
    # The `docker build` docker-compose v1 runs for this service, run without it (None:
    # compose builds). Two decisions, made in two places: the API decides at submission
    # whether such a command exists (adapters/native_build.py docker_build_argv, from the
    # resolved compose file), and the worker decides at build time whether to use it
    # (native_build_enabled(), from the worker's own COMPOSE_DOCKER_CLI_BUILD; false: run
    # ``argv``). The split is deliberate: the worker is the process that would run
    # docker-compose, so the switch that picks compose's builder belongs to its environment,
    # not to whatever environment the API was started with.
    docker_argv: list[str] | None = None


class RestartParameters(StepParameters):
    step = StepName.RESTART
    argv: list[str]


class Backoff(BaseModel):
    """Verify's probe schedule: every ``fast_interval_seconds`` for the first
    ``fast_for_seconds``, then ``initial_delay_seconds`` growing by ``factor``."""

    model_config = ConfigDict(frozen=True)

    fast_interval_seconds: float = 0.05
    fast_for_seconds: float = 3.0
    initial_delay_seconds: float = 0.2
    factor: float = 2.0
    max_delay_seconds: float = 5.0


class Dependent(BaseModel):
    """A service that depends_on the target: checked again after the recreate."""

    model_config = ConfigDict(frozen=True)

    name: str
    health_url: str | None = None
    expected_status: int = 200


class VerifyParameters(StepParameters):
    step = StepName.VERIFY
    # Services that depend_on the target; those healthy before the run must stay so.
    dependents: list[Dependent] = Field(default_factory=list)
    dependents_deadline_seconds: float = 10.0
    health_url: str | None = None
    expected_status: int = 200
    timeout_seconds: float = 120.0
    require_docker_health: bool = False
    # How long the container must have been up, counted from its start, alongside the probe.
    stable_seconds: float = 3.0
    backoff: Backoff = Field(default_factory=Backoff)


class RollbackParameters(StepParameters):
    step = StepName.ROLLBACK
    strategies: list[str] = Field(default_factory=lambda: ["restore_preimages", "image_swap"])
    when: str = "on_failure"


P = TypeVar("P", bound=StepParameters)


# ------------------------------------------------------------------------ the plan


class PlanStep(BaseModel):
    """One step of the stored plan: what it will do and how far it got."""

    name: StepName
    parameters: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = StepStatus.PENDING
    started_at: str | None = None
    completed_at: str | None = None
    celery_task_id: str | None = None
    message: str | None = None
    artifact_refs: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Plan(BaseModel):
    """A run's steps in plan order, with typed access to each one's parameters."""

    steps: list[PlanStep]

    @classmethod
    def of(cls, row: ActionPlan) -> Plan:
        return cls(steps=[PlanStep.model_validate(step) for step in row.steps or []])

    def step(self, name: StepName) -> PlanStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"plan has no step {name.value}")

    def has(self, name: StepName) -> bool:
        return any(step.name == name for step in self.steps)

    def params(self, model: type[P]) -> P:
        """The parameters the plan holds for ``model.step``, validated."""
        return model.model_validate(self.step(model.step).parameters)

    def result(self, name: StepName) -> dict[str, Any]:
        """What a step recorded when it finished ({} when it has not, or is not planned)."""
        return self.step(name).result if self.has(name) else {}

    def first(self, status: StepStatus) -> PlanStep | None:
        return next((step for step in self.steps if step.status == status), None)

    def succeeded(self, name: StepName) -> bool:
        return self.has(name) and self.step(name).status == StepStatus.SUCCEEDED


def context_of(row: ActionPlan) -> ServiceContext:
    """The run's target as snapshotted at submission."""
    return ServiceContext.model_validate(row.service_context)
