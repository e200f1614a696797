"""Agent adapter tests with real subprocesses."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.adapters.agent import build_agent_argv, run_agent


def test_argv_substitution_keeps_values_as_single_arguments(tmp_path: Path) -> None:
    argv = build_agent_argv(
        "my-agent --prompt {instruction} --context='{analysis}' -C {workspace} '{literal}'",
        instruction='fix "api": it can\'t import {yaml}',
        analysis_path=tmp_path / "analysis dir" / "a.json",
        workspace=tmp_path / "ws",
    )
    assert argv == [
        "my-agent",
        "--prompt",
        'fix "api": it can\'t import {yaml}',
        f"--context={tmp_path / 'analysis dir' / 'a.json'}",
        "-C",
        str(tmp_path / "ws"),
        "{literal}",
    ]


def test_argv_substitution_does_not_rescan_inserted_text(tmp_path: Path) -> None:
    argv = build_agent_argv(
        "agent {instruction}:{workspace}",
        instruction="mention {workspace}",
        analysis_path=tmp_path,
        workspace=Path("/ws"),
    )
    assert argv == ["agent", "mention {workspace}:/ws"]


@pytest.mark.parametrize("template", ["", "   ", "''"])
def test_empty_template_is_rejected(template: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        build_agent_argv(template, instruction="x", analysis_path=tmp_path, workspace=tmp_path)


def test_run_agent_captures_stdout_and_stderr(tmp_path: Path) -> None:
    code = (
        "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr); sys.exit(3)"
    )
    result = run_agent([sys.executable, "-c", code], cwd=tmp_path, timeout=30)
    assert result.returncode == 3
    assert not result.timed_out
    assert "out" in result.output
    assert "err" in result.output
    assert result.duration_s >= 0


def test_run_agent_uses_cwd_and_env(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "AGENT_TOKEN": "abc"}
    result = run_agent(
        ["sh", "-c", 'pwd; echo "token=$AGENT_TOKEN"'], cwd=tmp_path, timeout=30, env=env
    )
    assert result.returncode == 0
    assert str(tmp_path.resolve()) in result.output
    assert "token=abc" in result.output


def _alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 in a container may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"echo started; sleep 30 & echo $! > '{pid_file}'; sleep 30"
    started = time.monotonic()
    result = run_agent(["sh", "-c", script], cwd=tmp_path, timeout=1.0)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert result.returncode != 0
    assert "started" in result.output
    assert elapsed < 10
    child = int(pid_file.read_text().strip())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_missing_executable_reports_127(tmp_path: Path) -> None:
    result = run_agent([str(tmp_path / "no-such-agent")], cwd=tmp_path, timeout=5)
    assert result.returncode == 127
    assert not result.timed_out
    assert "no-such-agent" in result.output
