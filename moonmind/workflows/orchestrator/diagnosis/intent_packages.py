"""Dependency edits an instruction asks for: requirements files and package.json.

Each function returns the edits, or a reason string when the change cannot be made
(nothing to remove, already listed, no manifest). An added dependency without a version
is marked ``unpinned``: the build step pins it to what the build installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.diagnosis.intents import NPM_NAME, PYTHON_NAME, Intent
from moonmind.workflows.orchestrator.diagnosis.kind_rules import _repin
from moonmind.workflows.orchestrator.diagnosis.node_deps import _json_indent
from moonmind.workflows.orchestrator.diagnosis.python_deps import (
    _append_line,
    _listed_names,
    _requirements_files,
    canonical_name,
)
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target
from moonmind.workflows.orchestrator.paths import join_relpath

Outcome = list[FileEdit] | str
_REQ_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def python_files(target: Target) -> list[str]:
    return _requirements_files(target)


def python_listed(target: Target, name: str) -> str | None:
    """The requirements file listing ``name`` (nested includes followed), if any."""
    for rel in python_files(target):
        found = target.file(rel)
        if found and canonical_name(name) in _listed_names(found, set(), target):
            return rel
    return None


def python_change(intent: Intent, target: Target) -> Outcome:
    files = python_files(target)
    if not files:
        return "the Dockerfile installs no requirements file (pip install -r ...) to edit"
    if not PYTHON_NAME.match(intent.name):
        return f"'{intent.name}' is not a valid Python distribution name"
    listed = python_listed(target, intent.name)
    if intent.action == "remove":
        return _python_remove(intent.name, files, target) or (
            f"{intent.name} is not listed in {', '.join(files)}"
        )
    if intent.action == "add" and listed:
        return f"{intent.name} is already listed in {listed}"
    where = listed or files[0]
    data = (target.workspace / where).read_bytes()
    if intent.value:
        pinned = _repin(data, intent.name, intent.value)
        new = pinned if pinned is not None else _append_line(data, f"{intent.name}=={intent.value}")
        if new == data:
            return f"{intent.name} is already pinned to {intent.value} in {where}"
        reason = f"{intent.action} {intent.name}=={intent.value} in {where}"
        return [FileEdit(where, new, reason)]
    edit = FileEdit(
        where,
        _append_line(data, intent.name),
        f"add {intent.name} to {where}",
        package=intent.name,
        unpinned="python",
    )
    return [edit]


def _python_remove(name: str, files: list[str], target: Target) -> list[FileEdit]:
    for rel in files:
        data = (target.workspace / rel).read_bytes()
        lines = data.decode("utf-8", errors="surrogateescape").splitlines(keepends=True)
        kept = [
            line
            for line in lines
            if not (
                (m := _REQ_LINE.match(line)) and canonical_name(m.group(1)) == canonical_name(name)
            )
        ]
        if len(kept) != len(lines):
            new = "".join(kept).encode("utf-8", errors="surrogateescape")
            return [FileEdit(rel, new, f"remove {name} from {rel}")]
    return []


# --------------------------------------------------------------------------- package.json


def package_json(target: Target) -> tuple[str, Path] | None:
    rel = join_relpath(target.context, "package.json")
    found = target.file(rel) if rel else None
    return (rel, found) if rel and found else None


def node_listed(target: Target, name: str) -> bool:
    doc = _load(target)
    return doc is not None and any(
        isinstance(doc.get(key), dict) and name in doc[key]
        for key in ("dependencies", "devDependencies")
    )


def _load(target: Target) -> dict[str, Any] | None:
    found = package_json(target)
    if found is None:
        return None
    try:
        doc = json.loads(found[1].read_text(encoding="utf-8"))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def node_change(intent: Intent, target: Target) -> Outcome:
    found = package_json(target)
    doc = _load(target)
    if found is None or doc is None:
        return "no readable package.json in the build context to edit"
    if not NPM_NAME.match(intent.name):
        return f"'{intent.name}' is not a valid npm package name"
    rel, path = found
    text = path.read_text(encoding="utf-8")
    section = next(
        (k for k in ("dependencies", "devDependencies") if intent.name in (doc.get(k) or {})),
        None,
    )
    unpinned = ""
    if intent.action == "remove":
        if section is None:
            return f"{intent.name} is not listed in {rel}"
        doc[section] = {k: v for k, v in doc[section].items() if k != intent.name}
        reason = f"remove {intent.name} from {rel}"
    elif intent.action == "add" and section is not None:
        return f"{intent.name} is already listed in {rel} ({section})"
    else:
        section = section or "dependencies"
        if not isinstance(doc.get(section, {}), dict):
            return f"{rel}: {section} is not an object"
        # No version given: "latest" until the build step pins what npm installed (^X).
        spec = intent.value or "latest"
        unpinned = "" if intent.value else "node"
        if (doc.get(section) or {}).get(intent.name) == spec:
            return f"{intent.name} is already {spec} in {rel}"
        doc[section] = {**(doc.get(section) or {}), intent.name: spec}
        reason = f"{intent.action} {intent.name} {spec} in {rel}"
    out = json.dumps(doc, indent=_json_indent(text), ensure_ascii=False)
    out += "\n" if text.endswith("\n") else ""
    return [FileEdit(rel, out.encode("utf-8"), reason, package=intent.name, unpinned=unpinned)]
