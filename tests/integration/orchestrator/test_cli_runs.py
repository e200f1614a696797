"""`moonmind runs ...` and dry runs, as subprocesses against a real API, worker and Docker.

One broken demo stack, API and worker for the module: ``app`` is unprotected (see
``fixed``), ``sibling`` is protected (pre-run, role sre: approvals, retry, cancel).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import TERMINAL, bring_up, health_config, remove_stack
from tests.support.auth import ALICE, BOB, VIC, Caller, principals_toml
from tests.support.broker import delete_queues
from tests.support.processes import Process, start_api, start_worker
from tests.support.stack import Stack, free_port, make_stack

pytestmark = pytest.mark.docker

FIX = "fix the missing dependency"
BAD_PATCH = "--- a/app/nope.txt\n+++ b/app/nope.txt\n@@ -1 +1 @@\n-x\n+y\n"


@dataclass
class Env:
    stack: Stack
    base: str
    api: Process
    worker: Process
    runs: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def cli(
        self, *args: str, caller: Caller | None = ALICE, extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONMIND_", "NO_CO"))}
        env["MOONMIND_API"] = self.base
        if caller is not None:
            env["MOONMIND_TOKEN"] = caller.token
        return subprocess.run(
            [sys.executable, "-m", "moonmind.cli", *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers=ALICE.headers, timeout=30)

    def detail(self, run_id: str) -> dict[str, Any]:
        response = self.get(f"/orchestrator/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, run_id: str, statuses: set[str], timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = self.detail(run_id)
            if detail["status"] in statuses:
                return detail
            time.sleep(0.3)
        raise AssertionError(
            f"{run_id} not in {statuses}: {detail}\n{self.worker.output()[-3000:]}"
        )

    def post(self, service: str, **extra: Any) -> str:
        body = {"instruction": FIX, "target_service": service, **extra}
        response = httpx.post(
            f"{self.base}/orchestrator/runs", json=body, headers=ALICE.headers, timeout=60
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])


def _config(stack: Stack) -> str:
    return (
        principals_toml(ALICE, BOB, VIC)
        + health_config(stack)
        + "\n[orchestrator.services.sibling]\n"
        + 'protected = true\napproval_requirement = "pre-run"\napprover_roles = ["sre"]\n'
    )


@pytest.fixture(scope="module")
def env(
    migrated_postgres: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cli-runs")
    stack = make_stack(tmp / "workspace", project=f"mmcli{uuid.uuid4().hex[:8]}")
    queue = f"orchestrator.run.test-{uuid.uuid4().hex[:10]}"
    (tmp / "config.toml").write_text(_config(stack))
    variables = {
        "MOONMIND_CONFIG": str(tmp / "config.toml"),
        "MOONMIND_DATABASE_URL": migrated_postgres,
        "CELERY_BROKER_URL": amqp_url,
        "ORCHESTRATOR_QUEUE": queue,
        "ORCHESTRATOR_WORKSPACE": str(stack.root),
        "ORCHESTRATOR_COMPOSE_PROJECT": stack.project,
        "ORCHESTRATOR_ARTIFACT_ROOT": str(tmp / "artifacts"),
    }
    processes: list[Process] = []
    try:
        bring_up(stack)
        api, base = start_api(variables, tmp)
        processes.append(api)
        processes.append(start_worker(variables, tmp))
        yield Env(stack, base, api, processes[1])
    finally:
        for process in processes:
            process.stop()
        remove_stack(stack)
        delete_queues(amqp_url, queue)


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under root (.git included), symlinks by their target."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "->" + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def _docker_state(stack: Stack) -> dict[str, str]:
    """Each container of the stack: its id, name, image id and start time. (Not the tags
    or the images themselves: other tests' `docker rmi -f <id>` of an identical build may
    untag or remove ours at any moment.)"""
    label = f"label=com.docker.compose.project={stack.project}"
    ids = _docker("ps", "-a", "-q", "--no-trunc", "--filter", label).split()
    assert len(ids) == 2, ids  # app and sibling
    state = {}
    for cid in ids:
        state[cid] = _docker("inspect", "-f", "{{.Name}} {{.Image}} {{.State.StartedAt}}", cid)
    return state


def _artifact_bytes(env: Env, run_id: str, path: str) -> bytes:
    artifacts = env.get(f"/orchestrator/runs/{run_id}/artifacts").json()["artifacts"]
    match = [a for a in artifacts if a["path"] == path]
    assert match, (path, [a["path"] for a in artifacts])
    response = env.get(f"/orchestrator/runs/{run_id}/artifacts/{match[-1]['artifact_id']}")
    assert response.status_code == 200
    return response.content


@pytest.fixture(scope="module")
def fixed(env: Env) -> Env:
    """On app: a failed operator patch; two dry runs (the rules' via the CLI, then that
    diff as an operator's), measured before and after; then the real fix."""
    env.runs["bad_patch"] = bad = env.post("app", patch=BAD_PATCH)
    env.wait(bad, TERMINAL)
    files, docker = _files(env.stack.root), _docker_state(env.stack)
    dry = env.cli("orchestrator", "submit", "--service", "app", "--dry-run", "--follow", FIX)
    env.facts.update(dry_cli=dry, files_before=files, docker_before=docker)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    env.runs["dry"] = dry.stdout.split()[1]
    diff = _artifact_bytes(env, env.runs["dry"], "patch.diff").decode()
    env.runs["dry_patch"] = env.post("app", patch=diff, dry_run=True)  # an operator's diff
    env.wait(env.runs["dry_patch"], TERMINAL)
    env.facts.update(files_after_dry=_files(env.stack.root))
    env.facts.update(docker_after_dry=_docker_state(env.stack))
    env.runs["real"] = real = env.post("app")
    env.wait(real, TERMINAL)
    env.facts.update(files_after_real=_files(env.stack.root))
    env.facts.update(docker_after_real=_docker_state(env.stack))
    return env


def test_dry_run_changes_nothing_and_its_diff_is_the_one_the_real_run_applies(
    fixed: Env,
) -> None:
    dry = fixed.facts["dry_cli"]
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines()[-1].startswith("run succeeded"), dry.stdout
    assert "dry run:" in dry.stdout
    detail = fixed.detail(fixed.runs["dry"])
    assert detail["status"] == "succeeded"
    assert detail["dry_run"] is True
    assert [s["name"] for s in detail["steps"]] == ["analyze", "patch"]
    operator = fixed.detail(fixed.runs["dry_patch"])
    assert operator["status"] == "succeeded", operator["message"]
    assert operator["dry_run"] is True
    # After both dry runs: every file's bytes, every image id and container id as before.
    assert fixed.facts["files_after_dry"] == fixed.facts["files_before"]
    assert fixed.facts["docker_after_dry"] == fixed.facts["docker_before"]

    real = fixed.detail(fixed.runs["real"])
    assert real["status"] == "succeeded"
    assert real["dry_run"] is False
    dry_diff = _artifact_bytes(fixed, fixed.runs["dry"], "patch.diff")
    assert b"+" in dry_diff
    assert b"requirements" in dry_diff
    assert dry_diff == _artifact_bytes(fixed, fixed.runs["real"], "patch.diff")
    # The same measures do see a real run's changes.
    assert fixed.facts["files_after_real"] != fixed.facts["files_before"]
    assert fixed.facts["docker_after_real"] != fixed.facts["docker_before"]

    plan = json.loads(_artifact_bytes(fixed, fixed.runs["dry"], "plan.json"))
    assert plan["dry_run"] is True
    assert plan["diff_sha256"] == hashlib.sha256(dry_diff).hexdigest()
    assert [step["name"] for step in plan["then"]] == ["build", "restart", "verify"]
    listed = fixed.cli("runs", "list", "--service", "app", "--json")
    flags = {r["run_id"]: r["dry_run"] for r in json.loads(listed.stdout)["runs"]}
    assert (flags[fixed.runs["dry"]], flags[fixed.runs["real"]]) == (True, False)
    shown = fixed.cli("runs", "show", fixed.runs["dry"])
    assert shown.returncode == 0
    assert "(dry run" in shown.stdout.splitlines()[0]


def test_show_logs_and_artifacts(fixed: Env, tmp_path: Path) -> None:
    real = fixed.runs["real"]
    shown = fixed.cli("runs", "show", real)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"run {real}: succeeded"
    steps = [line.split() for line in lines if line.startswith("  ") and len(line.split()) >= 3]
    timed = {words[0]: words[2] for words in steps if words[1] == "succeeded"}
    assert set(timed) >= {"analyze", "patch", "build", "restart", "verify"}, lines
    assert all(value.endswith("s") and value[0].isdigit() for value in timed.values())
    assert any(line.startswith("verify: succeeded") for line in lines)
    assert any(line.startswith("+") and not line.startswith("+++") for line in lines)
    assert "\x1b[" not in shown.stdout  # not a terminal: no colour
    as_json = json.loads(fixed.cli("runs", "show", real, "--json").stdout)
    assert (as_json["run_id"], as_json["status"]) == (real, "succeeded")

    failed = fixed.cli("runs", "show", fixed.runs["bad_patch"])
    assert failed.returncode == 1, failed.stdout + failed.stderr
    out = failed.stdout.splitlines()
    first = next(i for i, line in enumerate(out) if line.startswith("diagnosis:"))
    assert first < out.index("steps:"), out  # why it fails, before how the run went
    assert "python_missing_module" in out[first]

    logs = fixed.cli("runs", "logs", real)
    assert logs.returncode == 0, logs.stderr
    assert any(line.startswith("verify   succeeded") for line in logs.stdout.splitlines())
    assert any(line.startswith("  build| ") for line in logs.stdout.splitlines())
    assert logs.stdout.splitlines()[-1].startswith("run succeeded")
    events = fixed.cli("runs", "logs", real, "--follow", "--json")
    parsed = [json.loads(line) for line in events.stdout.splitlines()]
    assert parsed[-1] == {"event": "status", "data": parsed[-1]["data"]}
    assert parsed[-1]["data"]["status"] == "succeeded"
    assert fixed.cli("runs", "logs", fixed.runs["bad_patch"], "--follow").returncode == 1

    listing = fixed.cli("runs", "artifacts", real)
    assert listing.returncode == 0
    assert "patch.diff" in listing.stdout
    target = tmp_path / "got.diff"
    saved = fixed.cli(
        "runs", "artifacts", real, "--download", "patch.diff", "--output", str(target), "--json"
    )
    assert saved.returncode == 0, saved.stderr
    assert target.read_bytes() == _artifact_bytes(fixed, real, "patch.diff")
    assert json.loads(saved.stdout)["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    piped = fixed.cli("runs", "artifacts", real, "--download", "verify.log", "--output", "-")
    assert piped.stdout.encode() == _artifact_bytes(fixed, real, "verify.log")
    names = [
        a["path"]
        for a in json.loads(fixed.cli("runs", "artifacts", real, "--json").stdout)["artifacts"]
    ]
    assert "analysis.json" in names
    assert "build.log" in names


def _in_a_terminal(env: Env, *args: str, extra: dict[str, str]) -> str:
    """stdout of a CLI command whose stdout is a pseudo-terminal."""
    controller, terminal = pty.openpty()
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MOONMIND_", "NO_CO"))}
    variables.update(MOONMIND_API=env.base, MOONMIND_TOKEN=ALICE.token, **extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "moonmind.cli", *args], stdout=terminal, env=variables
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode()


def test_list_filters_fits_the_terminal_and_colours_only_a_terminal(fixed: Env) -> None:
    newest = json.loads(
        fixed.cli("runs", "list", "--service", "app", "--limit", "2", "--json").stdout
    )
    assert [r["run_id"] for r in newest["runs"]] == [fixed.runs["real"], fixed.runs["dry_patch"]]
    failed = json.loads(fixed.cli("runs", "list", "--status", "failed", "--json").stdout)["runs"]
    assert fixed.runs["bad_patch"] in [r["run_id"] for r in failed]
    assert {r["status"] for r in failed} == {"failed"}

    narrow = fixed.cli("runs", "list", extra={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stdout.splitlines()[0].startswith("ID ")
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    assert fixed.runs["real"] in narrow.stdout
    assert "succeeded (dry)" in narrow.stdout
    wide = fixed.cli("runs", "list", extra={"COLUMNS": "200"})
    assert "REQUESTER" in wide.stdout.splitlines()[0]
    assert " alice " in wide.stdout

    coloured = _in_a_terminal(fixed, "runs", "list", extra={"COLUMNS": "200"})
    assert "\x1b[32msucceeded" in coloured
    plain = _in_a_terminal(fixed, "runs", "list", extra={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "succeeded" in plain
    assert "\x1b[" not in plain


def test_exit_codes_for_refusals_missing_runs_and_no_api(fixed: Env) -> None:
    missing = fixed.cli("runs", "show", str(uuid.uuid4()))
    assert missing.returncode == 4, missing.stderr
    assert "run_not_found" in missing.stderr, missing.stderr
    assert fixed.cli("runs", "show", "not-a-uuid").returncode == 2
    nameless = fixed.cli("runs", "artifacts", fixed.runs["real"], "--download", "nope.txt")
    assert nameless.returncode == 4
    assert "patch.diff" in nameless.stderr
    anonymous = fixed.cli("runs", "list", caller=None)
    assert anonymous.returncode == 3
    assert "unauthenticated" in anonymous.stderr
    stranger = fixed.cli("runs", "list", caller=Caller("mallory", ("admin",)))
    assert stranger.returncode == 3
    viewer = fixed.cli("runs", "cancel", fixed.runs["real"], caller=VIC)
    assert viewer.returncode == 3
    assert "forbidden" in viewer.stderr
    ended = fixed.cli("runs", "cancel", fixed.runs["real"])
    assert ended.returncode == 6
    assert "already ended" in ended.stderr
    nowhere = fixed.cli("runs", "list", "--api", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 5
    assert "cannot reach the API" in nowhere.stderr
    assert "Traceback" not in missing.stderr + anonymous.stderr + nowhere.stderr


def test_approve_retry_and_cancel_on_a_protected_service(env: Env) -> None:
    run_id = env.post("sibling")
    env.wait(run_id, {"awaiting_approval"})
    so_far = env.cli("runs", "logs", run_id)  # not ended, no --follow: what exists, then stop
    assert so_far.returncode == 0, so_far.stderr
    assert "analyze  succeeded" in so_far.stdout
    assert so_far.stdout.endswith("(run is awaiting_approval; --follow to keep watching)\n")
    own = env.cli("runs", "approve", run_id, "--as", "alice")
    assert own.returncode == 3, own.stderr
    assert "four-eyes" in own.stderr, own.stderr
    reader = env.cli("runs", "approve", run_id, "--as", "vic", caller=VIC)
    assert reader.returncode == 3
    assert env.cli("runs", "approve", run_id, caller=BOB).returncode == 2  # who approves?
    granted = env.cli("runs", "approve", run_id, "--as", "bob", "--json", caller=BOB)
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["approval"]["approver_id"] == "bob"
    assert json.loads(granted.stdout)["approval"]["role"] == "sre"  # the gate's role

    followed = env.cli("runs", "logs", run_id, "--follow")  # healthy: no patch derived
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert followed.stdout.splitlines()[-1].startswith("run failed")
    assert env.cli("runs", "show", run_id).returncode == 1

    too_late = env.cli("runs", "retry", run_id, "--from", "verify")
    assert too_late.returncode == 6, too_late.stderr
    assert "resume from patch" in too_late.stderr, too_late.stderr
    retried = env.cli("runs", "retry", run_id, "--from", "patch", "--reason", "once more")
    assert retried.returncode == 0, retried.stderr
    # the approval it had is void: resumed at its gated step (pre-run: patch), it waits again
    assert f"run {run_id}: awaiting_approval" in retried.stdout, retried.stdout
    again = env.cli("runs", "approve", run_id, "--as", "bob", caller=BOB)
    assert again.returncode == 0, again.stderr
    detail = env.wait(run_id, TERMINAL)
    attempts = [t["plan_step"] for t in detail["task_states"]]
    assert attempts.count("analyze") == 1  # resumed at patch: analyze did not run again
    assert attempts.count("patch") == 2
    assert "retry from patch: once more" in detail["metrics_snapshot"]["retries"]

    waiting = env.post("sibling")
    env.wait(waiting, {"awaiting_approval"})
    cancelled = env.cli("runs", "cancel", waiting)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {waiting}: cancelled" in cancelled.stdout
    again = env.cli("runs", "cancel", waiting, "--json")
    assert again.returncode == 6, again.stdout + again.stderr
    assert env.cli("runs", "show", waiting).returncode == 1
