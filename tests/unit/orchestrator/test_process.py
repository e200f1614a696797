"""A detached child (its own session) dies with the worker that started it, or on demand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from moonmind.workflows.orchestrator.adapters.process import kill_group

PARENT = """
import subprocess, sys, time
from moonmind.workflows.orchestrator.adapters.process import child_preexec
child = subprocess.Popen(["sleep", "60"], start_new_session=True, preexec_fn=child_preexec())
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its reaper is dead too
        return stat.read().split()[2] != "Z"


def test_child_is_killed_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)


def test_kill_group_stops_the_child_and_what_it_spawned(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen(
        ["sh", "-c", f"sleep 60 & echo $! > '{pid_file}'; wait"], start_new_session=True
    )
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the shell never started its child"
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    kill_group(proc, signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_kill_group_of_a_finished_child_is_harmless() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait(timeout=5)
    kill_group(proc)  # the group is gone: no error
