"""Node rule: add a missing package to the dependencies of the build context's package.json."""

from __future__ import annotations

import json
import re

from moonmind.workflows.orchestrator.diagnosis.signatures import Signature
from moonmind.workflows.orchestrator.diagnosis.target import FileEdit, Target
from moonmind.workflows.orchestrator.paths import join_relpath

NODE_BUILTINS = frozenset(
    {
        "fs",
        "path",
        "http",
        "https",
        "os",
        "crypto",
        "url",
        "util",
        "events",
        "stream",
        "child_process",
    }
)


def _json_indent(text: str) -> str | int:
    """Indentation used by an existing JSON document (2 spaces when unknown)."""
    match = re.search(r"^\{\s*?\n([ \t]+)\S", text)
    return match.group(1) if match else 2


def node_edit(sig: Signature, target: Target) -> list[FileEdit]:
    """Add ``"<package>": "latest"`` to package.json dependencies unless it is already there;
    the build step then pins it to a caret range of the version npm installed."""
    name = sig.subject
    if name in NODE_BUILTINS or name.startswith("node:"):
        return []
    rel = join_relpath(target.context, "package.json")
    found = target.file(rel) if rel else None
    if rel is None or found is None:
        return []
    text = found.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or (deps is not None and not isinstance(deps, dict)):
        return []
    if deps is not None and name in deps:
        return []
    doc["dependencies"] = {**(deps or {}), name: "latest"}
    out = json.dumps(doc, indent=_json_indent(text), ensure_ascii=False)
    out += "\n" if text.endswith("\n") else ""
    reason = f"add npm dependency {name} for missing module"
    return [FileEdit(rel, out.encode("utf-8"), reason, package=name, unpinned="node")]
