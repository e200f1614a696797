"""After a build: pin each dependency a rule added without a version to what was installed.

The version comes, cheapest first, from what pip printed in this build's log
("Successfully installed name-X", when the log names one version only), from an
earlier read-back of the same image id (an image never changes), or else from the new
image itself (a throwaway container: ``importlib.metadata`` for Python,
``node_modules/<name>/package.json`` for Node). The result records which. The
requirement line becomes ``name==X`` and the package.json entry ``^X``. The file was
already patched, so its pre-image is kept and a rollback puts the original back. The
edit does not change what the built image contains (it holds the unpinned file; the next
build of that layer installs the same version). When the image cannot say, the entry is
left unpinned and the result says so.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.adapters import workspace as ws
from moonmind.workflows.orchestrator.adapters.image_exec import run_in_image
from moonmind.workflows.orchestrator.diagnosis.kind_rules import _repin
from moonmind.workflows.orchestrator.diagnosis.node_deps import _json_indent
from moonmind.workflows.orchestrator.diagnosis.python_deps import canonical_name
from moonmind.workflows.orchestrator.enums import ArtifactType, StepName
from moonmind.workflows.orchestrator.steps.context import StepContext

PINS_FILE = "pins.json"  # path -> sha256 after pinning: a redelivered build accepts it
_VERSION = re.compile(r"^\d+(?:\.\d+)*[A-Za-z0-9.+-]*$")
_PY = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
_NODE = (
    "const p = require('path').resolve('node_modules', process.argv[1], 'package.json');"
    "console.log(require(p).version)"
)


_PIP_INSTALLED = re.compile(r"Successfully installed (.+)$")
_READ_BACKS: dict[tuple[str, str, str], str] = {}  # (image id, ecosystem, name) -> version
_READ_BACKS_MAX = 512
_read_backs_lock = threading.Lock()


def logged_version(build_log: str, package: str) -> str | None:
    """The version pip said it installed for ``package`` in this build, when it said one."""
    wanted, seen = canonical_name(package), set()
    for line in build_log.splitlines():
        found = _PIP_INSTALLED.search(line.strip())
        for item in found.group(1).split() if found else ():
            name, _, version = item.rpartition("-")
            if name and canonical_name(name) == wanted and _VERSION.match(version):
                seen.add(version)
    return seen.pop() if len(seen) == 1 else None


def _read_back(image: str, ecosystem: str, package: str) -> tuple[str | None, str, str]:
    """(version, why not, where it came from): a cached read-back of this image, or a new one."""
    key = (image, ecosystem, canonical_name(package))
    with _read_backs_lock:
        known = _READ_BACKS.get(key)
    if known is not None:
        return known, "", "image (read before)"
    version, why = installed_version(image, ecosystem, package)
    if version is not None:
        with _read_backs_lock:
            if len(_READ_BACKS) >= _READ_BACKS_MAX:
                _READ_BACKS.pop(next(iter(_READ_BACKS)))
            _READ_BACKS[key] = version
    return version, why, "image"


def installed_version(image: str, ecosystem: str, package: str) -> tuple[str | None, str]:
    """(version, '') or (None, why not) for a package in the image."""
    if ecosystem == "python":
        tries = [["python3", "-c", _PY, package], ["python", "-c", _PY, package]]
    elif ecosystem == "node":
        tries = [["node", "-e", _NODE, package]]
    else:
        return None, f"no way to ask a {ecosystem} image"
    why = ""
    for argv in tries:
        outcome = run_in_image(image, argv)
        lines = outcome.output.strip().splitlines()
        if outcome.exit_code == 0 and lines and _VERSION.match(lines[-1].strip()):
            return lines[-1].strip(), ""
        said = [line.strip() for line in lines if "rror" in line] or lines[-1:]
        why = (said[-1] if said else f"exit {outcome.exit_code}")[:200]
    return None, why


def _pinned_bytes(data: bytes, ecosystem: str, package: str, version: str) -> bytes | None:
    if ecosystem == "python":
        return _repin(data, package, version)
    text = data.decode("utf-8")
    doc = json.loads(text)
    for key in ("dependencies", "devDependencies"):
        if isinstance(doc.get(key), dict) and package in doc[key]:
            doc[key][package] = f"^{version}"
            out = json.dumps(doc, indent=_json_indent(text), ensure_ascii=False)
            return (out + ("\n" if text.endswith("\n") else "")).encode("utf-8")
    return None


def pinned_sha256(ctx: StepContext, path: str) -> str | None:
    """The sha256 a file got from this run's pinning, if it was pinned."""
    try:
        recorded = json.loads((ctx.store.run_dir(ctx.run_id) / PINS_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = recorded.get(path) if isinstance(recorded, dict) else None
    return str(value) if value else None


def _pin_one(
    ctx: StepContext, image: str, entry: dict[str, str], build_log: str
) -> tuple[dict[str, Any], str]:
    """The record of one pin (``version`` None when it failed) and its diff."""
    package, ecosystem, path = entry["package"], entry["ecosystem"], entry["path"]
    record: dict[str, Any] = {"package": package, "ecosystem": ecosystem, "path": path}
    version: str | None = logged_version(build_log, package) if ecosystem == "python" else None
    if version is not None:
        why, record["read_from"] = "", "build log"
    else:
        version, why, record["read_from"] = _read_back(image, ecosystem, package)
    full = Path(ctx.workspace) / path
    try:
        data = full.read_bytes()
        new = _pinned_bytes(data, ecosystem, package, version) if version else None
    except (OSError, ValueError) as exc:
        version, why, new = None, f"{path} unreadable: {exc}", None
    if version is None or new is None:
        return {**record, "version": None, "why": why or f"{package} not found in {path}"}, ""
    diff = "".join(
        difflib.unified_diff(
            data.decode("utf-8", "replace").splitlines(keepends=True),
            new.decode("utf-8", "replace").splitlines(keepends=True),
            f"a/{path}",
            f"b/{path}",
        )
    )
    _remember(ctx, path, hashlib.sha256(new).hexdigest())
    ws.write_file(Path(ctx.workspace), path, new)
    spec = f"=={version}" if ecosystem == "python" else f"^{version}"
    return {**record, "version": version, "spec": f"{package}{spec}"}, diff


def _remember(ctx: StepContext, path: str, sha: str) -> None:
    """Add a pinned file's sha256 to the run's record: written whole, then renamed into
    place, so a worker killed mid-write leaves the previous record, never half of one."""
    target = ctx.store.run_dir(ctx.run_id) / PINS_FILE
    try:
        recorded = json.loads(target.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded[path] = sha
    ctx.store.write(ctx.run_id, PINS_FILE, json.dumps(recorded).encode())


def pin_installed(
    ctx: StepContext, image: str | None, build_log: str = ""
) -> tuple[dict[str, Any], str]:
    """The build result's ``pins`` and a message part ('' when nothing was to pin)."""
    unpinned = ctx.result_of(StepName.PATCH).get("unpinned") or []
    if not unpinned:
        return {}, ""
    if image is None:
        why = "the built image was not found"
        pins = [{**e, "version": None, "why": why} for e in unpinned]
        return {"pins": pins}, f"; left unpinned: {why}"
    pins, diffs = [], []
    for entry in unpinned:
        record, diff = _pin_one(ctx, image, entry, build_log)
        pins.append(record)
        diffs.append(diff)
    if any(diffs):
        ctx.save("pin.diff", "".join(diffs).encode(), type=ArtifactType.PATCH_DIFF, kind="pin_diff")
    done = [p["spec"] for p in pins if p["version"]]
    left = [f"{p['package']} ({p['why']})" for p in pins if not p["version"]]
    said = f"; pinned {', '.join(done)} (as installed)" if done else ""
    said += f"; left unpinned: {', '.join(left)}" if left else ""
    return {"pins": pins}, said
