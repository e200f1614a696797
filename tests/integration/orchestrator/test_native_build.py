"""The build step runs the `docker build` docker-compose v1 would run, without compose.

The proof is the image: the plan's command (made from the resolved config) builds an image,
then `docker-compose build` of the same service builds from the same cache. Had the two
differed in any input (context, Dockerfile, stage, argument, label), compose would have
built new layers and another image id.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.adapters.compose import Compose
from moonmind.workflows.orchestrator.adapters.native_build import docker_build_argv
from moonmind.workflows.orchestrator.enums import StepName
from moonmind.workflows.orchestrator.steps import STEP_FUNCTIONS
from tests.support.steps import make_context, service_context

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
ARG GREETING=unset
RUN ["/bin/busybox", "sh", "-c", "echo $GREETING > /greeting"]
FROM base AS final
LABEL stage=final
FROM base AS unused
LABEL stage=unused
"""

COMPOSE = """\
version: "3"
services:
  app:
    build:
      context: ./app
      dockerfile: Custom.dockerfile
      target: final
      args:
        GREETING: hello-{token}
      labels:
        moonmind.test.native: "{token}"
    command: ["/bin/busybox", "true"]
"""


def _stack(root: Path, token: str) -> None:
    (root / "app").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "app" / "busybox")
    (root / "app" / "Custom.dockerfile").write_text(DOCKERFILE)
    (root / "docker-compose.yaml").write_text(COMPOSE.format(token=token))


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _image_id(ref: str) -> str:
    return _docker("image", "inspect", "-f", "{{.Id}}", ref)


@pytest.fixture
def native(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    token = uuid.uuid4().hex[:10]
    root = tmp_path / "workspace"
    _stack(root, token)
    project = f"mmnative{token}"
    compose = Compose(("docker-compose",), project, root / "docker-compose.yaml", root)
    config = compose.config()["services"]["app"]
    argv = docker_build_argv(compose.command, f"{project}_app", config)
    assert argv is not None
    yield root, project, argv
    for ref in (f"{project}_app", f"{project}-bycompose_app"):
        subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False)


def _build(root: Path, project: str, argv: list[str], artifacts: Path) -> str:
    ctx = make_context(
        root,
        service=service_context(root, project=project),
        parameters={StepName.BUILD: {"docker_argv": argv}},
        artifacts=artifacts,
    )
    result = STEP_FUNCTIONS[StepName.BUILD](ctx)
    assert result.result["new_image"] == _image_id(f"{project}_app")
    return (ctx.store.run_dir(ctx.run_id) / "build.log").read_text()


def test_the_plans_docker_build_is_the_build_compose_runs(
    native: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    root, project, argv = native
    log = _build(root, project, argv, tmp_path / "artifacts")
    assert log.splitlines()[0] == f"$ {' '.join(argv)}"
    ours = _image_id(f"{project}_app")
    token = project.removeprefix("mmnative")
    labels = _docker("image", "inspect", "-f", "{{json .Config.Labels}}", ours)
    assert f'"moonmind.test.native":"{token}"' in labels
    assert '"stage":"final"' in labels  # the target stage, not the last one
    greeting = _docker("run", "--rm", "--network", "none", ours, "/bin/busybox", "cat", "/greeting")
    assert greeting == f"hello-{token}"
    # compose's own build of the same service, tagged under another project: all cached
    built = subprocess.run(
        ["docker-compose", "-p", f"{project}-bycompose", "build", "app"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert _image_id(f"{project}-bycompose_app") == ours, built.stdout


def test_compose_builds_when_its_native_builder_is_off(
    native: tuple[Path, str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, project, argv = native
    monkeypatch.setenv("COMPOSE_DOCKER_CLI_BUILD", "0")
    log = _build(root, project, argv, tmp_path / "artifacts")
    assert log.splitlines()[0].startswith("$ docker-compose -p ")
