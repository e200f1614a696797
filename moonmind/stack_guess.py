"""What `moonmind init` can tell about a compose service without being told.

Each guess comes with the reason it was made, so the written config.toml says where every
value came from. Nothing here writes files; ``moonmind.stack_init`` does.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.service_profiles import ServiceProfile

# Paths tried, in this order, against a running service; the first 2xx wins. A service
# that does not answer (it is down, which is why you run the orchestrator) gets the first.
HEALTH_PATHS = ("/health", "/healthz", "/")
_PROBE_TIMEOUT_S = 0.5

_URL_IN_TEXT = re.compile(
    r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(?::(\d+))?(/\S*)?"
)
_PORT_IN_ARG = re.compile(r"(?:^|[\s=:])(?:localhost|127\.0\.0\.1|0\.0\.0\.0)?:(\d{2,5})\b")
_PORT_FLAG = re.compile(r"^--?(?:port|p|listen|bind)$", re.IGNORECASE)
_PORT_VALUE = re.compile(r"^(?:(?:localhost|127\.0\.0\.1|0\.0\.0\.0)?:)?(\d{2,5})$")


@dataclass(frozen=True)
class HealthGuess:
    url: str | None
    reason: str


@dataclass(frozen=True)
class AllowGuess:
    patterns: tuple[str, ...]
    image_only: bool
    reason: str


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """Container port -> host port, for every port compose publishes on the host."""
    found: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            target, published = entry.get("target"), entry.get("published")
            if target is not None and published not in (None, ""):
                _put(found, str(target), str(published))
        elif isinstance(entry, str | int):
            parts = str(entry).split("/")[0].rsplit(":", 2)
            if len(parts) >= 2:
                _put(found, parts[-1], parts[-2])
    return found


def _put(found: dict[int, int], target: str, published: str) -> None:
    """Only single ports: a range ("8000-8010") names no one health port."""
    if target.isdigit() and published.isdigit():
        found.setdefault(int(target), int(published))


def healthcheck_url(service: Mapping[str, Any]) -> tuple[int, str] | None:
    """(container port, path) of a loopback URL named in the compose healthcheck."""
    check = service.get("healthcheck")
    if not isinstance(check, Mapping) or check.get("disable"):
        return None
    test = check.get("test")
    text = " ".join(str(part) for part in test) if isinstance(test, list) else str(test or "")
    match = _URL_IN_TEXT.search(text)
    if match is None:
        return None
    port = int(match.group(1)) if match.group(1) else 80
    path = (match.group(2) or "/").rstrip("'\";|&)")
    return port, path or "/"


def command_port(service: Mapping[str, Any]) -> tuple[int, str] | None:
    """(port, where) of an obvious listening port in the environment or the command."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env if isinstance(item, str) and "=" in item)
    for name in sorted(env):
        value = str(env[name] if env[name] is not None else "").strip()
        if "PORT" in str(name).upper() and value.isdigit() and 0 < int(value) < 65536:
            return int(value), f"{name} in its environment"
    command = service.get("command") or []
    args = command.split() if isinstance(command, str) else [str(a) for a in command]
    for index, arg in enumerate(args):
        if _PORT_FLAG.match(arg) and index + 1 < len(args):
            flag_value = _PORT_VALUE.match(args[index + 1])
            if flag_value:
                return int(flag_value.group(1)), f"{arg} {args[index + 1]} in its command"
        found = _PORT_IN_ARG.search(arg)
        if found:
            return int(found.group(1)), f"{arg!r} in its command"
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _with_path(port: int, reason: str, probe: bool) -> HealthGuess:
    """Pick the path: the first of HEALTH_PATHS a running service answers with 2xx."""
    base = f"http://127.0.0.1:{port}"
    if probe:
        for path in HEALTH_PATHS:
            if _answers(base + path):
                return HealthGuess(base + path, f"{reason}; {path} answered")
    return HealthGuess(base + HEALTH_PATHS[0], f"{reason}; path not confirmed, check it")


def guess_health(service: Mapping[str, Any], *, probe: bool = True) -> HealthGuess:
    """The health URL as seen from this host: healthcheck URL, published port, or an
    obvious port in the command/environment of a host-network service."""
    host_network = service.get("network_mode") == "host"
    ports = published_ports(service)
    checked = healthcheck_url(service)
    if checked is not None:
        port, path = checked
        host_port = port if host_network else ports.get(port)
        if host_port is not None:
            return HealthGuess(
                f"http://127.0.0.1:{host_port}{path}", f"from its healthcheck (port {port})"
            )
    if ports:
        target = min(ports)
        return _with_path(ports[target], f"published port {ports[target]}->{target}", probe)
    if host_network:
        found = command_port(service)
        if found is not None:
            return _with_path(found[0], f"network_mode host, {found[1]}", probe)
    return HealthGuess(None, "no published port, healthcheck URL or obvious port found")


def guess_allow(profile: ServiceProfile, root: Path) -> AllowGuess:
    """The default allow-list narrowed to files that exist in the build context."""
    if not profile.has_build:
        image = f" ({profile.image})" if profile.image else ""
        return AllowGuess((), True, f"image only{image}, cannot be patched")
    if profile.build_context is None:
        return AllowGuess(
            (), True, "its build context is not in this repository: cannot be patched"
        )
    present = tuple(p for p in profile.allow if any(root.glob(p)))
    if not present:
        return AllowGuess((), False, "no Dockerfile or dependency file found in its build context")
    return AllowGuess(present, False, f"what exists in its build context {profile.build_context}/")
