"""The Docker engine the integration tests rely on: real engine, real images, no mocks.

Everything listens on 127.0.0.1 only (host networking), and nothing is pulled from a
registry: images are built FROM scratch or imported by scripts/build-test-images.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import (
    REPO_ROOT,
    Stack,
    compose,
    compose_down,
    free_port,
    make_stack,
    wait_http,
)

pytestmark = pytest.mark.docker

ENSURE_DOCKER = REPO_ROOT / "scripts" / "ensure-docker"
BUILD_IMAGES = REPO_ROOT / "scripts" / "build-test-images"


def run(*cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # no buildx here: use the classic builder
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def docker_ok(*args: str, timeout: float = 120) -> str:
    proc = run("docker", *args, timeout=timeout)
    assert proc.returncode == 0, f"docker {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def engine() -> None:
    proc = run(ENSURE_DOCKER, timeout=900)  # may apt-get install and start dockerd
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def test_images(engine: None) -> None:
    proc = run(BUILD_IMAGES, timeout=900)  # cached by tag: seconds when already built
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ensure_docker_is_idempotent() -> None:
    first = run(ENSURE_DOCKER, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run(ENSURE_DOCKER, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already reachable" in second.stdout
    assert "Docker Engine" in second.stdout
    assert run("docker", "info").returncode == 0


def test_scratch_busybox_httpd_on_host_network(engine: None, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    ctx = tmp_path / "ctx"
    (ctx / "www").mkdir(parents=True)
    (ctx / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (ctx / "busybox").chmod(0o755)
    (ctx / "www" / "index.html").write_text(f"hello {token}\n")
    (ctx / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nENTRYPOINT ["/bin/busybox"]\n'
    )
    tag = f"moonmind-test/busybox-httpd:{token[:12]}"
    name = f"mmtest-httpd-{token[:12]}"
    port = free_port()
    try:
        docker_ok("build", "-q", "-t", tag, str(ctx))
        docker_ok(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            tag,
            "httpd",
            "-f",
            "-p",
            f"127.0.0.1:{port}",
            "-h",
            "/www",
        )
        url = f"http://127.0.0.1:{port}/index.html"
        assert wait_http(url, timeout=30) == 200, run("docker", "logs", name).stderr
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.read().decode() == f"hello {token}\n"
    finally:
        run("docker", "rm", "-f", name)
        run("docker", "rmi", "-f", tag)
    assert run("docker", "container", "inspect", name).returncode != 0
    assert run("docker", "image", "inspect", tag).returncode != 0


@pytest.fixture
def demo_stack(test_images: None, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(tmp_path / "stack", project=f"mmtest{uuid.uuid4().hex[:10]}")
    try:
        yield stack
    finally:
        compose_down(stack)


def _container_state(stack: Stack, service: str) -> dict[str, object]:
    cid = compose(stack, "ps", "-q", service).stdout.strip()
    assert cid, f"no container for {service}"
    return dict(json.loads(docker_ok("inspect", "-f", "{{json .State}}", cid)))


def test_demo_stack_app_crashes_without_yaml_and_sibling_serves(demo_stack: Stack) -> None:
    stack = demo_stack
    built = compose(stack, "build", "app", timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    # docker-compose v1 names built images <project>_<service>.
    assert run("docker", "image", "inspect", f"{stack.project}_app").returncode == 0

    up = compose(stack, "up", "-d", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr

    body = ""
    assert wait_http(f"http://127.0.0.1:{stack.sibling_port}/", timeout=30) == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.sibling_port}/", timeout=5) as resp:
        body = resp.read().decode()
    assert "moonmind demo sibling: ok" in body

    deadline = time.monotonic() + 60
    state = _container_state(stack, "app")
    while state.get("Status") != "exited" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _container_state(stack, "app")
    assert state.get("Status") == "exited", state
    assert state.get("ExitCode") == 1, state
    logs = compose(stack, "logs", "--no-color", "app")
    assert "ModuleNotFoundError: No module named 'yaml'" in logs.stdout + logs.stderr

    compose_down(stack)
    assert run("docker", "image", "inspect", f"{stack.project}_app").returncode != 0
    assert not compose(stack, "ps", "-q").stdout.strip()
