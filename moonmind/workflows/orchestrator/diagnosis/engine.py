"""Analyzers that read the engine's state of the container, not what the process printed."""

from __future__ import annotations

import re
import signal

from moonmind.workflows.orchestrator.diagnosis.evidence import (
    ERRORISH,
    Diagnosis,
    Evidence,
    clean_lines,
)

CRASH_LOOP_RESTARTS = 3
_EXEC_FORMAT = re.compile(r"(?i)exec format error")
_NO_ENTRYPOINT = re.compile(
    r"exec: \"([^\"]+)\": (?:executable file not found in \$PATH|stat [^:]+: no such file or "
    r"directory)|^exec ([^\s:]+): no such file or directory",
    re.M,
)
_ENTRY_PATH = re.compile(r"exec(?: ([^\s:]+):|: \"([^\"]+)\")")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def entrypoint_missing(ev: Evidence) -> Diagnosis | None:
    """The engine could not start it (State.Error), or runc said so in the log."""
    m = _NO_ENTRYPOINT.search(ev.error) or _NO_ENTRYPOINT.search(ev.block)
    if m is None:
        return None
    command = m.group(1) or m.group(2)
    return Diagnosis(
        "entrypoint_missing",
        command,
        ev.error or m.group(0),
        f"the entrypoint {command} does not exist in the image: fix ENTRYPOINT/CMD (or the "
        "compose file's command), or install it in the Dockerfile",
    )


def exec_format_error(ev: Evidence) -> Diagnosis | None:
    source = ev.error if _EXEC_FORMAT.search(ev.error) else ev.block
    if not _EXEC_FORMAT.search(source):
        return None
    m = _ENTRY_PATH.search(source)
    path = (m.group(1) or m.group(2)) if m else "the entrypoint"
    return Diagnosis(
        "exec_format_error",
        path,
        source.strip().splitlines()[-1] if source.strip() else "exec format error",
        f"{path} is not an executable for this machine: rebuild it (or the image) for this "
        "architecture, or give a script its #! line",
    )


def oom_killed(ev: Evidence) -> Diagnosis | None:
    if not ev.oom_killed:
        return None
    limit = f"{ev.memory_limit / 2**20:g} MiB" if ev.memory_limit else "the host's memory"
    return Diagnosis(
        "oom_killed",
        limit,
        f"State.OOMKilled=true, exit {ev.exit_code}",
        f"the kernel killed the process for using more than {limit}: raise the service's "
        "memory limit (mem_limit in the compose file) or make it use less",
    )


def segfault(ev: Evidence) -> Diagnosis | None:
    crashed = ev.signal == signal.SIGSEGV or "Segmentation fault" in ev.block
    if not crashed or ev.oom_killed:
        return None
    return Diagnosis(
        "segfault",
        f"exit {ev.exit_code} (SIGSEGV)",
        f"exit code {ev.exit_code}",
        "the process crashed with a segmentation fault: usually a native extension or "
        "library built for another version; rebuild the image or pin that library",
    )


def killed_by_signal(ev: Evidence) -> Diagnosis | None:
    if ev.signal is None or ev.oom_killed or ev.signal == signal.SIGSEGV:
        return None
    name = signal_name(ev.signal)
    return Diagnosis(
        "killed_by_signal",
        name,
        f"exit code {ev.exit_code} = 128 + {ev.signal} ({name})",
        f"the process was ended by {name}, not by its own error: find what sent it (a "
        "supervisor, a timeout, a stop from the host); its logs end without a crash",
    )


def first_crash_line(logs: str) -> str:
    """The earliest error line of the log (the first run's crash, when the log reaches back
    that far); "" when no line looks like an error."""
    return next((line.strip() for line in clean_lines(logs) if ERRORISH.search(line)), "")


def crash_loop(ev: Evidence) -> Diagnosis | None:
    looping = ev.status == "restarting" or ev.restart_count >= CRASH_LOOP_RESTARTS
    if not looping or ev.restart_count == 0:
        return None
    # The engine keeps only the last exit code; the first is not invented from the logs.
    first = first_crash_line(ev.logs)
    last = ev.block.strip().splitlines()[-1] if ev.block.strip() else ""
    said = f"; first crash said: {first!r}" if first else ""
    said += f"; last crash said: {last!r}" if last and last != first else ""
    return Diagnosis(
        "crash_loop",
        f"{ev.restart_count} restarts (first exit unknown, last exit {ev.exit_code})",
        f"RestartCount={ev.restart_count}, restart policy {ev.restart_policy or 'none'}, "
        f"first exit unknown to the engine, last exit {ev.exit_code}{said}",
        f"the engine restarts it over and over ({ev.restart_count} times so far); restarting "
        "again will not help: fix the cause its last crash shows",
    )


def healthcheck_failing(ev: Evidence) -> Diagnosis | None:
    if ev.health != "unhealthy":
        return None
    last = ev.health_log[-1] if ev.health_log else ""
    return Diagnosis(
        "healthcheck_failing",
        last.splitlines()[-1] if last else "no output",
        " | ".join(ev.health_log) or "no output",
        "its healthcheck fails (last output above): fix what the check tests, or the check "
        "itself (healthcheck in the compose file or HEALTHCHECK in the Dockerfile)",
    )
