"""Docker engine adapter (docker SDK): read container state, logs, and tag images.

Everything compose-specific is done through the CLI; this module only observes the engine
and keeps rollback tags, so errors are normalised into two exception types.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker.errors import DockerException, ImageNotFound, NotFound

from moonmind.workflows.orchestrator.adapters.exit_events import (
    LAST_EXIT_LOOKBACK_S,
    epoch,
    oom_window,
    ran_again,
    signal_of,
    with_died,
    with_oom_verdict,
)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
_INSPECT_THREADS = 8  # below the SDK's connection pool (10) to the engine

_CONNECT_ERRORS = (
    DockerException,
    requests.exceptions.RequestException,
    FileNotFoundError,
    PermissionError,
    ConnectionError,
)
_REMEDIATION = (
    "start the Docker daemon, check DOCKER_HOST, and make sure this user may access the "
    "socket (e.g. member of the 'docker' group)"
)


class EngineError(Exception):
    """An engine call failed after a connection had been established."""


class EngineUnavailable(EngineError):
    """The Docker engine cannot be reached at all."""


class ObjectNotFound(EngineError):
    """The referenced container or image does not exist (any more)."""


@dataclass(frozen=True)
class ContainerInfo:
    """The parts of ``docker inspect`` that decide whether a service is healthy."""

    id: str
    name: str
    status: str
    exit_code: int
    restart_count: int
    health: str | None
    started_at: str
    image_id: str
    oom_killed: bool
    signal: int | None = None  # exit code above 128: the signal that ended the process
    error: str = ""  # State.Error: why the engine could not start the process
    restart_policy: str = ""
    health_log: tuple[str, ...] = ()  # the healthcheck's last outputs, oldest first
    memory_limit: int = 0  # bytes; 0 = unlimited
    user: str = ""
    ports: tuple[int, ...] = ()  # exposed and published container ports

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> ContainerInfo:
        """Build from the raw inspect payload."""
        state = attrs.get("State") or {}
        health = state.get("Health") or {}
        status = str(state.get("Status") or "unknown")
        if state.get("Restarting"):
            status = "restarting"
        exit_code = int(state.get("ExitCode") or 0)
        host = attrs.get("HostConfig") or {}
        config = attrs.get("Config") or {}
        return cls(
            id=str(attrs.get("Id", "")),
            name=str(attrs.get("Name", "")).lstrip("/"),
            status=status,
            exit_code=exit_code,
            restart_count=int(attrs.get("RestartCount") or 0),
            health=health.get("Status") or None,
            started_at=str(state.get("StartedAt") or ""),
            image_id=str(attrs.get("Image", "")),
            oom_killed=bool(state.get("OOMKilled")),
            signal=signal_of(exit_code),
            error=str(state.get("Error") or ""),
            restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or ""),
            health_log=tuple(
                str(entry.get("Output") or "").strip()[-500:]
                for entry in (health.get("Log") or [])[-3:]
            ),
            memory_limit=int(host.get("Memory") or 0),
            user=str(config.get("User") or ""),
            ports=_ports(config.get("ExposedPorts"), host.get("PortBindings")),
        )


_LISTED_EXIT = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_LISTED_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def _from_listing(entry: dict[str, Any]) -> ContainerInfo:
    """What one row of the container listing says (no inspect): state, exit code, health,
    image, published ports. Start time, restart count and the rest stay unset."""
    shown = str(entry.get("Status") or "")
    exit_code = int(m.group(1)) if (m := _LISTED_EXIT.match(shown)) else 0
    health = m.group(1).removeprefix("health: ") if (m := _LISTED_HEALTH.search(shown)) else None
    names = entry.get("Names") or [""]
    return ContainerInfo(
        id=str(entry.get("Id", "")),
        name=str(names[0]).lstrip("/"),
        status=str(entry.get("State") or "unknown"),
        exit_code=exit_code,
        restart_count=0,
        health=health,
        started_at="",
        image_id=str(entry.get("ImageID", "")),
        oom_killed=False,
        signal=signal_of(exit_code),
        ports=tuple(sorted({int(p["PrivatePort"]) for p in entry.get("Ports") or []})),
    )


def _ports(*tables: dict[str, Any] | None) -> tuple[int, ...]:
    """Container ports named by keys such as "5432/tcp"."""
    numbers = {key.split("/")[0] for table in tables for key in (table or {})}
    return tuple(sorted(int(n) for n in numbers if n.isdigit()))


def _unavailable_message(exc: BaseException) -> str:
    """One line: what failed, where we looked, and what to do about it."""
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else "default socket"
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return f"Docker engine unavailable ({where}): {detail}; {_REMEDIATION}"


def _created_key(created: str) -> tuple[str, str]:
    """Sortable form of docker's RFC3339Nano (trailing zeros trimmed) timestamps."""
    base, _, frac = created.rstrip("Z").partition(".")
    return base, frac.ljust(9, "0")


@contextmanager
def _engine_call(what: str) -> Iterator[None]:
    """Translate SDK/transport errors into EngineError / EngineUnavailable."""
    try:
        yield
    except NotFound as exc:
        raise ObjectNotFound(f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionError) as exc:
        raise EngineUnavailable(_unavailable_message(exc)) from exc
    except (DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(f"{what}: {exc}") from exc


class Engine:
    """A connected engine client; create with :meth:`connect`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def connect(cls, timeout: float = 5) -> Engine:
        """Connect using the environment (DOCKER_HOST etc.) and prove it with a ping."""
        client = None
        try:
            client = docker.from_env(timeout=timeout)
            client.ping()
        except _CONNECT_ERRORS as exc:
            if client is not None:
                client.close()
            raise EngineUnavailable(_unavailable_message(exc)) from exc
        return cls(client)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def container_for(self, project: str, service: str) -> ContainerInfo | None:
        """The newest (non one-off) container compose created for ``service``."""
        infos = self._project_containers(project, service)
        return infos[0] if infos else None

    def services_snapshot(self, project: str) -> dict[str, tuple[str, str]]:
        """service -> (container id, started_at), to prove other services were untouched."""
        snapshot: dict[str, tuple[str, str]] = {}
        for service, info in self._project_services(project):
            snapshot.setdefault(service, (info.id, info.started_at))
        return snapshot

    def stack(self, project: str, *, focus: str | None = None) -> dict[str, ContainerInfo]:
        """service -> its newest container, for every service of the project.

        With ``focus`` only that service's container is inspected; the others are what the
        one listing says (state, exit code, health; ports only as published, none under
        host networking). Without it every container is inspected."""
        if focus is None:
            found: dict[str, ContainerInfo] = {}
            for service, info in self._project_services(project):
                found.setdefault(service, info)
            return found
        with _engine_call(f"list containers of project {project}"):
            listed = self._client.api.containers(
                all=True, filters={"label": [f"{PROJECT_LABEL}={project}"]}
            )
        newest: dict[str, dict[str, Any]] = {}
        for entry in sorted(listed, key=lambda e: int(e.get("Created") or 0), reverse=True):
            labels = entry.get("Labels") or {}
            if labels.get(ONEOFF_LABEL, "False") != "True":
                newest.setdefault(str(labels.get(SERVICE_LABEL, "")), entry)
        found = {service: _from_listing(entry) for service, entry in newest.items()}
        if focus in newest:
            with _engine_call(f"inspect {newest[focus]['Id']}"):
                attrs = self._inspect(str(newest[focus]["Id"]))
            if attrs is not None:
                found[focus] = ContainerInfo.from_attrs(attrs)
        return found

    def with_oom_event(self, info: ContainerInfo) -> ContainerInfo:
        """``info``, OOM-killed if the engine saw an out-of-memory kill.

        The exit's OOMKilled flag can miss a kill the kernel did (it races the exit on
        cgroup v2), and so can the "oom" event (a process that dies at once, before the
        engine watches its cgroup). A SIGKILL of a memory-limited container that nobody
        sent through the engine (no "kill" event: not docker kill, not a stop's timeout)
        is the kernel's OOM killer. Asked only for a SIGKILL (exit 137)."""
        since = oom_window(info)
        if since is None:
            return info
        return with_oom_verdict(info, self._container_events(info, ("oom", "kill"), since), since)

    def with_last_exit(self, info: ContainerInfo) -> ContainerInfo:
        """``info`` with the exit code of its last run, when it is up again after a restart.

        A restarted container's State.ExitCode is its current run's (0 while it runs); the
        engine's "die" events keep what each earlier run exited with."""
        if not ran_again(info):
            return info
        since = int(time.time()) - LAST_EXIT_LOOKBACK_S
        return with_died(info, self._container_events(info, ("die",), since), since)

    def with_exit_evidence(self, info: ContainerInfo) -> ContainerInfo:
        """``with_oom_event(with_last_exit(info))`` from one events query: a container that
        runs again is asked for its "die", "oom" and "kill" events at once, each kind read
        over the window its own method would have asked for."""
        if not ran_again(info):
            return self.with_oom_event(info)
        lookback = int(time.time()) - LAST_EXIT_LOOKBACK_S
        began = epoch(info.started_at)
        since = lookback if began is None else min(lookback, int(began))
        events = self._container_events(info, ("oom", "kill", "die"), since)
        last = with_died(info, events, lookback)
        window = oom_window(last)
        return last if window is None else with_oom_verdict(last, events, window)

    def _container_events(
        self, info: ContainerInfo, kinds: Sequence[str], since: int
    ) -> list[dict[str, Any]]:
        """The container's events of these kinds from ``since`` (whole seconds) until now."""
        with _engine_call(f"events of {info.id}"):
            return list(
                self._client.api.events(
                    since=since,
                    until=int(time.time()) + 1,
                    filters={"container": info.id, "event": list(kinds)},
                    decode=True,
                )
            )

    def logs(self, container_id: str, tail: int = 300) -> str:
        """Last ``tail`` lines of stdout+stderr, decoded leniently."""
        with _engine_call(f"logs of {container_id}"):
            raw = self._client.containers.get(container_id).logs(
                stdout=True, stderr=True, tail=tail
            )
        data = raw if isinstance(raw, bytes) else b"".join(raw)
        return data.decode("utf-8", errors="replace")

    def image_id(self, ref: str) -> str | None:
        """Resolve an image reference to its id; None if it does not exist."""
        with _engine_call(f"inspect image {ref}"):
            try:
                return str(self._client.images.get(ref).id)
            except ImageNotFound:
                return None

    def tag_image(self, image_id: str, repository: str, tag: str) -> None:
        """Tag an image (used to keep a rollback point before rebuilding)."""
        with _engine_call(f"tag {image_id} as {repository}:{tag}"):
            ok = self._client.api.tag(image_id, repository, tag)  # one call, no inspect
        if not ok:
            raise EngineError(f"engine refused to tag {image_id} as {repository}:{tag}")

    def repository_tags(self, repository: str) -> list[str]:
        """The tags the engine holds for one repository (e.g. a service's rollback points)."""
        with _engine_call(f"list images of {repository}"):
            images = self._client.images.list(name=repository)
        prefix = f"{repository}:"
        return sorted(
            {tag[len(prefix) :] for image in images for tag in image.tags if tag.startswith(prefix)}
        )

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Drop an image or tag (e.g. an obsolete rollback tag); missing is not an error."""
        with _engine_call(f"remove image {ref}"):
            try:
                self._client.images.remove(ref, force=force)
            except ImageNotFound:
                return

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """The inspect payload, or None for a container removed since it was listed."""
        try:
            attrs: dict[str, Any] = self._client.api.inspect_container(container_id)
        except NotFound:
            return None
        return attrs

    def _project_containers(self, project: str, service: str | None = None) -> list[ContainerInfo]:
        """Containers of the project (optionally one service), newest first."""
        return [info for _, info in self._project_services(project, service)]

    def _project_services(
        self, project: str, service: str | None = None
    ) -> list[tuple[str, ContainerInfo]]:
        """(service, info) pairs for non one-off containers, newest first."""
        labels = [f"{PROJECT_LABEL}={project}"]
        if service is not None:
            labels.append(f"{SERVICE_LABEL}={service}")
        with _engine_call(f"list containers of project {project}"):
            listed = self._client.api.containers(all=True, filters={"label": labels})
            ids = [
                str(c["Id"])
                for c in listed
                if (c.get("Labels") or {}).get(ONEOFF_LABEL, "False") != "True"
            ]
            # One listing, then the inspections side by side (the SDK makes them one by one).
            with ThreadPoolExecutor(max_workers=min(_INSPECT_THREADS, len(ids) or 1)) as pool:
                inspected = [a for a in pool.map(self._inspect, ids) if a is not None]
        rows = [
            (
                _created_key(attrs.get("Created", "")),
                (attrs.get("Config") or {}).get("Labels", {}).get(SERVICE_LABEL, ""),
                attrs,
            )
            for attrs in inspected
        ]
        rows.sort(key=lambda row: row[0], reverse=True)
        return [(svc, ContainerInfo.from_attrs(attrs)) for _, svc, attrs in rows]
