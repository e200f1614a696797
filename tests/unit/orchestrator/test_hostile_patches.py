"""Hostile operator patches: each is refused and leaves the workspace byte-identical.

test_never_patchable.py covers the forbidden *paths* through every entry point (one
modified file each). This table covers what an operator's diff can do beyond naming a
path: escape in the middle of a path, plant a symlink, write through one already in the
tree, reach ``.git/hooks``, rename an allowed file to a forbidden name and back, ship
binary content, flip the executable bit, or touch 10,000 files. Every file, directory and
link of the workspace (``.git/`` included) and of its surroundings is hashed before and
after; the allow-list is ``**``, so no refusal comes from it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS, StepFailed
from tests.unit.orchestrator.test_never_patchable import (
    Layout,
    context,
    git,
    make_layout,
    tree_state,
)


def new_file(path: str, text: str = "pwned\n", mode: str = "100644") -> str:
    lines = text.splitlines(keepends=True)
    body = "".join(f"+{line}" for line in lines)
    if not text.endswith("\n"):  # a symlink's target
        body += "\n\\ No newline at end of file\n"
    return (
        f"diff --git a/{path} b/{path}\nnew file mode {mode}\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def append_line(lay: Layout, path: str, line: str = "pwned = 1\n") -> str:
    old = (lay.ws / path).read_text().splitlines(keepends=True)
    context_lines = "".join(f" {x}" for x in old)
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1,{len(old)} +1,{len(old) + 1} @@\n{context_lines}+{line}"
    )


def rename(source: str, target: str) -> str:
    return (
        f"diff --git a/{source} b/{target}\nsimilarity index 100%\n"
        f"rename from {source}\nrename to {target}\n"
    )


def binary_patch(lay: Layout) -> str:
    """A real ``GIT binary patch`` adding app/blob.bin, made by git in a scratch repository."""
    scratch = lay.tmp / "scratch"
    (scratch / "app").mkdir(parents=True)
    git(scratch, "init", "-q")
    (scratch / "app" / "blob.bin").write_bytes(b"\x00\x01\x02 not text\xff")
    git(scratch, "add", "-A")
    diff = git(scratch, "diff", "--cached", "--binary")
    assert "GIT binary patch" in diff
    return diff


def mode_change(path: str) -> str:
    return f"diff --git a/{path} b/{path}\nold mode 100644\nnew mode 100755\n"


def ten_thousand_files(_: Layout) -> str:
    return "".join(new_file(f"app/gen/f{i:05d}.txt", f"{i}\n") for i in range(10_000))


# case id -> (the diff, given the layout; a phrase the refusal must contain)
CASES: dict[str, tuple[Callable[[Layout], str], str]] = {
    "dotdot": (lambda lay: new_file("../x"), "escapes the workspace"),
    "dotdot-inside": (lambda lay: new_file("app/../../x"), "escapes the workspace"),
    "absolute": (lambda lay: new_file(str(lay.outside / "abs")), "absolute"),
    "symlink-created": (
        lambda lay: new_file("app/newlink", str(lay.outside), mode="120000"),
        "a symlink (mode 120000)",
    ),
    "symlink-created-inside": (
        lambda lay: new_file("app/newlink", "requirements.txt", mode="120000"),
        "a symlink (mode 120000)",
    ),
    "symlink-in-tree": (lambda lay: new_file("app/link/evil"), "escapes workspace"),
    "git-hook": (lambda lay: new_file(".git/hooks/post-checkout", "#!/bin/sh\n"), ".git"),
    "git-config": (lambda lay: append_line(lay, ".git/config", "\tfsmonitor = x\n"), ".git"),
    "compose": (
        lambda lay: append_line(lay, "docker-compose.yaml", "    privileged: true\n"),
        "compose",
    ),
    "env": (lambda lay: append_line(lay, ".env"), ".env"),
    "env-new": (lambda lay: new_file("app/.env.local"), ".env"),
    "rename-to-forbidden": (lambda lay: rename("app/requirements.txt", ".env.production"), ".env"),
    "rename-back": (lambda lay: rename(".env", "app/requirements-2.txt"), ".env"),
    "binary": (binary_patch, "binary patch for app/blob.bin"),
    "mode-executable": (lambda lay: mode_change("app/Dockerfile"), "executable (mode 100755)"),
    "new-executable": (
        lambda lay: new_file("app/run.sh", "#!/bin/sh\n", mode="100755"),
        "executable",
    ),
    "10000-files": (ten_thousand_files, "patch touches 10000 files"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_patch_is_refused_and_nothing_changes(tmp_path: Path, case: str) -> None:
    lay = make_layout(tmp_path)
    make_diff, phrase = CASES[case]
    ctx = context(lay, "operator_patch", requested_patch=make_diff(lay))
    ws_before = tree_state(lay.ws)  # .git included
    around_before = tree_state(lay.tmp, skip=(lay.ws, lay.store_root))

    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.PATCH](ctx)

    assert phrase in failed.value.message, failed.value.message
    assert failed.value.rollback is False
    assert tree_state(lay.ws) == ws_before
    assert tree_state(lay.tmp, skip=(lay.ws, lay.store_root)) == around_before


def test_a_plain_text_patch_of_the_same_shape_applies(tmp_path: Path) -> None:
    """Control: the harness does apply an ordinary diff (the refusals above are real)."""
    lay = make_layout(tmp_path)
    diff = append_line(lay, "app/requirements.txt", "flask\n") + new_file("app/notes.txt")
    result = STEP_FUNCTIONS[StepName.PATCH](context(lay, "operator_patch", requested_patch=diff))
    changed = sorted((f["path"], f["change"]) for f in result.result["files"])
    assert changed == [("app/notes.txt", "added"), ("app/requirements.txt", "modified")]
    assert (lay.ws / "app" / "requirements.txt").read_text() == "requests\nflask\n"


AGENT_CHMOD = """\
import os, sys
from pathlib import Path

ws = Path(sys.argv[1])
(ws / "app" / "requirements.txt").write_text("requests\\nflask\\n")
os.chmod(ws / "app" / "Dockerfile", 0o755)
"""


def test_an_agent_that_makes_a_file_executable_is_refused(tmp_path: Path) -> None:
    """The snapshot check refuses what an operator diff's ``new mode 100755`` is refused for."""
    lay = make_layout(tmp_path)
    script = lay.tmp / "agent.py"
    script.write_text(AGENT_CHMOD)
    template = " ".join(shlex.quote(a) for a in (sys.executable, str(script), "{workspace}"))
    ctx = context(lay, "agent", agent_template=template)
    ws_before = tree_state(lay.ws)
    with pytest.raises(StepFailed) as failed:
        STEP_FUNCTIONS[StepName.PATCH](ctx)
    assert "app/Dockerfile: file made executable" in failed.value.message
    assert tree_state(lay.ws) == ws_before
