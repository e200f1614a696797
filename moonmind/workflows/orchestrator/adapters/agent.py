"""Adapter for an external coding agent run as a plain subprocess.

The agent is configured as a command template so any CLI can be plugged in; it runs in its
own process group so a timeout can stop everything it spawned, not only the direct child.
It gets a minimal environment (:func:`agent_environment`), never the worker's own.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from moonmind.config import AGENT_ENV_REFUSED
from moonmind.workflows.orchestrator.adapters.process import child_preexec, kill_group, tracked

PLACEHOLDERS = ("{instruction}", "{analysis}", "{workspace}")
KILL_GRACE_S = 2.0
NOT_FOUND_RC = 127
# What every agent gets: where programs and its home are, the locale and the time zone.
BASE_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ")
_LOCALE = re.compile(r"LC_[A-Z_]+")


@dataclass(frozen=True)
class AgentResult:
    """Outcome of one agent run; output is stdout and stderr interleaved."""

    returncode: int
    output: str
    timed_out: bool
    duration_s: float


def build_agent_argv(
    template: str, *, instruction: str, analysis_path: Path, workspace: Path
) -> list[str]:
    """Split the template like a shell would, then fill placeholders inside each argument.

    Substitution happens after splitting so values with spaces or quotes stay one argument,
    and plain str.replace keeps any other braces in the template literal.
    """
    argv = shlex.split(template)
    if not argv or not argv[0]:
        raise ValueError("agent command template is empty")
    values = {
        "{instruction}": instruction,
        "{analysis}": str(analysis_path),
        "{workspace}": str(workspace),
    }
    return [_fill(arg, values) for arg in argv]


def agent_environment(source: Mapping[str, str], names: Sequence[str] = ()) -> dict[str, str]:
    """The agent's environment: PATH, HOME, locale (LANG, LANGUAGE, LC_*), TZ, plus ``names``.

    Nothing else of ``source`` (the worker's environment) is passed on: not its database or
    broker URL, not DOCKER_HOST, not a token. A name carrying one of the orchestrator's own
    prefixes (MOONMIND_, CELERY_, ORCHESTRATOR_, DOCKER_, STATSD_) is dropped even if listed.
    """
    wanted = {*BASE_ENV, *(n for n in names if not n.upper().startswith(AGENT_ENV_REFUSED))}
    return {
        key: value
        for key, value in source.items()
        if key in wanted or (_LOCALE.fullmatch(key) is not None)
    }


def _fill(arg: str, values: Mapping[str, str]) -> str:
    """Replace placeholders in one argument without re-scanning substituted text."""
    out: list[str] = []
    i = 0
    while i < len(arg):
        hit = next((key for key in values if arg.startswith(key, i)), None)
        if hit is None:
            out.append(arg[i])
            i += 1
        else:
            out.append(values[hit])
            i += len(hit)
    return "".join(out)


def _collect_after_kill(proc: subprocess.Popen[bytes], partial: bytes) -> bytes:
    """Stop the group (TERM, then KILL) and gather whatever output is still buffered."""
    kill_group(proc, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=KILL_GRACE_S)
        return out or partial
    except subprocess.TimeoutExpired as exc:
        partial = exc.output or partial
    kill_group(proc, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=KILL_GRACE_S)
        return out or partial
    except subprocess.TimeoutExpired:
        # A descendant escaped the group but holds the pipe: stop waiting for it.
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
        return partial


def run_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> AgentResult:
    """Run the agent with a deadline; a missing executable yields returncode 127.

    ``env`` is the agent's whole environment; None means the minimal one
    (:func:`agent_environment` of this process's, with no extra names)."""
    if not argv:
        raise ValueError("agent argv is empty")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else agent_environment(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_preexec(),  # noqa: PLW1509 (only a prctl call, see process.py)
        )
    except OSError as exc:
        return AgentResult(NOT_FOUND_RC, f"cannot start agent: {exc}", False, 0.0)
    timed_out = False
    with tracked(proc):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            timed_out = True
            out = _collect_after_kill(proc, exc.output or b"")
    duration = time.monotonic() - started
    text = (out or b"").decode("utf-8", "replace")
    return AgentResult(proc.returncode, text, timed_out, duration)
