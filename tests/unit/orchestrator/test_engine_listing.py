"""What analyze reads of the other services from the one container listing (no inspect)."""

from __future__ import annotations

from typing import Any

import pytest

from moonmind.workflows.orchestrator.adapters.docker_engine import _from_listing
from moonmind.workflows.orchestrator.diagnosis.network import looks_at_peers


def _entry(state: str, status: str, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "Id": "c" * 64,
        "Names": ["/stack-db-1"],
        "State": state,
        "Status": status,
        "ImageID": "sha256:abc",
        "Ports": ports or [],
    }


@pytest.mark.parametrize(
    ("state", "status", "exit_code", "signal", "health"),
    [
        ("exited", "Exited (1) 3 seconds ago", 1, None, None),
        ("exited", "Exited (137) About a minute ago", 137, 9, None),
        ("restarting", "Restarting (2) Less than a second ago", 2, None, None),
        ("running", "Up 5 seconds (healthy)", 0, None, "healthy"),
        ("running", "Up 2 seconds (health: starting)", 0, None, "starting"),
        ("running", "Up 9 minutes (unhealthy)", 0, None, "unhealthy"),
        ("created", "Created", 0, None, None),
    ],
)
def test_a_listing_row_gives_state_exit_code_and_health(
    state: str, status: str, exit_code: int, signal: int | None, health: str | None
) -> None:
    info = _from_listing(_entry(state, status))
    assert (info.status, info.exit_code, info.signal, info.health) == (
        state,
        exit_code,
        signal,
        health,
    )
    assert info.name == "stack-db-1"


def test_published_and_exposed_ports_come_from_the_listing() -> None:
    ports = [
        {"PrivatePort": 5432, "PublicPort": 15432, "Type": "tcp"},
        {"PrivatePort": 5432, "Type": "tcp"},
        {"PrivatePort": 9000, "Type": "tcp"},
    ]
    assert _from_listing(_entry("running", "Up 1 second", ports)).ports == (5432, 9000)


@pytest.mark.parametrize(
    ("block", "peers"),
    [
        ("OSError: [Errno 98] Address already in use", True),
        ("ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)", True),
        ("ModuleNotFoundError: No module named 'requests'", False),
    ],
)
def test_only_a_port_or_a_peer_asks_for_the_others_in_full(block: str, peers: bool) -> None:
    assert looks_at_peers(block) is peers
