"""Analyzers for sockets: a port someone else holds, a peer that refuses connections.

Both look the port up among the stack's other services, so the answer can point at the
service to fix first.
"""

from __future__ import annotations

import re

from moonmind.workflows.orchestrator.diagnosis.evidence import (
    Diagnosis,
    Evidence,
    Outcome,
    ServiceState,
)

_IN_USE = re.compile(
    r"(?i)address already in use|EADDRINUSE|bind: address in use|port is already allocated"
)
_IN_USE_PORT = (
    re.compile(r"bind on address \('[^']*', (\d+)\)"),
    re.compile(r"EADDRINUSE:?[^\n]*?:(\d+)"),
    re.compile(r"(?:listen|bind)[^\n]*?[:\s](\d{2,5})\b[^\n]*(?:in use|EADDRINUSE)"),
    re.compile(r"port (\d{2,5})"),
)
_REFUSED = re.compile(r"(?i)connection refused|ECONNREFUSED|Connect call failed")
_REFUSED_ADDR = (
    re.compile(r"Connect call failed \('([^']+)', (\d+)\)"),
    re.compile(r"ECONNREFUSED ([\w.\-]+|\[[0-9a-f:]+\]):(\d+)"),
    re.compile(r"host='([^']+)', port=(\d+)"),
    re.compile(r'server at "([^"]+)"[^\n]*?port (\d+)'),
    re.compile(r"\b([a-zA-Z][\w.\-]*|\d+\.\d+\.\d+\.\d+):(\d{2,5})\b"),
)
_LOCAL = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]"}


def looks_at_peers(block: str) -> bool:
    """The crash names a taken port or a refused peer: the rules look among the stack's
    other services, whose ports only a full inspect shows."""
    return bool(_IN_USE.search(block) or _REFUSED.search(block))


def _line_of(text: str, pattern: re.Pattern[str]) -> str:
    return next((line.strip() for line in text.splitlines() if pattern.search(line)), "")


def _holder(ev: Evidence, port: int) -> tuple[str, ServiceState] | None:
    """Another service of the stack that exposes or publishes ``port``."""
    for name, state in ev.stack.items():
        if name != ev.service and port in state.ports:
            return name, state
    return None


def port_in_use(ev: Evidence) -> Diagnosis | None:
    if not _IN_USE.search(ev.block):
        return None
    port = next((m.group(1) for p in _IN_USE_PORT if (m := p.search(ev.block))), None)
    holder = _holder(ev, int(port)) if port else None
    where = f"port {port}" if port else "its port"
    line = _line_of(ev.block, _IN_USE)
    if holder:
        fix = f"{where} is already taken by service {holder[0]}: give one of them another port"
        return Diagnosis(
            "port_in_use",
            f"{port} (held by {holder[0]})",
            line,
            fix + " in the compose file",
            Outcome.OTHER_SERVICE,
            holder[0],
        )
    fix = f"{where} is already taken by another process: free it or change the port"
    return Diagnosis("port_in_use", port or "unknown port", line, fix + " in the compose file")


def _refused_address(block: str) -> tuple[str, int] | None:
    for pattern in _REFUSED_ADDR:
        for m in pattern.finditer(block):
            if m.group(2).isdigit():
                return m.group(1), int(m.group(2))
    return None


def _peer(ev: Evidence, host: str, port: int) -> tuple[str, ServiceState] | None:
    """The stack service a refused address points at: by host name, else by port."""
    if host in ev.stack and host != ev.service:
        return host, ev.stack[host]
    return _holder(ev, port) if host in _LOCAL or host.startswith("127.") else None


def connection_refused(ev: Evidence) -> Diagnosis | None:
    if not _REFUSED.search(ev.block):
        return None
    address = _refused_address(ev.block)
    line = _line_of(ev.block, _REFUSED)
    if address is None:
        return Diagnosis(
            "connection_refused",
            "unknown address",
            line,
            "a peer refused the connection: check that the service it needs is up and the "
            "address it is configured with",
        )
    host, port = address
    peer = _peer(ev, host, port)
    if peer is None:
        return Diagnosis(
            "connection_refused",
            f"{host}:{port}",
            line,
            f"nothing listens on {host}:{port}: start what should serve it, or fix the "
            "address in the service's configuration",
        )
    name, state = peer
    then = f"then restart {ev.service or 'this service'}"
    if state.status == "running":
        fix = (
            f"{name} is running but refusing connections on port {port}: make it listen on "
            f"{port} on all its interfaces (not only its own localhost), or point "
            f"{ev.service or 'this service'} at the port it does listen on; {then}"
        )
    else:
        fix = f"{name} is {state.describe()}, fix it first (a run for {name}), {then}"
    return Diagnosis(
        "connection_refused",
        f"{host}:{port} ({name} {state.describe()})",
        line,
        fix,
        Outcome.OTHER_SERVICE,
        name,
    )
