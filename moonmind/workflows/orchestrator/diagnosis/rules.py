"""The built-in rules: edits for the first signature with an obvious, low-risk fix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.diagnosis.intent_edits import plan_intent
from moonmind.workflows.orchestrator.diagnosis.kind_rules import diagnosis_edits
from moonmind.workflows.orchestrator.diagnosis.node_deps import node_edit
from moonmind.workflows.orchestrator.diagnosis.os_packages import os_package_edit
from moonmind.workflows.orchestrator.diagnosis.python_deps import python_edit
from moonmind.workflows.orchestrator.diagnosis.signatures import Signature, SignatureKind
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target
from moonmind.workflows.orchestrator.paths import join_relpath

Rule = Callable[[Signature, Target], list[FileEdit]]

RULES: dict[str, Rule] = {
    SignatureKind.PYTHON_MISSING_MODULE: python_edit,
    SignatureKind.NODE_MISSING_MODULE: node_edit,
    SignatureKind.COMMAND_NOT_FOUND: os_package_edit,
    SignatureKind.MISSING_SHARED_LIBRARY: os_package_edit,
}


def rule_target(workspace: Path, build_context: str, dockerfile: str) -> Target | None:
    """The service's files, or None when its build context or Dockerfile is unsafe."""
    context = join_relpath(build_context or ".")
    docker = join_relpath(dockerfile)
    if context is None or docker is None:
        return None
    return Target(Path(workspace), context, docker)


def derive_rule_edits(
    signatures: Sequence[Signature],
    *,
    workspace: Path,
    build_context: str,
    dockerfile: str,
    diagnoses: Sequence[Mapping[str, Any]] = (),
    instruction: str = "",
) -> list[FileEdit]:
    """Edits for the change the instruction asks for (an intent: then nothing else, even
    when it is refused), else for the first signature a built-in rule can fix, else for
    the first diagnosis a kind rule can fix with the instruction's values; [] when none."""
    target = rule_target(workspace, build_context, dockerfile)
    if target is None:
        return []
    planned = plan_intent(instruction, target)
    if planned is not None:
        return planned.edits
    for sig in signatures:
        rule = RULES.get(sig.kind)
        edits = rule(sig, target) if rule else []
        if edits:
            return edits
    return diagnosis_edits(diagnoses, instruction, target)
