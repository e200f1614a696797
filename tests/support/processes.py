"""Start real `moonmind` processes (API server, Celery worker) for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from moonmind.demo import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Process:
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in list(self.lines)):
                return
            if self.popen.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"process exited {self.popen.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise TimeoutError(f"no line containing {needle!r} within {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)


def _pump(process: Process) -> None:
    assert process.popen.stdout is not None
    for line in process.popen.stdout:
        process.lines.append(line.rstrip("\n"))


def start(args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> Process:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        [sys.executable, "-m", "moonmind.cli", *args],
        cwd=cwd or REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    process = Process(popen)
    threading.Thread(target=_pump, args=(process,), daemon=True).start()
    return process


def start_worker(env: Mapping[str, str], cwd: Path | None = None) -> Process:
    worker = start(["orchestrator", "worker", "--concurrency", "1"], env, cwd)
    worker.wait_for_line("ready.", timeout=60)
    return worker


def start_api(env: Mapping[str, str], cwd: Path | None = None, *args: str) -> tuple[Process, str]:
    """`moonmind orchestrator api` on a free port (``args``: more of its options)."""
    port = free_port()
    api = start(["orchestrator", "api", "--port", str(port), *args], env, cwd)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return api, base
        except httpx.HTTPError:
            pass
        if api.popen.poll() is not None:
            raise RuntimeError(f"API exited:\n{api.output()}")
        time.sleep(0.2)
    api.stop()
    raise TimeoutError(f"API did not answer on {base}:\n{api.output()}")
