"""Issue 8: the orchestrator's state stays out of the workspace it patches, runs on two
services of one workspace keep to their own files, and the external agent is contained.

One stack for the module, run the README's way: a git repository holding the stack and
its config.toml, the API and one worker started *in* it on the embedded default, so the
SQLite file, the filesystem broker and the artifacts all live under the repository's own
``var/``. The stack has two services (``svc`` and ``twin``), each crashing for a reason
no rule knows, so every run goes to the scripted agent (tests/fixtures/agents/modal_agent.py),
whose behaviour the instruction picks.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import TERMINAL, inspect_container, remove_stack
from tests.support.processes import Process, start, start_api
from tests.support.stack import Stack, compose, free_port

AGENT = Path(__file__).resolve().parents[2] / "fixtures" / "agents" / "modal_agent.py"
SERVICES = ("svc", "twin")
# Secrets of the worker's own environment that the agent must never see.
HIDDEN = {
    "MOONMIND_DATABASE_URL": "sqlite:///var/orchestrator.db",
    "CELERY_BROKER_URL": "filesystem://",
    "DOCKER_HOST": "unix:///var/run/docker.sock",
    "MOONMIND_TEST_SECRET_TOKEN": "s3cr3t-t0k3n-never-for-agents",
}

DOCKERFILE = """\
FROM moonmind/busybox:1
COPY www /www
ENV PORT={port}
CMD ["sh", "-c", "test -n \\"$FIXED\\" || {{ echo 'fatal: widget calibration absent'; exit 3; }}; \
exec httpd -f -p 127.0.0.1:$PORT -h /www"]
"""


@dataclass
class Rig:
    stack: Stack
    ports: dict[str, int]
    env: dict[str, str]
    markers: Path
    api: Process
    base_url: str
    worker: Process | None = None

    def start_worker(self) -> None:
        self.worker = start(["orchestrator", "worker", "--concurrency", "2"], self.env, self.root)
        self.worker.wait_for_line("ready.", timeout=60)

    @property
    def root(self) -> Path:
        return self.stack.root

    def submit(self, service: str, instruction: str) -> str:
        body = {"instruction": instruction, "target_service": service}
        response = httpx.post(f"{self.base_url}/orchestrator/runs", json=body, timeout=60)
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def detail(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/orchestrator/runs/{run_id}", timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_terminal(self, run_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = self.detail(run_id)
            if detail["status"] in TERMINAL:
                return detail
            time.sleep(0.5)
        tail = self.worker.output()[-4000:] if self.worker else ""
        raise AssertionError(f"run {run_id} not finished: {self.detail(run_id)}\n{tail}")

    def artifact(self, run_id: str, relpath: str) -> Path:
        return self.root / "var" / "artifacts" / "spec_workflows" / run_id / relpath


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, timeout=60)


def _write_stack(root: Path, ports: dict[str, int], project: str, markers: Path) -> None:
    services = "".join(
        f'  {name}:\n    build: ./{name}\n    network_mode: host\n    restart: "no"\n'
        for name in SERVICES
    )
    (root / "docker-compose.yaml").parent.mkdir(parents=True)
    (root / "docker-compose.yaml").write_text(f"services:\n{services}")
    for name, port in ports.items():
        (root / name / "www").mkdir(parents=True)
        (root / name / "www" / "health").write_text("ok\n")
        (root / name / "Dockerfile").write_text(DOCKERFILE.format(port=port))
    agent = f"{sys.executable} {AGENT} --workspace {{workspace}} --analysis {{analysis}} "
    checks = "".join(
        f'[orchestrator.services.{name}]\nhealth_url = "http://127.0.0.1:{port}/health"\n'
        f"health_timeout_seconds = 60\nstable_seconds = 1\n"
        for name, port in ports.items()
    )
    (root / "config.toml").write_text(
        "[orchestrator]\n"
        f'compose_project = "{project}"\n'
        f"patch_agent = '{agent}--instruction {{instruction}}'\n"
        "patch_agent_timeout_seconds = 120\n"
        'patch_agent_env = ["AGENT_MARKER_DIR"]\n'
        "heartbeat_seconds = 1\nstale_after_seconds = 5\nsweep_interval_seconds = 1\n"
        f"{checks}"
    )
    (root / ".gitignore").write_text("var/\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@e.invalid", "commit", "-q", "-m", "s")


def _bring_up(stack: Stack) -> None:
    for args in (("build", *SERVICES), ("up", "-d")):
        result = compose(stack, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 60
    while any(inspect_container(stack, s)["State"]["Status"] != "exited" for s in SERVICES):
        assert time.monotonic() < deadline, "the services never crashed"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("contained")
    root, markers = base / "stack", base / "markers"
    markers.mkdir()
    ports = {name: free_port() for name in SERVICES}
    project = f"mmcontain{uuid.uuid4().hex[:8]}"
    _write_stack(root, ports, project, markers)
    stack = Stack(root, root / "docker-compose.yaml", project, ports["svc"], ports["twin"])
    # The README's way: run in the stack's repository with its config.toml and the defaults.
    env = {
        **HIDDEN,
        "MOONMIND_CONFIG": str(root / "config.toml"),
        "AGENT_MARKER_DIR": str(markers),
    }
    api = None
    rig = None
    try:
        _bring_up(stack)
        api, base_url = start_api(env, root)
        rig = Rig(stack, ports, env, markers, api, base_url)
        rig.start_worker()
        yield rig
    finally:
        if rig is not None and rig.worker is not None:
            rig.worker.stop()
        if api is not None:
            api.stop()
        remove_stack(stack)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 (and mode) of every file under root, .git included; var/ (the orchestrator's
    own state, which the runs write) left out."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "var" or rel.startswith("var/"):
            continue
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = f"{oct(path.stat().st_mode)}:{digest}"
        elif path.is_dir():
            found[rel] = "dir"
    return found


def _steps(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in detail["steps"]}


@pytest.mark.docker
def test_the_agent_sees_none_of_the_orchestrators_environment(rig: Rig) -> None:
    run_id = rig.submit("svc", f"agent-mode env {uuid.uuid4().hex}")
    detail = rig.wait_terminal(run_id)
    assert detail["status"] == "failed", detail
    assert "no patch derived" in _steps(detail)["patch"]["message"]
    log = rig.artifact(run_id, "agent.log").read_text()
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen["AGENT_MARKER_DIR"] == str(rig.markers)  # named in patch_agent_env
    assert "PATH" in seen
    assert "HOME" in seen
    for name in (*HIDDEN, "MOONMIND_CONFIG"):
        assert name not in seen, name
    assert not [k for k in seen if k.startswith(("MOONMIND_", "CELERY_", "ORCHESTRATOR_"))]
    for value in HIDDEN.values():
        assert value not in log


@pytest.mark.docker
def test_an_agent_that_exits_1_after_editing_leaves_the_workspace_byte_identical(
    rig: Rig,
) -> None:
    before = tree_digest(rig.root)
    run_id = rig.submit("svc", f"agent-mode fail {uuid.uuid4().hex}")
    detail = rig.wait_terminal(run_id)
    assert detail["status"] == "failed", detail
    steps = _steps(detail)
    assert "exited with code 1" in steps["patch"]["message"]
    assert all(steps[n]["status"] == "skipped" for n in ("build", "restart", "verify"))
    assert "edited" in rig.artifact(run_id, "agent.log").read_text()  # it did edit
    assert tree_digest(rig.root) == before


@pytest.mark.docker
def test_a_worker_killed_while_the_agent_runs_is_undone_by_the_recovery(rig: Rig) -> None:
    before = tree_digest(rig.root)
    token = uuid.uuid4().hex
    run_id = rig.submit("svc", f"agent-mode hang {token}")
    marker = rig.markers / f"{token}.edited"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, "the agent never edited"
        time.sleep(0.1)
    assert tree_digest(rig.root) != before  # the half-edit is on disk
    assert rig.worker is not None
    os.killpg(rig.worker.popen.pid, signal.SIGKILL)
    rig.worker.popen.wait(timeout=30)
    rig.start_worker()  # its sweeper finds the run's stale heartbeat and delivers patch again
    detail = rig.wait_terminal(run_id)
    assert detail["status"] == "failed", detail
    patch_rows = [s for s in detail["task_states"] if s["plan_step"] == "patch"]
    assert len({row["attempt"] for row in patch_rows}) >= 2, patch_rows
    assert tree_digest(rig.root) == before


@pytest.mark.docker
def test_two_runs_on_two_services_at_once_keep_to_their_own_files(rig: Rig) -> None:
    """Both agents edit, then wait for each other, so both patches are on disk together
    while each run compares its snapshots: each diff and each journal holds its own
    service's file only. Both runs succeed: their restarts overlap, and a service another
    active run holds may change under a restart without counting as disturbed."""
    token = uuid.uuid4().hex
    instruction = f"agent-mode fix {token} {' '.join(SERVICES)}"
    runs = {name: rig.submit(name, instruction) for name in SERVICES}
    for name, run_id in runs.items():
        detail = rig.wait_terminal(run_id)
        assert detail["status"] == "succeeded", (name, detail["message"])
        patch = _steps(detail)["patch"]
        assert patch["status"] == "succeeded", (name, patch["message"])
        diff = rig.artifact(run_id, "patch.diff").read_text()
        assert _touched(diff) == [f"{name}/Dockerfile"], diff
        manifest = json.loads(rig.artifact(run_id, "pre-images/manifest.json").read_text())
        assert set(manifest) == {f"{name}/Dockerfile"}
        assert "every service is edited" in rig.artifact(run_id, "agent.log").read_text()


@pytest.mark.docker
def test_a_run_with_its_state_under_the_workspaces_var_succeeds(rig: Rig) -> None:
    """Regression: with the defaults the artifacts (pre-images included), the SQLite file
    and the broker folder are under the repository's own var/, which the patch step once
    took for changes of its own patch and refused."""
    run_id = rig.submit("svc", f"agent-mode fix {uuid.uuid4().hex}")
    detail = rig.wait_terminal(run_id)
    assert detail["status"] == "succeeded", (detail["message"], _steps(detail))
    assert _touched(rig.artifact(run_id, "patch.diff").read_text()) == ["svc/Dockerfile"]
    for artifact in detail["artifacts"]:  # each recorded checksum is the file's on disk
        data = rig.artifact(run_id, artifact["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["checksum"], artifact["path"]
    assert "pre-images/manifest.json" in {a["path"] for a in detail["artifacts"]}
    assert (rig.root / "var" / "orchestrator.db").is_file()
    assert (rig.root / "var" / "celery").is_dir()
    health = httpx.get(f"http://127.0.0.1:{rig.ports['svc']}/health", timeout=5)
    assert health.status_code == 200


def _touched(diff: str) -> list[str]:
    return [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git")]
