"""The deploy shape: the orchestrator image, its worker as a container, the job file.

The image is built once per session with `make image` (layer-cached: seconds when
nothing changed). The worker container runs on the host network with the Docker socket,
and every path it shares with the host (workspace, config, artifacts) is mounted at the
same absolute path, as docs/deploy.md prescribes.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# Fixtures shared with the orchestrator integration tests (a broken demo stack in a temp
# git repo; the API on the host against the session's database and a fresh queue).
from tests.integration.orchestrator.conftest import (  # noqa: F401
    broken_stack,
    start_orchestrator,
)
from tests.support.processes import REPO_ROOT

IMAGE = os.environ.get("MOONMIND_TEST_IMAGE", "moonmind/orchestrator:latest")
IMAGE_UID = 10001  # the image's `moonmind` user
SOCKET = "/var/run/docker.sock"


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}:\n{result.stderr}")
    return result


@dataclass
class ImageBuild:
    tag: str
    seconds: float
    output: str


@pytest.fixture(scope="session")
def orchestrator_image() -> ImageBuild:
    """`make image`, once per session."""
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={IMAGE}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"make image failed ({result.returncode}):\n{output[-6000:]}")
    return ImageBuild(IMAGE, time.monotonic() - started, output)


def socket_gid() -> str:
    return str(os.stat(SOCKET).st_gid)


def give_to_image_user(*paths: Path) -> None:
    """The worker runs as uid 10001: it must own the workspace it patches (git, atomic
    replaces) and be able to write the artifact folder, as on a real host where the
    operator runs it as the workspace owner."""
    for path in paths:
        subprocess.run(["chown", "-R", f"{IMAGE_UID}:{IMAGE_UID}", str(path)], check=True)


@dataclass
class Container:
    name: str

    def logs(self) -> str:
        result = docker("logs", self.name, check=False, timeout=30)
        return result.stdout + result.stderr

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logs():
                return
            state = docker(
                "inspect", "-f", "{{.State.Status}}", self.name, check=False
            ).stdout.strip()
            if state not in ("created", "running"):
                raise AssertionError(f"container {self.name} is {state!r}:\n{self.logs()}")
            time.sleep(0.5)
        raise AssertionError(f"no {needle!r} from {self.name} in {timeout}s:\n{self.logs()}")


@pytest.fixture
def run_container() -> Iterator[Callable[..., Container]]:
    """`docker run -d` the image on the host network; removed at the end of the test."""
    started: list[Container] = []

    def _run(
        *command: str,
        env: Mapping[str, str] = (),  # type: ignore[assignment]
        mounts: tuple[Path, ...] = (),
        socket: bool = True,
        workdir: Path | None = None,
    ) -> Container:
        name = f"mm-deploy-{uuid.uuid4().hex[:10]}"
        args = ["run", "-d", "--name", name, "--network", "host"]
        if socket:
            args += ["-v", f"{SOCKET}:{SOCKET}", "--group-add", socket_gid()]
        for path in mounts:  # the same absolute path inside as outside
            args += ["-v", f"{path}:{path}"]
        for key, value in dict(env).items():
            args += ["-e", f"{key}={value}"]
        if workdir is not None:
            args += ["-w", str(workdir)]
        docker(*args, IMAGE, *command)
        container = Container(name)
        started.append(container)
        return container

    yield _run
    for container in started:
        docker("rm", "-f", container.name, check=False, timeout=60)
