"""The `docker build` that docker-compose v1 runs for a service, without docker-compose.

docker-compose v1 (Python) builds a service by running the Docker CLI's own `docker build`
(its "native builder", on unless COMPOSE_DOCKER_CLI_BUILD is false), after about 0.35 s
of its own start-up. The plan records that same command, made from the service's resolved
``build:`` section, and the build step runs it directly: the same builder (legacy or
BuildKit, as the Docker CLI decides), the same context, Dockerfile, arguments, labels and
tag, and a third of a second less per fix. Anything this module cannot map one to one
(no ``build:`` section, a compose v2 CLI, an option it does not know) keeps the compose
command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moonmind.workflows.orchestrator.adapters.compose import is_compose_v1

# The build: keys docker-compose v1 hands to `docker build` (and shm_size, which its native
# builder ignores); any other key keeps the compose command.
_MAPPED = {
    "context",
    "dockerfile",
    "args",
    "labels",
    "cache_from",
    "network",
    "target",
    "extra_hosts",
    "isolation",
    "shm_size",
}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def native_build_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """docker-compose v1 builds with `docker build` unless COMPOSE_DOCKER_CLI_BUILD is false."""
    value = (os.environ if environ is None else environ).get("COMPOSE_DOCKER_CLI_BUILD", "1")
    return value.strip().lower() not in _FALSE


def _pairs(flag: str, values: Any) -> list[str]:
    """``--flag K=V`` per entry of a mapping, or per ``K=V`` string of a list."""
    if isinstance(values, Mapping):
        items = [k if v is None else f"{k}={v}" for k, v in values.items()]
    else:
        items = [str(v) for v in values or ()]
    return [part for item in items for part in (flag, item)]


def _hosts(values: Any) -> list[str]:
    if isinstance(values, Mapping):
        values = [f"{host}:{ip}" for host, ip in values.items()]
    return [part for host in values or () for part in ("--add-host", str(host))]


def docker_build_argv(
    command: Sequence[str], image: str, service_config: Mapping[str, Any]
) -> list[str] | None:
    """`docker build ...` for one service of a resolved compose config, or None when only
    compose itself may build it."""
    build = service_config.get("build")
    if not is_compose_v1(command) or not isinstance(build, Mapping):
        return None
    context = build.get("context")
    if not isinstance(context, str) or not Path(context).is_absolute() or set(build) - _MAPPED:
        return None
    argv = ["docker", "build", *_pairs("--build-arg", build.get("args"))]
    argv += [part for ref in build.get("cache_from") or () if ref for part in ("--cache-from", ref)]
    dockerfile = build.get("dockerfile")
    if dockerfile:
        argv += ["--file", str(Path(context) / str(dockerfile))]
    argv += _pairs("--label", build.get("labels"))
    for flag, key in (("--network", "network"), ("--target", "target")):
        if build.get(key):
            argv += [flag, str(build[key])]
    argv += ["--tag", image]
    platform = service_config.get("platform")
    if platform:
        argv += ["--platform", str(platform)]
    isolation = build.get("isolation") or service_config.get("isolation")
    if isolation:
        argv += ["--isolation", str(isolation)]
    return [*argv, *_hosts(build.get("extra_hosts")), context]
