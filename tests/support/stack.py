"""Throw-away copies of the bundled demo stack for integration tests.

``make_stack`` turns ``examples/demo-stack`` into a self-contained git workspace
(ports baked into the compose file, wheelhouse copied into the app's build context)
so that tests and the orchestrator can patch, rebuild and roll it back freely.
Needs the images and wheelhouse from ``scripts/build-test-images``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_STACK = REPO_ROOT / "examples" / "demo-stack"
WHEELHOUSE = REPO_ROOT / "var" / "wheelhouse"


@dataclass(frozen=True)
class Stack:
    root: Path  # the temp workspace (a git repo, one commit)
    compose_file: Path  # root / "docker-compose.yaml"
    project: str
    app_port: int
    sibling_port: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_cmd() -> list[str]:
    """The compose CLI to use: docker-compose v1 if present, else `docker compose`."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def compose(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a compose command against the stack (does not raise on failure)."""
    cmd = [*compose_cmd(), "-p", stack.project, "-f", str(stack.compose_file), *args]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # no buildx plugin: classic builder
    return subprocess.run(
        cmd,
        cwd=stack.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _render_ports(text: str, app_port: int, sibling_port: int) -> str:
    """Replace the ``${APP_PORT:-18080}``-style defaults with fixed ports."""
    for var, port in (("APP_PORT", app_port), ("SIBLING_PORT", sibling_port)):
        text, n = re.subn(r"\$\{" + var + r":-\d+\}", str(port), text)
        if n == 0:
            raise ValueError(f"demo compose file has no ${{{var}:-...}} placeholder")
    return text


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def make_stack(
    dest: Path,
    *,
    project: str,
    app_port: int | None = None,
    sibling_port: int | None = None,
) -> Stack:
    """Copy the demo stack to ``dest`` (must not exist or be empty) as a one-commit git repo."""
    app_port = app_port if app_port is not None else free_port()
    sibling_port = sibling_port if sibling_port is not None else free_port()
    if not any(WHEELHOUSE.glob("*.whl")):
        raise FileNotFoundError(f"{WHEELHOUSE} has no wheels: run scripts/build-test-images")

    shutil.copytree(
        DEMO_STACK, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("wheelhouse")
    )
    compose_file = dest / "docker-compose.yaml"
    compose_file.write_text(_render_ports(compose_file.read_text(), app_port, sibling_port))
    shutil.copytree(WHEELHOUSE, dest / "app" / "wheelhouse", dirs_exist_ok=True)
    (dest / ".gitignore").write_text("app/wheelhouse/\n")

    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "config", "user.name", "MoonMind Tests")
    _git(dest, "config", "user.email", "tests@moonmind.invalid")
    _git(dest, "config", "commit.gpgsign", "false")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "demo stack")
    return Stack(
        root=dest,
        compose_file=compose_file,
        project=project,
        app_port=app_port,
        sibling_port=sibling_port,
    )


def compose_down(stack: Stack) -> None:
    """Remove the stack's containers, volumes and locally built images; ignore errors."""
    try:
        compose(stack, "down", "-v", "--rmi", "local", "--remove-orphans", timeout=180)
    except (OSError, subprocess.SubprocessError):
        pass


def wait_http(url: str, timeout: float = 30.0) -> int:
    """Poll ``url`` until it answers; return the HTTP status (0 if it never answered)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            if time.monotonic() >= deadline:
                return 0
            time.sleep(0.25)
