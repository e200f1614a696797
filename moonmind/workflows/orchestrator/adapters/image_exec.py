"""Run one short command in a throwaway container of an image, and read what it printed.

Used after a build to ask the new image what it installed. The container has no
network, is not a compose service (no labels), and is removed whatever happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker
import requests
from docker.errors import DockerException


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int  # -1: the container could not be run at all
    output: str


def run_in_image(image: str, argv: list[str], *, timeout_s: float = 60.0) -> ExecOutcome:
    """``argv`` (its first item replaces the image's entrypoint) in a new container."""
    try:
        client = docker.from_env(timeout=int(timeout_s))
    except DockerException as exc:
        return ExecOutcome(-1, f"Docker engine unreachable: {exc}")
    container = None
    try:
        container = client.containers.create(
            image, command=argv[1:], entrypoint=[argv[0]], network_disabled=True
        )
        container.start()
        status = container.wait(timeout=timeout_s)
        raw = container.logs(stdout=True, stderr=True)
        return ExecOutcome(int(status.get("StatusCode", -1)), raw.decode("utf-8", "replace"))
    except (DockerException, requests.exceptions.RequestException) as exc:
        return ExecOutcome(-1, str(exc))
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except DockerException:
                pass
        client.close()
