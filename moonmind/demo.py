"""`make demo`: break the bundled demo stack, let the orchestrator fix it, show the result.

Everything runs on the embedded default (SQLite and the filesystem Celery transport
under <home>/var). The demo stack is copied into <home>/var/demo/workspace as a git
repository so the orchestrator can patch it without touching examples/.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from moonmind.config import SettingsError, load_settings
from moonmind.follow import TERMINAL, FollowTimeout, follow_run
from moonmind.workflows.orchestrator.adapters.compose import ComposeError, detect_compose_command

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_STACK = REPO_ROOT / "examples" / "demo-stack"
WHEELHOUSE = REPO_ROOT / "var" / "wheelhouse"


@dataclass(frozen=True)
class Stack:
    root: Path  # a git repository holding the stack
    compose_file: Path
    project: str
    app_port: int
    sibling_port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def compose_cmd() -> list[str]:
    """The compose CLI the orchestrator picks too: ORCHESTRATOR_COMPOSE_COMMAND, then the
    v2 plugin, then v1 ``docker-compose`` (ComposeError when there is none)."""
    return list(_detected_compose_cmd())


@functools.cache
def _detected_compose_cmd() -> tuple[str, ...]:
    try:
        configured = load_settings().compose_command
    except SettingsError as exc:
        raise SystemExit(f"demo: bad setting: {exc}") from None
    return tuple(detect_compose_command(configured or None))


def compose(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run compose against the stack; never raises on a non-zero exit."""
    return subprocess.run(
        [*compose_cmd(), "-p", stack.project, "-f", str(stack.compose_file), *args],
        cwd=stack.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        check=False,
    )


def _render_ports(text: str, app_port: int, sibling_port: int) -> str:
    for var, port in (("APP_PORT", app_port), ("SIBLING_PORT", sibling_port)):
        text, count = re.subn(r"\$\{" + var + r":-\d+\}", str(port), text)
        if count == 0:
            raise ValueError(f"demo compose file has no ${{{var}:-...}} placeholder")
    return text


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def make_stack(
    dest: Path, *, project: str, app_port: int | None = None, sibling_port: int | None = None
) -> Stack:
    """Copy the demo stack to dest as a one-commit git repo with its ports baked in."""
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
    _git(dest, "config", "user.name", "MoonMind Demo")
    _git(dest, "config", "user.email", "demo@moonmind.invalid")
    _git(dest, "config", "commit.gpgsign", "false")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "demo stack")
    return Stack(dest, compose_file, project, app_port, sibling_port)


def compose_down(stack: Stack) -> None:
    try:
        compose(stack, "down", "-v", "--rmi", "local", "--remove-orphans", timeout=180)
    except (OSError, subprocess.SubprocessError):
        pass


# ------------------------------------------------------------------------- the demo


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def _pick(port: int) -> int:
    return port if port_is_free(port) else free_port()


def _prepare(home: Path, project: str, app_port: int, sibling_port: int) -> Stack:
    workspace = home / "var" / "demo" / "workspace"
    if (workspace / "docker-compose.yaml").exists():  # a previous demo: take it down first
        compose_down(Stack(workspace, workspace / "docker-compose.yaml", project, 0, 0))
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    return make_stack(
        workspace, project=project, app_port=_pick(app_port), sibling_port=_pick(sibling_port)
    )


def _break(stack: Stack) -> str:
    for args in (("build", "app"), ("up", "-d")):
        result = compose(stack, *args)
        if result.returncode != 0:
            raise SystemExit(
                f"demo: compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = compose(stack, "logs", "--no-color", "app").stdout
        match = re.search(r"ModuleNotFoundError: .*", logs)
        if match:
            return match.group(0)
        time.sleep(0.5)
    raise SystemExit("demo: the app did not crash as expected; see `compose logs app`")


def _wait_api(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: orchestrator exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"demo: orchestrator API did not answer on {base}")


def _follow(base: str, run_id: str, timeout: float) -> dict[str, object]:
    """Print each step transition as it happens; the run's detail once it has ended."""
    with httpx.Client(timeout=10) as client:
        try:
            follow_run(
                client,
                base,
                run_id,
                out=lambda line: _say(f"  {line}"),
                show_status=False,
                timeout=timeout,
            )
        except FollowTimeout:
            raise SystemExit(f"demo: run {run_id} did not finish within {timeout:.0f}s") from None
        detail = dict(client.get(f"{base}/orchestrator/runs/{run_id}").json())
    if detail["status"] not in TERMINAL:
        raise SystemExit(f"demo: lost the run's events while it was {detail['status']}")
    return detail


def _orchestrator_env(home: Path, stack: Stack, compose_command: list[str]) -> dict[str, str]:
    """The embedded default, pointed at the demo stack and the compose CLI the demo uses."""
    config = home / "var" / "demo" / "config.toml"
    config.write_text(
        "[orchestrator.services.app]\n"
        f'health_url = "http://127.0.0.1:{stack.app_port}/health"\n'
        "health_timeout_seconds = 90\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MOONMIND_", "ORCHESTRATOR_", "CELERY_", "STATSD_"))
    }
    env.update(
        MOONMIND_CONFIG=str(config),
        ORCHESTRATOR_WORKSPACE=str(stack.root),
        ORCHESTRATOR_COMPOSE_PROJECT=stack.project,
        ORCHESTRATOR_COMPOSE_COMMAND=shlex.join(compose_command),
        PYTHONUNBUFFERED="1",
    )
    return env


def _submit(base: str) -> str:
    response = httpx.post(
        f"{base}/orchestrator/runs",
        json={"instruction": "fix the missing dependency", "target_service": "app"},
        timeout=60,
    )
    if response.status_code != 202:
        raise SystemExit(f"demo: run was refused: {response.status_code} {response.text}")
    return str(response.json()["run_id"])


def run_demo(home: Path, *, api_port: int, app_port: int, sibling_port: int, project: str) -> int:
    home = home.resolve()
    try:
        command = compose_cmd()
    except ComposeError as exc:
        raise SystemExit(f"demo: {exc}") from None
    stack = _prepare(home, project, app_port, sibling_port)
    _say(f"demo stack in {stack.root} (project {project})")
    _say(f"app crashed as planned: {_break(stack)}")
    env = _orchestrator_env(home, stack, command)
    log_path = home / "var" / "demo" / "orchestrator.log"
    base = f"http://127.0.0.1:{api_port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moonmind.cli", "orchestrator", "up", "--port", str(api_port)],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_api(base, process)
            _say(f"orchestrator up on {base} (SQLite + local transport under {home / 'var'})")
            run_id = _submit(base)
            _say(f"run {run_id} queued; following it:")
            detail = _follow(base, run_id, timeout=600)
            return _report(home, stack, detail)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _report(home: Path, stack: Stack, detail: dict[str, object]) -> int:
    run_id = str(detail["run_id"])
    artifacts = home / "var" / "artifacts" / "spec_workflows" / run_id
    _say(
        f"run status: {detail['status']}"
        + (f" ({detail['message']})" if detail.get("message") else "")
    )
    diff = artifacts / "patch.diff"
    if diff.exists():
        _say("the change it made:")
        print(diff.read_text(), flush=True)
    try:
        health = httpx.get(f"http://127.0.0.1:{stack.app_port}/health", timeout=5)
        _say(f"health: 127.0.0.1:{stack.app_port}/health -> {health.status_code} {health.text}")
    except httpx.HTTPError as exc:
        _say(f"health: 127.0.0.1:{stack.app_port} does not answer ({exc})")
    _say(f"artifacts: {artifacts}")
    _say(
        "see the run: `make up` (embedded default, API on 127.0.0.1:8000), then "
        f"curl http://127.0.0.1:8000/orchestrator/runs/{run_id}"
    )
    _say(
        f"stop the demo stack: {' '.join(compose_cmd())} -p {stack.project} "
        f"-f {stack.compose_file} down --rmi local"
    )
    return 0 if detail["status"] == "succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moonmind-demo", description=__doc__)
    parser.add_argument("--home", type=Path, default=REPO_ROOT, help="where var/ goes")
    parser.add_argument("--api-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--app-port", type=int, default=18080)
    parser.add_argument("--sibling-port", type=int, default=18090)
    parser.add_argument("--project", default="moonmind-demo")
    args = parser.parse_args(argv)
    return run_demo(
        args.home,
        api_port=args.api_port or free_port(),
        app_port=args.app_port,
        sibling_port=args.sibling_port,
        project=args.project,
    )


if __name__ == "__main__":
    raise SystemExit(main())
