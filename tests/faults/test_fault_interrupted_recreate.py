"""A compose killed in the middle of a recreate leaves the old container renamed
`<id>_<name>`; every later `up` of the service then fails (compose v1: "Renaming a
container with the same name as its current name"). The restart and rollback steps
repair that first, so a step delivered again after a worker died mid-`up` can finish.
"""

from __future__ import annotations

import subprocess

import pytest

from moonmind.workflows.orchestrator.adapters.compose import Compose
from tests.integration.orchestrator.conftest import bring_up, inspect_container
from tests.support.stack import Stack, compose_cmd


@pytest.mark.docker
def test_up_after_a_recreate_killed_half_way(broken_stack: Stack) -> None:
    bring_up(broken_stack)
    old = inspect_container(broken_stack, "app")
    name = old["Name"].lstrip("/")
    # What compose does first when it recreates, and where a SIGKILL can leave it.
    subprocess.run(["docker", "rename", old["Id"], f"{old['Id'][:12]}_{name}"], check=True)
    compose = Compose(
        tuple(compose_cmd()), broken_stack.project, broken_stack.compose_file, broken_stack.root
    )
    lines: list[str] = []
    code = compose.up_no_deps("app", lines.append, timeout_s=120)
    assert code == 0, "\n".join(lines)
    assert any("repaired an interrupted recreate" in line for line in lines), lines
    assert inspect_container(broken_stack, "app")["Name"].lstrip("/") == name
