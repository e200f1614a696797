"""From a recognised intent to the edits of the service's files, or a reason it cannot be.

Which manifest a package goes to is decided from the build context: the ecosystem the
operator named ("npm package", "apt"), else where the name is already listed, else a
known command (curl, jq, ...) is an OS package, else the one manifest the Dockerfile
installs (requirements file or package.json); with both and no word to choose, or with
neither, the instruction is refused with what to say instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from moonmind.workflows.orchestrator.diagnosis import intent_dockerfile as docker_edits
from moonmind.workflows.orchestrator.diagnosis import intent_packages as packages
from moonmind.workflows.orchestrator.diagnosis.intents import (
    Action,
    Ecosystem,
    Intent,
    parse_intent,
)
from moonmind.workflows.orchestrator.diagnosis.os_packages import COMMAND_PACKAGES
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target

_OS_NAMES = frozenset(COMMAND_PACKAGES) | {p for pair in COMMAND_PACKAGES.values() for p in pair}


@dataclass(frozen=True)
class IntentPlan:
    """The intent (ecosystem decided, ``refused`` set when nothing can be changed)."""

    intent: Intent
    edits: list[FileEdit] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What analysis.json and the patch step keep: the intent, its words, the change."""
        return {**self.intent.record(), "change": "; ".join(e.reason for e in self.edits)}


def _ecosystem(intent: Intent, target: Target) -> Ecosystem | str:  # str: why not
    """Where the package goes, or why that cannot be told."""
    if intent.ecosystem:
        return Ecosystem(intent.ecosystem)
    in_python = packages.python_listed(target, intent.name) is not None
    in_node = packages.node_listed(target, intent.name)
    if in_python != in_node:
        return Ecosystem.PYTHON if in_python else Ecosystem.NODE
    if intent.action is Action.ADD and intent.name in _OS_NAMES and not intent.value:
        return Ecosystem.OS
    has_python = bool(packages.python_files(target))
    has_node = packages.package_json(target) is not None
    if has_python and has_node:
        return (
            f"the build context has both a requirements file and package.json: say "
            f"'pip package {intent.name}' or 'npm package {intent.name}'"
        )
    if has_python or has_node:
        return Ecosystem.PYTHON if has_python else Ecosystem.NODE
    if intent.action is Action.ADD and not intent.value:
        return Ecosystem.OS
    return "the build context has no requirements file or package.json to edit"


def _changes(intent: Intent, target: Target) -> list[FileEdit] | str:
    if intent.action is Action.SET_ENV:
        return docker_edits.env_change(intent, target)
    if intent.action is Action.BASE_IMAGE:
        return docker_edits.base_image_change(intent, target)
    ecosystem = _ecosystem(intent, target)
    if not isinstance(ecosystem, Ecosystem):
        return ecosystem
    intent = replace(intent, ecosystem=ecosystem.value)
    if ecosystem is Ecosystem.PYTHON:
        return packages.python_change(intent, target)
    if ecosystem is Ecosystem.NODE:
        return packages.node_change(intent, target)
    return docker_edits.os_change(intent, target)


def plan_intent(instruction: str, target: Target) -> IntentPlan | None:
    """The instruction's change on the service's files; None when it asks for none."""
    intent = parse_intent(instruction)
    if intent is None:
        return None
    if intent.refused:
        return IntentPlan(intent)
    if intent.action in (Action.ADD, Action.REMOVE, Action.PIN):
        ecosystem = _ecosystem(intent, target)
        if isinstance(ecosystem, Ecosystem):
            intent = replace(intent, ecosystem=ecosystem.value)
    changes = _changes(intent, target)
    if isinstance(changes, str):
        return IntentPlan(intent.refuse(changes))
    return IntentPlan(intent, changes)
