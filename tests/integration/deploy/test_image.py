"""The orchestrator image: what it carries, who it runs as, and what it will not import."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.deploy.conftest import (
    IMAGE_UID,
    REPO_ROOT,
    ImageBuild,
    docker,
    give_to_image_user,
)

pytestmark = [pytest.mark.deploy, pytest.mark.docker]


def _sh(image: str, script: str, *extra: str) -> str:
    """Run a shell script in a throw-away container of the image; its stdout."""
    return docker("run", "--rm", *extra, "--entrypoint", "sh", image, "-c", script).stdout


def test_make_image_builds_a_self_contained_non_root_image(
    orchestrator_image: ImageBuild,
) -> None:
    config = json.loads(docker("image", "inspect", orchestrator_image.tag).stdout)[0]["Config"]
    assert config["User"] == "moonmind"
    assert config["Healthcheck"]["Test"] == ["CMD", "moonmind-healthcheck"]
    assert config["Entrypoint"] == ["tini", "--", "moonmind-entrypoint"]
    assert config["Cmd"] == ["worker"]

    out = _sh(
        orchestrator_image.tag,
        "id -u; id -G; test -e /workspace && echo has-workspace || echo no-workspace;"
        " test -e /src && echo has-src || echo no-src;"
        " python -c 'import moonmind, api_service, importlib.metadata as m;"
        ' print(moonmind.__file__); print(m.version("moonmind-orchestrator"))\';'
        " docker --version; docker-compose version --short; git --version;"
        " grep -l 'pip install' /usr/local/bin/moonmind-* || echo no-pip-at-start",
    ).splitlines()
    uid, groups, workspace, src, module, version, docker_cli, compose, git, pip = out
    assert int(uid) == IMAGE_UID
    assert "0" not in groups.split()
    assert workspace == "no-workspace"
    assert src == "no-src"
    assert module == "/opt/moonmind/lib/python3.11/site-packages/moonmind/__init__.py"
    assert version == "0.1.0"
    assert docker_cli.startswith("Docker version ")
    assert compose.startswith("1.")
    assert git.startswith("git version ")
    assert pip == "no-pip-at-start"


def test_make_image_is_cached(orchestrator_image: ImageBuild) -> None:
    """The session fixture built (or found) the image; a second `make image` reuses every
    layer, so it costs seconds."""
    before = docker("image", "inspect", "-f", "{{.Id}}", orchestrator_image.tag).stdout.strip()
    started = time.monotonic()
    again = subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={orchestrator_image.tag}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    took = time.monotonic() - started
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = docker("image", "inspect", "-f", "{{.Id}}", orchestrator_image.tag).stdout.strip()
    if after != before:  # someone changed moonmind/ or api_service/ in between
        pytest.skip("the source tree changed between the two builds")
    assert "Running in" not in again.stdout, again.stdout[-3000:]
    assert took < 60, f"cached rebuild took {took:.0f}s"


PLANTED_INIT = (
    "import pathlib, sys\n"
    "pathlib.Path(__file__).with_name('IMPORTED').write_text('planted moonmind imported')\n"
    "sys.exit('PLANTED MOONMIND')\n"
)


def test_a_moonmind_package_in_the_workspace_is_never_imported(
    orchestrator_image: ImageBuild, tmp_path: Path, run_container
) -> None:
    """A patch to the target stack can never change the worker: the package lives in the
    image's venv, the working directory is not the workspace, and PYTHONSAFEPATH keeps
    even `python -c` / `python -m` run from inside the workspace off the current folder."""
    workspace = tmp_path / "stack"
    planted = workspace / "moonmind"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text(PLANTED_INIT)
    (planted / "cli.py").write_text(PLANTED_INIT)
    give_to_image_user(workspace)

    out = _sh(
        orchestrator_image.tag,
        "cd \"$ORCHESTRATOR_WORKSPACE\" && python -c 'import moonmind; print(moonmind.__file__)'"
        " && python -m moonmind.cli --help >/dev/null && moonmind --help >/dev/null"
        " && echo all-ran",
        "-v",
        f"{workspace}:{workspace}",
        "-e",
        f"ORCHESTRATOR_WORKSPACE={workspace}",
    ).splitlines()
    assert out[0] == "/opt/moonmind/lib/python3.11/site-packages/moonmind/__init__.py"
    assert not out[0].startswith(str(workspace))
    assert out[-1] == "all-ran"

    # The real worker role, started with the workspace as its working directory too
    # (embedded SQLite and filesystem broker: nothing but start-up is exercised).
    worker = run_container(
        "worker",
        env={"ORCHESTRATOR_WORKSPACE": str(workspace)},
        mounts=(workspace,),
        workdir=workspace,
    )
    worker.wait_for("ready.", timeout=90)
    assert "PLANTED" not in worker.logs()
    assert not (planted / "IMPORTED").exists()
    health = docker("exec", worker.name, "moonmind-healthcheck", check=False)
    assert health.returncode == 0, health.stdout + health.stderr


def test_worker_refuses_to_start_without_socket_access(
    orchestrator_image: ImageBuild, run_container
) -> None:
    """Without the socket's group the worker says which gid to add, in one line."""
    worker = run_container("worker", socket=False)
    docker("wait", worker.name, timeout=60)
    gid = str(Path("/var/run/docker.sock").stat().st_gid)
    logs = worker.logs()
    assert "no Docker socket at /var/run/docker.sock" in logs, logs

    name = f"{worker.name}-nogroup"
    result = docker(
        "run",
        "--rm",
        "--name",
        name,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        orchestrator_image.tag,
        "worker",
        check=False,
        timeout=60,
    )
    if gid in ("101",):  # the image's own docker group happens to match the host's
        pytest.skip("the host's docker gid equals the image's")
    assert result.returncode == 1
    assert f"--group-add {gid}" in result.stderr, result.stderr


def test_started_as_root_it_joins_the_socket_group_and_drops_to_moonmind(
    orchestrator_image: ImageBuild,
) -> None:
    gid = str(Path("/var/run/docker.sock").stat().st_gid)
    out = docker(
        "run",
        "--rm",
        "--user",
        "0",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        orchestrator_image.tag,
        "sh",
        "-c",
        "id -u; id -G; docker version --format ok",
    ).stdout.splitlines()
    assert out[0] == str(IMAGE_UID)
    assert gid in out[1].split()
    assert out[2] == "ok"
