"""Thin adapter over the Docker Compose CLI (v2 plugin or v1 ``docker-compose``).

The CLI, not the engine API, is used for build/up so that the operator's compose file is
interpreted exactly as they would interpret it by hand (interpolation, ``.env``, profiles).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
import yaml
from docker.errors import DockerException

from moonmind.workflows.orchestrator.adapters.process import child_preexec, kill_group, tracked

LineSink = Callable[[str], None]

_PROBE_TIMEOUT_S = 15.0
_CONFIG_TIMEOUT_S = 60.0
_REMEDIATION = (
    "install the Docker Compose v2 plugin ('docker compose') or docker-compose v1, "
    "or set the compose command explicitly (e.g. --compose-cmd 'docker-compose')"
)


class ComposeError(Exception):
    """Raised when the compose CLI is missing, fails, or produces unusable output."""


# A container compose renamed before recreating it: "<12 hex of its id>_<its name>".
_INTERRUPTED_NAME = re.compile(r"^[0-9a-f]{12}_(.+)$")


def detect_compose_command(override: str | None = None) -> list[str]:
    """Pick the compose CLI: explicit override, then the v2 plugin, then v1."""
    if override and override.strip():
        return shlex.split(override)
    if _docker_compose_plugin_works():
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ComposeError(f"no Docker Compose CLI found: {_REMEDIATION}")


def _docker_compose_plugin_works() -> bool:
    """True when ``docker compose version`` exits 0 (the plugin is installed)."""
    if not shutil.which("docker"):
        return False
    try:
        proc = subprocess.run(
            ["docker", "compose", "version"],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def is_compose_v1(command: Sequence[str]) -> bool:
    """v1 is the standalone python ``docker-compose``; it names things differently."""
    return bool(command) and Path(command[0]).name == "docker-compose"


def normalize_project_name(project: str, command: Sequence[str]) -> str:
    """Apply the same project-name normalisation compose does (labels, image names use it)."""
    name = re.sub(r"[^-_a-z0-9]", "", project.lower())
    return name if is_compose_v1(command) else name.lstrip("-_")


def image_name(
    project: str, service: str, config_service: dict[str, Any], command: Sequence[str]
) -> str:
    """The image reference compose builds for ``service`` (explicit ``image:`` wins)."""
    explicit = config_service.get("image")
    if isinstance(explicit, str) and explicit:
        return explicit
    sep = "_" if is_compose_v1(command) else "-"
    return f"{normalize_project_name(project, command)}{sep}{service}"


@dataclass(frozen=True)
class Compose:
    """One compose project bound to one file and workspace; all calls are argv-only."""

    command: tuple[str, ...]
    project: str
    compose_file: Path
    workspace: Path

    def argv(self, *args: str) -> list[str]:
        """Full argv for a compose subcommand, always pinned to project and file."""
        return [*self.command, "-p", self.project, "-f", str(self.compose_file), *args]

    def config(self) -> dict[str, Any]:
        """The fully resolved compose model as compose itself sees it."""
        proc = self._capture("config")
        if proc.returncode != 0:
            raise ComposeError(f"compose config failed ({proc.returncode}): {proc.stderr.strip()}")
        try:
            data = yaml.safe_load(proc.stdout)
        except yaml.YAMLError as exc:
            raise ComposeError(f"compose config produced invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ComposeError("compose config produced no mapping")
        return data

    def services(self) -> list[str]:
        """Service names, sorted, from the resolved config."""
        services = self.config().get("services") or {}
        return sorted(services)

    def image_for(self, service: str) -> str:
        """Image name compose builds for ``service`` with this CLI flavour."""
        services = self.config().get("services") or {}
        return image_name(self.project, service, services.get(service) or {}, self.command)

    def build(self, service: str, on_line: LineSink, *, timeout_s: float | None = None) -> int:
        """Build one service's image, streaming output; returns the exit code."""
        return self.run(["build", service], on_line, timeout_s=timeout_s)

    def up_no_deps(self, service: str, on_line: LineSink, *, timeout_s: float | None = None) -> int:
        """Recreate only ``service`` (never its dependencies); returns the exit code."""
        self.repair_interrupted_recreate(service, on_line)
        return self.run(["up", "-d", "--no-deps", service], on_line, timeout_s=timeout_s)

    def repair_interrupted_recreate(self, service: str, on_line: LineSink) -> None:
        """Undo what a compose killed mid-recreate left: the old container renamed
        ``<id>_<name>``, which makes every later `up` fail. It gets its name back, or is
        removed when a container of that name was already created (engine API calls, no
        process start)."""
        try:
            client = docker.from_env(timeout=int(_CONFIG_TIMEOUT_S))
        except DockerException:  # no engine here: `up` will say more
            return
        try:
            self._repair(client.api, service, on_line)
        except (DockerException, requests.exceptions.RequestException):
            return
        finally:
            client.close()

    def _repair(self, api: docker.APIClient, service: str, on_line: LineSink) -> None:
        project = normalize_project_name(self.project, self.command)
        labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
        rows = [
            (str(found["Id"]), str(name).lstrip("/"))
            for found in api.containers(all=True, filters={"label": labels})
            for name in (found.get("Names") or [])[:1]
        ]
        names = {name for _, name in rows}
        for cid, name in rows:
            renamed = _INTERRUPTED_NAME.match(name)
            if renamed is None:
                continue
            original = renamed.group(1)
            if original in names:
                api.remove_container(cid, force=True)
                done = f"removed {cid[:12]}"
            else:
                api.rename(cid, original)
                done = f"renamed {cid[:12]} back to {original}"
            on_line(f"repaired an interrupted recreate: {done} ({name})")

    def run(self, args: Sequence[str], on_line: LineSink, *, timeout_s: float | None = None) -> int:
        """Run any compose subcommand, forwarding each output line as soon as it appears."""
        return self.run_argv(self.argv(*args), on_line, timeout_s=timeout_s)

    def run_argv(
        self, argv: list[str], on_line: LineSink, *, timeout_s: float | None = None
    ) -> int:
        """Run a command of the plan (compose's, or the `docker build` it would run) in the
        workspace, forwarding each output line as soon as it appears."""
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.workspace,
                env=_child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                bufsize=0,
                start_new_session=True,
                preexec_fn=child_preexec(),  # noqa: PLW1509 (only a prctl call, see process.py)
            )
        except OSError as exc:
            raise ComposeError(f"cannot run {argv[0]!r}: {exc}; {_REMEDIATION}") from exc
        with tracked(proc):
            return _pump(proc, argv, on_line, timeout_s)

    def _capture(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a short compose command and capture its output whole."""
        argv = self.argv(*args)
        try:
            return subprocess.run(
                argv,
                cwd=self.workspace,
                env=_child_env(),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_CONFIG_TIMEOUT_S,
                check=False,
            )
        except OSError as exc:
            raise ComposeError(f"cannot run {argv[0]!r}: {exc}; {_REMEDIATION}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"{' '.join(argv)} timed out after {exc.timeout}s") from exc


def _child_env() -> dict[str, str]:
    """Inherit the caller's environment; unbuffer python-based compose v1 so lines stream."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _pump(
    proc: subprocess.Popen[bytes], argv: list[str], on_line: LineSink, timeout_s: float | None
) -> int:
    """Forward lines until EOF; a watchdog kills the process if it overruns its timeout."""
    timed_out = threading.Event()
    watchdog = _start_watchdog(proc, timeout_s, timed_out)
    try:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            on_line(_decode_line(raw))
        code = proc.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if proc.poll() is None:
            kill_group(proc)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if timed_out.is_set():
        raise ComposeError(f"{' '.join(argv)} timed out after {timeout_s}s and was killed")
    return code


def _start_watchdog(
    proc: subprocess.Popen[bytes], timeout_s: float | None, flag: threading.Event
) -> threading.Timer | None:
    """Arm a timer that kills ``proc`` after ``timeout_s`` (None means no limit)."""
    if timeout_s is None:
        return None

    def _kill() -> None:
        flag.set()
        kill_group(proc)

    timer = threading.Timer(timeout_s, _kill)
    timer.daemon = True
    timer.start()
    return timer


def _decode_line(raw: bytes) -> str:
    """Decode one output line; carriage-return progress redraws keep only the last frame."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return text.rsplit("\r", 1)[-1]
