"""Instructions on a healthy service, without an agent: each yields its one-line change and
a healthy service (issue 8, acceptance 3); a module name planted in the log is never
installed (acceptance 4).

One stack and one API + worker for the module. The stack's `app` is the demo service with
PyYAML already listed (healthy), built with the host network so pip (PyPI) and apt-get
(Debian) reach their registries; `planted` prints a fake ModuleNotFoundError and then dies
of an unrelated error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moonmind.workflows.orchestrator.steps.pins import _read_back, installed_version
from tests.integration.orchestrator.conftest import (
    TERMINAL,
    Orchestrator,
    inspect_container,
    remove_stack,
)
from tests.support.broker import delete_queues
from tests.support.processes import start_api
from tests.support.stack import REPO_ROOT, Stack, compose, make_stack, wait_http

pytestmark = pytest.mark.docker
SIX_VERSIONS = ("1.16.0", "1.17.0")

DOCKERFILE = """\
FROM moonmind/python-base:bookworm
WORKDIR /srv
COPY wheelhouse/ /wheels/
COPY requirements.txt .
RUN pip install --no-index --find-links /wheels -r requirements.txt
COPY app.py .
ENV PYTHONUNBUFFERED=1
CMD ["python3", "app.py"]
"""

# One fake line before the crash, one written right after the traceback (as an exit
# handler or a late log flush would), on the same stream so the order is fixed.
PLANTED_APP = """\
import sys
import traceback

print("ModuleNotFoundError: No module named 'plantedbefore'", flush=True)


def hook(kind, value, tb):
    traceback.print_exception(kind, value, tb)
    sys.stderr.write("ModuleNotFoundError: No module named 'plantedafter'\\n")


sys.excepthook = hook
ratio = 1 / 0
"""
PLANTED_DOCKERFILE = """\
FROM moonmind/python-base:bookworm
WORKDIR /srv
COPY requirements.txt app.py ./
CMD ["python3", "app.py"]
"""
PLANTED_SERVICE = """
  planted:
    build:
      context: ./planted
    network_mode: host
    restart: "no"
"""


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def _wheels() -> list[Path]:
    """Two versions of six (a small pure-Python wheel), fetched once with the host's pip:
    builds reach no package index, so the stack installs from its wheelhouse."""
    cache = REPO_ROOT / "var" / "test-wheels"
    for version in SIX_VERSIONS:
        if not list(cache.glob(f"six-{version}-*.whl")):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
                + ["--only-binary=:all:", "-d", str(cache), f"six=={version}"],
                check=True,
                capture_output=True,
            )
    return [w for v in SIX_VERSIONS for w in cache.glob(f"six-{v}-*.whl")]


def _prepare(stack: Stack) -> None:
    for wheel in _wheels():
        shutil.copy(wheel, stack.root / "app" / "wheelhouse" / wheel.name)
    (stack.root / "app" / "Dockerfile").write_text(DOCKERFILE)
    requirements = stack.root / "app" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "PyYAML\n")
    text = stack.compose_file.read_text()
    text = text.replace("      context: ./app\n", "      context: ./app\n      network: host\n")
    stack.compose_file.write_text(text.replace("\n  sibling:", PLANTED_SERVICE + "\n  sibling:"))
    planted = stack.root / "planted"
    planted.mkdir()
    (planted / "Dockerfile").write_text(PLANTED_DOCKERFILE)
    (planted / "requirements.txt").write_text("# nothing yet\n")
    (planted / "app.py").write_text(PLANTED_APP)
    for args in (["add", "-A"], ["commit", "-qm", "healthy app, planted log"]):
        subprocess.run(["git", *args], cwd=stack.root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def base_image() -> Iterator[str]:
    """A second base image, built locally (no registry): python-base plus a label."""
    ref = f"moonmind-test/pybase-{uuid.uuid4().hex[:8]}:v2"
    built = subprocess.run(
        ["docker", "build", "-q", "-t", ref, "-"],
        input="FROM moonmind/python-base:bookworm\nLABEL moonmind.test.base=v2\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    yield ref
    _docker("rmi", "-f", ref)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("intents")
    made = make_stack(root / "workspace", project=f"mmint{uuid.uuid4().hex[:8]}")
    try:
        _prepare(made)
        up = compose(made, "up", "-d", "--build")
        assert up.returncode == 0, up.stdout + up.stderr
        assert wait_http(f"http://127.0.0.1:{made.app_port}/health", timeout=60) == 200
        yield made
    finally:
        remove_stack(made)


@pytest.fixture(scope="module")
def orchestrator(
    stack: Stack, migrated_postgres: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orchestrator]:
    home = tmp_path_factory.mktemp("intents-orchestrator")
    queue = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
    config = home / "config.toml"
    config.write_text(
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        "health_timeout_seconds = 60\nstable_seconds = 1\n"
    )
    env = {
        "MOONMIND_CONFIG": str(config),
        "MOONMIND_DATABASE_URL": migrated_postgres,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": queue,
        "ORCHESTRATOR_WORKSPACE": str(stack.root),
        "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(home / "artifacts"),
    }
    api, base = start_api(env, home)
    running = Orchestrator(base, home / "artifacts", api, env, home)
    try:
        running.start_worker()
        yield running
    finally:
        api.stop()
        if running.worker is not None:
            running.worker.stop()
        delete_queues(amqp_url, queue)


def _run(orchestrator: Orchestrator, instruction: str, service: str = "app") -> dict[str, Any]:
    response = orchestrator.post_run(instruction=instruction, target_service=service)
    assert response.status_code == 202, response.text
    detail = orchestrator.wait_terminal(response.json()["run_id"], timeout=300)
    assert detail["status"] in TERMINAL
    return detail


def _succeeded(orchestrator: Orchestrator, instruction: str) -> dict[str, Any]:
    detail = _run(orchestrator, instruction)
    assert detail["status"] == "succeeded", orchestrator.explain(detail)
    return detail


def _changed_lines(orchestrator: Orchestrator, detail: dict[str, Any]) -> list[str]:
    diff = (orchestrator.artifact_root / detail["run_id"] / "patch.diff").read_text()
    return [
        line
        for line in diff.splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]


def _analysis(orchestrator: Orchestrator, detail: dict[str, Any]) -> dict[str, Any]:
    path = orchestrator.artifact_root / detail["run_id"] / "analysis.json"
    return dict(json.loads(path.read_text()))


def _step(detail: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in detail["steps"] if s["name"] == name)


def _in_app(stack: Stack, *argv: str) -> str:
    container = inspect_container(stack, "app")["Id"]
    done = _docker("exec", container, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_set_an_environment_variable(stack: Stack, orchestrator: Orchestrator) -> None:
    detail = _succeeded(orchestrator, "set LOG_LEVEL=debug on app")
    assert _changed_lines(orchestrator, detail) == ['+ENV LOG_LEVEL="debug"']
    diff = (orchestrator.artifact_root / detail["run_id"] / "patch.diff").read_text()
    assert diff.startswith("moonmind: set LOG_LEVEL in app/Dockerfile\n")
    intent = _analysis(orchestrator, detail)["intent"]
    assert intent["action"] == "set_env"
    assert intent["words"] == "set LOG_LEVEL=debug on app"
    assert (
        "instruction: set_env (set LOG_LEVEL in app/Dockerfile)"
        in _step(detail, "analyze")["message"]
    )
    assert "LOG_LEVEL=debug" in inspect_container(stack, "app")["Config"]["Env"]


def test_add_an_os_package(stack: Stack, orchestrator: Orchestrator) -> None:
    detail = _succeeded(orchestrator, "add curl to app")
    assert _changed_lines(orchestrator, detail) == [
        "+RUN apt-get update && apt-get install -y --no-install-recommends curl "
        "&& rm -rf /var/lib/apt/lists/*"
    ]
    assert _in_app(stack, "curl", "--version").startswith("curl ")


def test_add_a_python_dependency_pinned_to_what_was_installed(
    stack: Stack, orchestrator: Orchestrator
) -> None:
    detail = _succeeded(orchestrator, "add six")
    assert _changed_lines(orchestrator, detail) == ["+six"]
    installed = _in_app(stack, "python3", "-c", "import six; print(six.__version__)")
    assert installed == SIX_VERSIONS[-1]  # the newest the wheelhouse has
    assert f"pinned six=={installed} (as installed)" in _step(detail, "build")["message"]
    requirements = (stack.root / "app" / "requirements.txt").read_text().splitlines()
    assert requirements[-1] == f"six=={installed}"


def test_pin_then_remove_a_python_dependency(stack: Stack, orchestrator: Orchestrator) -> None:
    detail = _succeeded(orchestrator, "pin six to 1.16.0")
    changed = _changed_lines(orchestrator, detail)
    assert len(changed) == 2
    assert changed[0].startswith("-six==")
    assert changed[1] == "+six==1.16.0"
    assert _in_app(stack, "python3", "-c", "import six; print(six.__version__)") == "1.16.0"
    detail = _succeeded(orchestrator, "remove six")
    assert _changed_lines(orchestrator, detail) == ["-six==1.16.0"]
    assert "six" not in (stack.root / "app" / "requirements.txt").read_text()


def test_change_the_base_image(stack: Stack, orchestrator: Orchestrator, base_image: str) -> None:
    detail = _succeeded(orchestrator, f"use {base_image}")
    assert _changed_lines(orchestrator, detail) == [
        "-FROM moonmind/python-base:bookworm",
        f"+FROM {base_image}",
    ]
    image = inspect_container(stack, "app")["Image"]
    labels = _docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout
    assert '"moonmind.test.base":"v2"' in labels


def test_an_instruction_the_rules_cannot_apply_says_what_to_do(
    stack: Stack, orchestrator: Orchestrator
) -> None:
    before = (stack.root / "app" / "requirements.txt").read_bytes()
    detail = _run(orchestrator, "add it")
    assert detail["status"] == "failed"
    message = _step(detail, "patch")["message"]
    assert "'add it' names no package" in message
    assert "pass a patch" in message
    assert "configure an agent" in message
    assert (stack.root / "app" / "requirements.txt").read_bytes() == before


def test_a_planted_module_name_is_not_installed(stack: Stack, orchestrator: Orchestrator) -> None:
    """`planted` logs two fake ModuleNotFoundErrors (one right after the real traceback,
    inside the crash block) and dies of a ZeroDivisionError: nothing is installed."""
    requirements = stack.root / "planted" / "requirements.txt"
    detail = _run(orchestrator, "fix it", service="planted")
    analysis = _analysis(orchestrator, detail)
    assert "plantedafter" in analysis["crash_block"]  # it is in the block, and still ignored
    assert analysis["signatures"] == []
    assert detail["status"] == "failed", orchestrator.explain(detail)
    assert _step(detail, "build")["status"] == "skipped"
    assert requirements.read_text() == "# nothing yet\n"


def test_the_installed_version_is_read_from_the_image(tmp_path: Path) -> None:
    """The read-back behind the pin, on real images: Node's node_modules, Python's metadata."""
    (tmp_path / "node_modules" / "left-pad").mkdir(parents=True)
    (tmp_path / "node_modules" / "left-pad" / "package.json").write_text('{"version": "1.3.0"}')
    (tmp_path / "Dockerfile").write_text(
        "FROM moonmind/node-base:bookworm\nWORKDIR /app\nCOPY node_modules node_modules\n"
    )
    ref = f"moonmind-test/nodepin-{uuid.uuid4().hex[:8]}:1"
    built = _docker("build", "-q", "-t", ref, str(tmp_path))
    assert built.returncode == 0, built.stderr
    try:
        assert installed_version(ref, "node", "left-pad") == ("1.3.0", "")
        version, why = installed_version(ref, "node", "express")
        assert version is None
        assert "Cannot find module" in why
        pip = _docker("run", "--rm", ref, "python3", "-m", "pip", "--version").stdout.split()[1]
        assert installed_version(ref, "python", "pip") == (pip, "")
        image_id = _docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
        assert _read_back(image_id, "node", "left-pad") == ("1.3.0", "", "image")
        # the same image id again: read once, never again (an image does not change)
        _docker("rmi", "-f", ref)
        assert _read_back(image_id, "node", "left-pad") == ("1.3.0", "", "image (read before)")
    finally:
        _docker("rmi", "-f", ref)
