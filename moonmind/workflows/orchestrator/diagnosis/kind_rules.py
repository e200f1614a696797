"""Rules for diagnosed kinds whose fix needs a value from the operator's instruction.

``import_name_mismatch`` pins the distribution to the version the instruction names;
``missing_env_var`` adds an ``ENV NAME=value`` default to the Dockerfile's final stage
with the value the instruction gives. Without that value nothing is edited: the run ends
with the diagnosis explained (the compose file and .env stay outside our reach).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from moonmind.workflows.orchestrator.diagnosis.dockerfile import final_stage, instructions
from moonmind.workflows.orchestrator.diagnosis.instruction import env_value, pinned_version
from moonmind.workflows.orchestrator.diagnosis.python_deps import (
    _append_line,
    _requirements_files,
    canonical_name,
    distribution_for_module,
)
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target

KindRule = Callable[[Mapping[str, Any], str, Target], list[FileEdit]]
_REQ = re.compile(r"^(\s*)([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?([^;#]*)(.*)$")


def mismatch_distribution(subject: str) -> str | None:
    """The distribution behind ``name from module`` (None for the stdlib or unknown)."""
    module = subject.rsplit(" from ", 1)[-1].strip()
    return distribution_for_module(module) if module else None


def _repin(data: bytes, dist: str, version: str) -> bytes | None:
    """The requirements bytes with ``dist`` pinned; None when it is not listed there."""
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = _REQ.match(line.rstrip("\r\n"))
        if m and canonical_name(m.group(2)) == canonical_name(dist):
            ending = line[len(line.rstrip("\r\n")) :]
            rest = m.group(5).strip()
            marker = f" {rest}" if rest.startswith(";") else ""
            lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3) or ''}=={version}{marker}{ending}"
            return "".join(lines).encode()
    return None


def pin_edit(diagnosis: Mapping[str, Any], instruction: str, target: Target) -> list[FileEdit]:
    dist = mismatch_distribution(str(diagnosis.get("subject", "")))
    version = pinned_version(instruction, dist) if dist else None
    files = _requirements_files(target)
    if dist is None or version is None or not files:
        return []
    reason = f"pin {dist}=={version} for {diagnosis['subject']} (version from the instruction)"
    for rel in files:
        data = (target.workspace / rel).read_bytes()
        pinned = _repin(data, dist, version)
        if pinned is not None:
            return [FileEdit(rel, pinned, reason)] if pinned != data else []
    data = (target.workspace / files[0]).read_bytes()
    return [FileEdit(files[0], _append_line(data, f"{dist}=={version}"), reason)]


def env_line(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'ENV {name}="{escaped}"'


def env_edit(diagnosis: Mapping[str, Any], instruction: str, target: Target) -> list[FileEdit]:
    name = str(diagnosis.get("subject", ""))
    value = env_value(instruction, name) if name else None
    dockerfile = target.file(target.dockerfile)
    if value is None or dockerfile is None:
        return []
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    stage = final_stage(instructions(text))
    if not stage or stage[0].keyword != "FROM":
        return []
    declared = re.compile(rf"(?:^|\s){re.escape(name)}[=\s]")
    if any(ins.keyword == "ENV" and declared.search(f" {ins.args}") for ins in stage):
        return []  # the Dockerfile already sets it: a default would change nothing
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    at = stage[1].line_index if len(stage) > 1 else len(lines)
    lines.insert(at, env_line(name, value) + newline)
    reason = f"default {name} in the Dockerfile (value from the instruction)"
    return [FileEdit(target.dockerfile, "".join(lines).encode(), reason)]


KIND_RULES: dict[str, KindRule] = {
    "import_name_mismatch": pin_edit,
    "missing_env_var": env_edit,
}


def diagnosis_edits(
    diagnoses: Sequence[Mapping[str, Any]], instruction: str, target: Target
) -> list[FileEdit]:
    """Edits for the first diagnosis a kind rule can fix with the instruction's values."""
    for diagnosis in diagnoses:
        rule = KIND_RULES.get(str(diagnosis.get("kind")))
        edits = rule(diagnosis, instruction, target) if rule else []
        if edits:
            return edits
    return []
