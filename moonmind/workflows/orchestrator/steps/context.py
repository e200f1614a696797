"""What a step receives (StepContext) and what it gives back (StepResult or StepFailed).

Steps hold no database code: the transitions module records what they return. A step
that cannot continue raises StepFailed; anything it produced before failing is still
recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from moonmind.utils.redaction import Redactor, default_redactor
from moonmind.utils.stream_redaction import StreamRedactor
from moonmind.workflows.orchestrator.adapters.docker_engine import Engine, EngineUnavailable
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.plan import Plan, ServiceContext, StepParameters
from moonmind.workflows.orchestrator.storage import (
    ArtifactStorageError,
    ArtifactStore,
    StoredArtifact,
)

P = TypeVar("P", bound=StepParameters)


class StepFailed(Exception):
    """A step could not finish. ``rollback`` says whether earlier effects must be undone."""

    def __init__(
        self, message: str, *, rollback: bool = True, result: dict[str, Any] | None = None
    ) -> None:
        message = default_redactor().redact(message)  # step messages reach the API
        super().__init__(message)
        self.message = message
        self.rollback = rollback
        self.result = result or {}


@dataclass
class StepResult:
    message: str
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.message = default_redactor().redact(self.message)


StepOutcome = StepResult | StepFailed


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
    plan: Plan
    store: ArtifactStore
    requested_patch: str | None = None
    approved_diff: str | None = None  # the diff sha256 an approval of this run names
    agent_template: str = ""
    agent_timeout_s: float = 600.0
    build_timeout_s: float | None = None  # compose build's own deadline (None: no limit)
    up_timeout_s: float | None = None  # compose up's own deadline
    busy_services: frozenset[str] = frozenset()  # held by other active runs: they may change
    on_line: Callable[[str, str], None] = lambda step, line: None
    produced: list[ProducedArtifact] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # what a step's source adds to its result
    missing: list[str] = field(default_factory=list)
    # Everything that came from a process (logs, agent output) passes through this first.
    redactor: Redactor = field(default_factory=default_redactor)

    @property
    def workspace(self) -> Path:
        return Path(self.service.workspace)

    def params(self, model: type[P]) -> P:
        """This run's parameters for a step, as the plan recorded them."""
        return self.plan.params(model)

    def result_of(self, step: StepName) -> dict[str, Any]:
        """What an earlier step of this run recorded."""
        return self.plan.result(step)

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
        self, step: StepName, relpath: str, *, type: ArtifactType
    ) -> Iterator[Callable[[str], None]]:
        """A log file that grows as lines arrive; each line is also announced to listeners."""
        try:
            stream = self.store.stream(self.run_id, relpath)
        except ArtifactStorageError:
            self.missing.append(relpath)
            stream = None

        redacting = StreamRedactor(self.redactor)  # a key printed line by line is one block

        def write(raw: str) -> None:
            for piece in raw.splitlines() or [raw]:  # a chunk may hold several lines
                line = redacting.line(piece)
                if line is None:
                    continue
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
                    self.produced.append(
                        ProducedArtifact(stream.close(), type, type.value, "text/plain")
                    )
                except OSError:
                    self.missing.append(relpath)


class EngineUnreachable(StepFailed):
    """The Docker engine cannot be reached; nothing of the step's engine work happened."""


def connect() -> Engine:
    """The Docker engine, or a step failure that says it is unreachable."""
    try:
        return Engine.connect()
    except EngineUnavailable as exc:
        raise EngineUnreachable(
            f"infrastructure: Docker engine unreachable: {exc}", rollback=False
        ) from None
