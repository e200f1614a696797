"""Every never-patchable path, through every step entry point that writes or deletes in the
workspace, gets the same refusal and leaves every byte (``.git`` included) where it was.

Forbidden paths: ``.git/config``, the compose file, ``.env``, ``../x``, an absolute path and
a path through ``app/link``, a committed symlink pointing out of the workspace. Entry points:
the patch step's three sources (operator patch, rules, agent), the rollback step (writing
back the pre-images named by the manifest) and a patch step delivered again after its
worker died (which restores the same manifest first). The allow-list is ``**`` throughout,
so any refusal comes from the never-patchable rules in ``paths.py``, never the allow-list.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.diagnosis import Signature, derive_rule_edits
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.paths import never_patchable_reason, symlink_problems
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepContext, StepFailed
from moonmind.workflows.orchestrator.steps.preimages import MANIFEST
from tests.support.steps import make_context, service_context

FORBIDDEN = ("git_config", "compose", "env", "dotdot", "absolute", "symlink")
ENTRY_POINTS = (
    "operator_patch",
    "rules",
    "agent",
    "rollback_write",
    "rollback_delete",
    "redelivered_patch",
)

# What paths.py says about each forbidden path, as seen by an operation on that path.
REASONS = {
    "git_config": "path is inside .git",
    "compose": "compose files are never edited",
    "env": ".env files are never edited",
    "dotdot": "path escapes the workspace (..)",
    "absolute": "path is absolute",
    "symlink": "parent directory escapes workspace",
}
# The agent cannot hand over a path: the patch step only sees what it left in the workspace
# (an unsandboxed process writing outside the root is beyond any check). Its way of aiming
# at ../x, an absolute path or the outside link is planting a symlink to it, which the same
# symlink rule (paths.symlink_problems) refuses with one reason.
AGENT_REASONS = {
    **REASONS,
    "dotdot": "symlink escapes workspace",
    "absolute": "symlink escapes workspace",
    "symlink": "symlink escapes workspace",
}
# The rules cannot even name these: the diagnosis drops COPY sources that leave the
# workspace (join_relpath) or resolve out of it through a symlink (Target.file), so the
# refusal is the rule's own and the step reports that nothing was derived.
RULE_NAMES_NOTHING = {"dotdot", "absolute", "symlink"}

SIGNATURE = {
    "kind": "python_missing_module",
    "subject": "requests",
    "line": "ModuleNotFoundError: No module named 'requests'",
}

AGENT_SCRIPT = """\
import os, subprocess, sys
from pathlib import Path

ws, case, outside = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
print("agent at work:", case)
if case == "git_config":
    with open(ws / ".git" / "config", "a") as fh:
        fh.write("[core]\\n\\tfsmonitor = /bin/sh -c pwned\\n")
    os.makedirs(ws / ".git" / "hooks", exist_ok=True)
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\\necho pwned\\n")
elif case == "compose":
    with open(ws / "docker-compose.yaml", "a") as fh:
        fh.write("    privileged: true\\n")
elif case == "env":
    with open(ws / ".env", "a") as fh:
        fh.write("EXTRA=1\\n")
elif case == "dotdot":
    os.symlink("../../x", ws / "app" / "x")
elif case == "absolute":
    os.symlink(str(outside / "abs"), ws / "app" / "abs")
elif case == "symlink":
    (ws / "app" / "requirements.txt").unlink()
    os.symlink("link/evil", ws / "app" / "requirements.txt")
elif case == "clean":  # only looks at the repository (git may rewrite its index doing so)
    subprocess.run(["git", "status"], cwd=ws, check=True)
    subprocess.run(["git", "diff"], cwd=ws, check=True)
# A legitimate edit alongside, so the refusal is not just "nothing was changed".
with open(ws / "app" / "Dockerfile", "a") as fh:
    fh.write("# agent was here\\n")
"""


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Layout:
    tmp: Path
    ws: Path
    outside: Path
    store_root: Path


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout


def tree_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every directory, file and symlink under root: kind, mode and bytes (never followed)."""
    state: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if base / d not in skip]
        for name in [*dirnames, *filenames]:
            full = base / name
            if full in skip:
                continue
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                state[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return state


def forbidden_path(case: str, outside: Path) -> str:
    """The workspace-relative path an operator patch or a manifest names for the case."""
    return {
        "git_config": ".git/config",
        "compose": "docker-compose.yaml",
        "env": ".env",
        "dotdot": "../x",
        "absolute": str(outside / "abs"),
        "symlink": "app/link/evil",
    }[case]


def rule_copy_source(case: str, outside: Path) -> str:
    """A COPY source (build context ``app``) that makes the Python rule edit the path."""
    return {
        "git_config": "../.git/config",
        "compose": "../docker-compose.yaml",
        "env": "../.env",
        "dotdot": "../../x",
        "absolute": str(outside / "abs"),
        "symlink": "link/evil",
    }[case]


def dockerfile(copy_source: str) -> str:
    return (
        "FROM python:3.12-slim\n"
        "WORKDIR /app\n"
        f"COPY {copy_source} /app/requirements.txt\n"
        "RUN pip install -r /app/requirements.txt\n"
    )


def make_layout(tmp_path: Path, copy_source: str = "requirements.txt") -> Layout:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    outside.mkdir()
    # What a write or a delete outside the workspace would land on, so either shows.
    (tmp_path / "x").write_text("outside x\n")
    (outside / "abs").write_text("outside abs\n")
    (outside / "evil").write_text("outside evil\n")
    ws.mkdir()
    git(ws, "init", "-q")
    git(ws, "config", "user.name", "Test Operator")
    git(ws, "config", "user.email", "operator@example.invalid")
    files = {
        "docker-compose.yaml": "services:\n  app:\n    build: app\n",
        ".env": "SECRET=hunter2\n",
        "app/Dockerfile": dockerfile(copy_source),
        # Already lists requests, so the rule's fallback file never needs an edit.
        "app/requirements.txt": "requests\n",
        "app/extra-requirements.txt": "flask\n",
    }
    for rel, text in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    os.symlink(outside, ws / "app" / "link")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "stack")
    return Layout(tmp_path, ws, outside, tmp_path / "store")


def context(lay: Layout, source: str, **kwargs: object) -> StepContext:
    ctx = make_context(
        lay.store_root,
        service=service_context(lay.ws, allow=("**",)),
        parameters={StepName.PATCH: {"sources": [source], "allow": ["**"]}},
        **kwargs,  # type: ignore[arg-type]
    )
    ctx.plan.step(StepName.ANALYZE).result = {"analysis": {"signatures": [SIGNATURE]}}
    return ctx


def operator_diff(case: str, lay: Layout) -> str:
    path = forbidden_path(case, lay.outside)
    existing = lay.ws / path
    if case in ("git_config", "compose", "env"):
        old = existing.read_text().splitlines(keepends=True)
        body = difflib.unified_diff(old, [*old, "pwned = 1\n"], f"a/{path}", f"b/{path}")
        return f"diff --git a/{path} b/{path}\n" + "".join(body)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n"
    )


def write_manifest(ctx: StepContext, path: str, *, existed: bool) -> None:
    """A manifest naming the forbidden path (plus an allowed one), with pre-image bytes."""
    data = b"pre-image bytes\n"
    meta = {"existed": existed, "mode": 0o644, "sha256": hashlib.sha256(data).hexdigest()}
    allowed = b"older requirements\n"
    manifest = {
        path: meta,
        "app/requirements.txt": {
            "existed": True,
            "mode": 0o644,
            "sha256": hashlib.sha256(allowed).hexdigest(),
        },
    }
    run_dir = ctx.store.run_dir(ctx.run_id)
    (run_dir / "pre-images" / "app").mkdir(parents=True)
    (run_dir / "pre-images" / "app" / "requirements.txt").write_bytes(allowed)
    # Where a naive join would look for the forbidden path's pre-image (for ../x that is
    # the run folder itself), so a missing file is never what stops the restore.
    pre = run_dir / "pre-images" / path.lstrip("/")
    pre.parent.mkdir(parents=True, exist_ok=True)
    pre.write_bytes(data)
    (run_dir / MANIFEST).write_text(json.dumps(manifest))


def run_entry_point(entry: str, case: str, lay: Layout) -> StepContext:
    """Build the context for one entry point aimed at one forbidden path and return it."""
    if entry == "operator_patch":
        return context(lay, "operator_patch", requested_patch=operator_diff(case, lay))
    if entry == "rules":
        return context(lay, "rules")
    if entry == "agent":
        script = lay.tmp / "agent.py"
        script.write_text(AGENT_SCRIPT)
        template = " ".join(
            shlex.quote(a) for a in (sys.executable, str(script), "{workspace}", case)
        )
        return context(lay, "agent", agent_template=f"{template} {shlex.quote(str(lay.outside))}")
    ctx = context(lay, "rules")
    write_manifest(ctx, forbidden_path(case, lay.outside), existed=entry != "rollback_delete")
    return ctx


# ----------------------------------------------------------------------------- the matrix


def test_the_expected_reasons_are_the_ones_paths_gives(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    for case, reason in REASONS.items():
        path = forbidden_path(case, lay.outside)
        lexical = never_patchable_reason(path, [str(lay.ws / "docker-compose.yaml")])
        assert (lexical or symlink_problems(lay.ws, path)[0]) == reason


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", FORBIDDEN)
def test_each_never_patchable_path_is_refused_everywhere(
    tmp_path: Path, entry: str, case: str
) -> None:
    lay = make_layout(tmp_path, rule_copy_source(case, tmp_path / "outside"))
    ctx = run_entry_point(entry, case, lay)
    ws_before = tree_state(lay.ws)
    outside_before = tree_state(lay.tmp, skip=(lay.ws, lay.store_root))

    step = StepName.ROLLBACK if entry.startswith("rollback") else StepName.PATCH
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[step](ctx)

    message = failed.value.message
    if entry == "rules" and case in RULE_NAMES_NOTHING:
        assert "no patch derived" in message
        assert "tried: rules" in message
        signature = Signature(**SIGNATURE)
        edits = derive_rule_edits(
            [signature], workspace=lay.ws, build_context="app", dockerfile="app/Dockerfile"
        )
        assert edits == []
    else:
        reasons = AGENT_REASONS if entry == "agent" else REASONS
        assert reasons[case] in message
    assert failed.value.rollback is False
    assert tree_state(lay.ws) == ws_before
    assert tree_state(lay.tmp, skip=(lay.ws, lay.store_root)) == outside_before


# ----------------------------------------------------------------------------- controls


def test_the_rule_trick_does_reach_an_allowed_file(tmp_path: Path) -> None:
    """The COPY trick above really steers the rule: aimed at a harmless file, it edits it."""
    lay = make_layout(tmp_path, "extra-requirements.txt")
    ctx = context(lay, "rules")
    result = STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert [(f["path"], f["change"]) for f in result.result["files"]] == [
        ("app/extra-requirements.txt", "modified")
    ]
    assert (lay.ws / "app" / "extra-requirements.txt").read_text() == "flask\nrequests\n"


def test_an_agent_that_only_reads_git_is_accepted(tmp_path: Path) -> None:
    """The .git guard looks at config, hooks and info only, not what git status rewrites."""
    lay = make_layout(tmp_path)
    ctx = run_entry_point("agent", "clean", lay)
    outside_before = tree_state(lay.tmp, skip=(lay.ws, lay.store_root))
    result = STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert result.result["source"] == "agent"
    assert [(f["path"], f["change"]) for f in result.result["files"]] == [
        ("app/Dockerfile", "modified")
    ]
    assert tree_state(lay.tmp, skip=(lay.ws, lay.store_root)) == outside_before
