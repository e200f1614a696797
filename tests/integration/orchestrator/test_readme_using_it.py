"""The README's "Using it" block, typed as a user would in their own stack's repository.

The commands come from the README itself (its first ``sh`` block under "## Using it"), so
this test breaks when the README drifts. They run in a fresh git repository holding the
broken demo stack, with the defaults: SQLite, the filesystem broker and the artifacts all
under the repository's own ``var/``. Only two things are adapted: the install line is
checked, not run (this venv is the installed package), and the API gets a free port
instead of 8000 (``--port`` on `up`, ``--api`` on `submit`), since tests run side by side.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.orchestrator.conftest import bring_up, remove_stack
from tests.support.stack import REPO_ROOT, Stack, free_port, make_stack, wait_http

README = REPO_ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


def readme_commands() -> list[list[str]]:
    """The lines of the first ``sh`` block of the README's "Using it" section."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Using it\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section is not None, "README has no '## Using it' section"
    block = re.search(r"^```sh\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block is not None, "README's 'Using it' has no ```sh block"
    return [words for line in block.group(1).splitlines() if (words := shlex.split(line, True))]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The broken demo stack in a repository whose folder name is its compose project
    (the default project name), built and started: `app` has crashed."""
    name = f"mmreadme{uuid.uuid4().hex[:8]}"
    built = make_stack(tmp_path / name, project=name)
    try:
        bring_up(built)
        yield built
    finally:
        remove_stack(built)


def _user_env() -> dict[str, str]:
    """A shell with the package installed and none of the orchestrator's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MOONMIND_", "ORCHESTRATOR_", "CELERY_", "STATSD_"))
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _porcelain(root: Path) -> set[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line for line in out.splitlines() if line}


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.docker
def test_readme_using_it_repairs_a_stack_in_its_own_repository(stack: Stack) -> None:
    commands = readme_commands()
    heads = [" ".join(words[:3]) for words in commands]
    assert heads[0].startswith("pip install"), commands
    assert heads[1].startswith("cd "), commands
    expected = [
        "moonmind init",
        "moonmind db upgrade",
        "moonmind orchestrator up",
        "moonmind orchestrator submit",
    ]
    assert [h for h in heads if h.startswith("moonmind")] == expected, commands
    assert commands[heads.index("moonmind orchestrator up")][-1] == "&", commands
    assert (VENV_BIN / "moonmind").exists()
    root, port, env = stack.root, free_port(), _user_env()
    background: list[subprocess.Popen[bytes]] = []
    after_init: set[str] | None = None
    log = (root.parent / "using-it.log").open("wb")
    try:
        for command in commands:
            words = [w for w in command if w != "&"]
            if words[:2] == ["pip", "install"] or words[0] == "cd":
                continue  # installed: this venv; the directory: the stack's repository
            if words[:3] == ["moonmind", "orchestrator", "up"]:
                words += ["--port", str(port)]
            if words[:3] == ["moonmind", "orchestrator", "submit"]:
                words += ["--api", f"http://127.0.0.1:{port}"]
            if command[-1] == "&":
                background.append(
                    subprocess.Popen(
                        words,
                        cwd=root,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                assert wait_http(f"http://127.0.0.1:{port}/health", timeout=90) == 200
                continue
            done = subprocess.run(
                words, cwd=root, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, (
                f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}\n"
                + (root.parent / "using-it.log").read_text(errors="replace")[-4000:]
            )
            if words[:2] == ["moonmind", "init"]:
                after_init = _porcelain(root)
                assert f"http://127.0.0.1:{stack.app_port}/health" in done.stdout
    finally:
        for process in background:
            _stop(process)
        log.close()
    assert after_init == {" M .gitignore", "?? config.toml"}
    # The orchestrator's state is in the repository's own var/, which git ignores...
    assert (root / "var" / "orchestrator.db").is_file()
    assert any((root / "var" / "artifacts" / "spec_workflows").glob("*/patch.diff"))
    # ...and the run changed nothing but the allow-listed requirements file.
    assert _porcelain(root) == after_init | {" M app/requirements.txt"}
    assert "pyyaml" in (root / "app" / "requirements.txt").read_text().lower()
    assert wait_http(f"http://127.0.0.1:{stack.app_port}/health", timeout=30) == 200
