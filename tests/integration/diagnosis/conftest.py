"""Really broken containers, one per failure kind, started together for the whole module.

Each container is a real process that really fails (never a log line written by the
test), labelled as a service of one throw-away compose project so the analyze step finds
it as it would find a compose service.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

BUSYBOX = "moonmind/busybox:1"
PYTHON = "moonmind/python-base:bookworm"
NODE = "moonmind/node-base:bookworm"  # python-base + Debian's nodejs
FREE_PORT = 58231  # nothing listens here: connection refused
HELD_PORT = 58232  # the `holder` service listens here: address in use
DB_PORT = 58233  # exposed by the exited `db` service
IDLE_PORT = 58234  # exposed by the running `idledb` service, which never listens on it


@dataclass(frozen=True)
class Broken:
    """How to start one broken service, and when it has shown its failure."""

    args: list[str]
    until: str = "exited"  # exited | created | unhealthy | looping | running
    before: list[str] = field(default_factory=list)  # `docker create` then these then start


def _py(code: str, *options: str) -> Broken:
    return Broken([*options, PYTHON, "python3", "-c", code])


BROKEN: dict[str, Broken] = {
    "pymissing": _py("import yaml"),
    "nodemissing": Broken([NODE, "node", "-e", "require('left-pad')"]),
    "libmissing": Broken(
        [PYTHON, "sh", "-c", "rm /lib/x86_64-linux-gnu/libz.so.1*; exec python3 -c 1"]
    ),
    "cmdmissing": Broken([BUSYBOX, "sh", "-c", "echo starting; curl http://example.invalid"]),
    "pipmissing": Broken([PYTHON, "pip", "install", "--no-index", "ledger-client-nosuch"]),
    "importname": _py("from os import no_such_helper"),
    "pinmismatch": _py("from setuptools import no_such_helper"),
    "syntax": Broken(
        [PYTHON, "sh", "-c", "printf 'x = 1\\nprint((x)\\n' > /tmp/app.py; python3 /tmp/app.py"]
    ),
    "envvar": _py("import os; print('booting'); url = os.environ['LEDGER_URL']"),
    "badvalue": _py("import os; workers = int(os.environ.get('WORKERS', 'abc'))"),
    "nofile": _py("open('/etc/ledger/config.yaml')"),
    "denied": _py("open('/root/.secret-token')", "--user", "65534"),
    "readonly": _py("open('/var/log/ledger.log', 'w')", "--read-only"),
    "portbusy": _py(
        "import asyncio\n"
        f"asyncio.run(asyncio.start_server(lambda r, w: None, '0.0.0.0', {HELD_PORT}))"
    ),
    "holder": Broken(
        ["--expose", str(HELD_PORT), BUSYBOX, "httpd", "-f", "-p", str(HELD_PORT)], until="running"
    ),
    "refused": _py(
        f"import asyncio; asyncio.run(asyncio.open_connection('127.0.0.1', {FREE_PORT}))"
    ),
    "dbclient": _py(
        f"import asyncio; asyncio.run(asyncio.open_connection('127.0.0.1', {DB_PORT}))"
    ),
    "db": Broken(["--expose", str(DB_PORT), BUSYBOX, "sh", "-c", "echo 'db: bad config'; exit 1"]),
    "idleclient": _py(
        f"import asyncio; asyncio.run(asyncio.open_connection('127.0.0.1', {IDLE_PORT}))"
    ),
    "idledb": Broken(["--expose", str(IDLE_PORT), BUSYBOX, "sleep", "300"], until="running"),
    "oom": _py(
        "chunks = [bytearray(1 << 20) for _ in range(256)]", "--memory", "8m", "--memory-swap", "8m"
    ),  # fmt: skip
    "sigterm": Broken([BUSYBOX, "sh", "-c", 'sh -c "kill -TERM \\$\\$"; exit $?']),
    "segv": _py("import ctypes; ctypes.string_at(0)"),
    "badexec": Broken([BUSYBOX, "/server"], before=["exec-format"]),
    "noentry": Broken([BUSYBOX, "/usr/local/bin/ledger-server"], until="created"),
    "unhealthy": Broken(
        [
            "--health-cmd",
            "echo 'ledger not ready: 0/3 shards'; exit 1",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-start-period",
            "0s",
            BUSYBOX,
            "sleep",
            "300",
        ],
        until="unhealthy",
    ),  # fmt: skip
    "looping": Broken(
        ["--restart", "always", BUSYBOX, "sh", "-c", "echo 'fatal: cannot lock'; exit 2"],
        until="looping",
    ),
}


FIRST = ("holder", "db", "idledb")


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


def _state(container: str) -> dict[str, object]:
    out = _docker("inspect", "-f", "{{json .State}}|{{.RestartCount}}", container).stdout
    state, _, restarts = out.strip().rpartition("|")
    return {**json.loads(state), "RestartCount": int(restarts)}


def _shown(state: dict[str, object], until: str) -> bool:
    if until == "unhealthy":
        return (state.get("Health") or {}).get("Status") == "unhealthy"  # type: ignore[union-attr]
    if until == "looping":
        return int(state["RestartCount"]) >= 3  # type: ignore[call-overload]
    if until == "running":
        return state["Status"] == "running"
    return state["Status"] == until


def _start(project: str, service: str, broken: Broken) -> str:
    labels = [
        "--label", f"com.docker.compose.project={project}",
        "--label", f"com.docker.compose.service={service}",
        "--label", "com.docker.compose.oneoff=False",
    ]  # fmt: skip
    container = _docker("create", "--network", "host", *labels, *broken.args).stdout.strip()
    if "exec-format" in broken.before:  # an "executable" that is no binary for this machine
        path = _not_a_binary()
        _docker("cp", path, f"{container}:/server")
        os.unlink(path)
    _docker("start", container, check=broken.until != "created")
    deadline = time.monotonic() + 60
    while not _shown(_state(container), broken.until):
        assert time.monotonic() < deadline, f"{service} never became {broken.until}"
        time.sleep(0.2)
    return container


def _not_a_binary() -> str:
    fd, path = tempfile.mkstemp(prefix="not-a-binary-")
    os.write(fd, b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"garbage, not a program")
    os.close(fd)
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def broken_stack() -> Iterator[str]:
    """A compose project whose services each fail in their own way; yields its name."""
    project = f"mmdiag{uuid.uuid4().hex[:8]}"
    try:
        # The services others depend on come first: the port holder must be listening.
        for name in FIRST:
            _start(project, name, BROKEN[name])
        rest = [name for name in BROKEN if name not in FIRST]
        with ThreadPoolExecutor(max_workers=len(rest)) as pool:
            for future in [pool.submit(_start, project, name, BROKEN[name]) for name in rest]:
                future.result()
        yield project
    finally:
        found = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}")
        ids = found.stdout.split()
        if ids:
            _docker("rm", "-f", *ids, check=False)
