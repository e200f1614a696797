"""scripts/ensure-docker replaces a dockerd that is alive but no longer answers.

CI machines have seen the engine wedge (a containerd shim disconnected and `docker info`
hung for good while the process lived on). The script used to wait on such an engine for
about 20 minutes; it now kills it and starts a new one. A private engine (socket, pid file,
data under one directory) stands in, so the shared engine is never touched; SIGSTOP makes
it alive and silent, as a wedged one is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import REPO_ROOT

pytestmark = pytest.mark.docker

ENSURE_DOCKER = REPO_ROOT / "scripts" / "ensure-docker"


@pytest.fixture
def private() -> Iterator[Path]:
    # Short: unix socket paths under it (containerd's among them) must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="ed-", dir="/tmp"))
    try:
        yield folder
    finally:
        subprocess.run(["pkill", "-KILL", "-f", str(folder)], check=False)
        # dockerd bind-mounts its data root onto itself; the mount outlives it.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{folder}/")), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def ensure(folder: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ENSURE_DOCKER_PRIVATE": str(folder),
        "ENSURE_DOCKER_WEDGED_AFTER_S": "3",
    }
    env.pop("DOCKER_HOST", None)
    return subprocess.run(
        [str(ENSURE_DOCKER)], capture_output=True, text=True, env=env, timeout=timeout
    )


def answers(folder: Path) -> bool:
    """`docker info` on the private engine succeeds within 10 s (a wedged one hangs)."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{folder}/docker.sock"}
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            env=env,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_dockerd_alive_but_silent_is_killed_and_replaced(private: Path) -> None:
    first = ensure(private, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "engine started" in first.stdout
    wedged = int((private / "dockerd.pid").read_text())
    assert answers(private)

    os.kill(wedged, signal.SIGSTOP)
    assert not answers(private)

    second = ensure(private, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"dockerd (pid {wedged}) has not answered" in second.stdout
    assert "engine started" in second.stdout
    replacement = int((private / "dockerd.pid").read_text())
    assert replacement != wedged
    assert not running(wedged)
    assert answers(private)


def test_a_private_engine_leaves_the_shared_one_alone(private: Path) -> None:
    shared_pid = Path("/var/run/docker.pid").read_text().strip()
    first = ensure(private, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (private / "docker.sock").is_socket()
    assert Path("/var/run/docker.pid").read_text().strip() == shared_pid
