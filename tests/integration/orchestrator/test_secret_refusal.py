"""Secrets through the API: a patch that adds one is refused before anything is written,
with the reason in the run detail and the value nowhere; a pre-image (exact bytes, for
rollback) holding one is downloaded redacted unless the caller is an admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.orchestrator.conftest import (
    Orchestrator,
    bring_up,
    git_commit_all,
    health_config,
    tree_bytes,
)
from tests.support.auth import VIC, Caller, principals_toml
from tests.support.stack import Stack

Starter = Callable[..., Orchestrator]
ADA = Caller("ada", ("admin",))
# Assembled at run time so the repository holds no token-shaped strings.
ADDED = "sk_live_" + "9fQ2xL7pV4mN8rT1wZ6bC3dE"
KEPT = "ghp_" + "Lm4Np5Qr6S" * 4


def _adds_a_secret(stack: Stack) -> str:
    old = (stack.root / "app" / "requirements.txt").read_text().splitlines()
    return (
        "\n".join(
            [
                "--- a/app/requirements.txt",
                "+++ b/app/requirements.txt",
                f"@@ -1,{len(old)} +1,{len(old) + 2} @@",
                *(f" {line}" for line in old),
                "+PyYAML",
                f"+# billing key {ADDED}",
            ]
        )
        + "\n"
    )


def _artifacts(orch: Orchestrator, run_id: str, caller: Caller) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{orch.base_url}/orchestrator/runs/{run_id}/artifacts", headers=caller.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return list(response.json()["artifacts"])


def _download(orch: Orchestrator, run_id: str, artifact: dict[str, Any], caller: Caller) -> Any:
    url = f"{orch.base_url}/orchestrator/runs/{run_id}/artifacts/{artifact['artifact_id']}"
    response = httpx.get(url, headers=caller.headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.docker
def test_secret_patch_refused_and_pre_images_redacted(
    broken_stack: Stack, start_orchestrator: Starter
) -> None:
    requirements = broken_stack.root / "app" / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"# index token {KEPT}\n")
    git_commit_all(broken_stack.root, "a token that was already in the repository")
    bring_up(broken_stack)
    orch = start_orchestrator(
        broken_stack, config=principals_toml(ADA, VIC) + health_config(broken_stack)
    )
    orch.headers = ADA.headers
    before = tree_bytes(broken_stack.root)

    refused = orch.post_run(
        instruction="add PyYAML", target_service="app", patch=_adds_a_secret(broken_stack)
    )
    assert refused.status_code == 202, refused.text
    run_id = refused.json()["run_id"]
    detail = orch.wait_terminal(run_id)
    assert detail["status"] == "failed", orch.explain(detail)
    patch_step = next(s for s in detail["steps"] if s["name"] == "patch")
    assert "adds what looks like a secret to app/requirements.txt" in patch_step["message"]
    assert "adds what looks like a secret" in (detail["message"] or "")
    assert tree_bytes(broken_stack.root) == before
    seen = httpx.get(f"{orch.base_url}/orchestrator/runs/{run_id}", headers=ADA.headers).text
    assert ADDED not in seen
    kinds = {a["kind"] for a in _artifacts(orch, run_id, ADA)}
    assert not kinds & {"patch_diff", "pre_image", "pre_image_manifest"}, kinds

    fixed = orch.post_run(instruction="fix the missing dependency", target_service="app")
    run_id = fixed.json()["run_id"]
    detail = orch.wait_terminal(run_id)
    assert detail["status"] == "succeeded", orch.explain(detail)
    listed = _artifacts(orch, run_id, ADA)
    pre_image = next(a for a in listed if a["path"] == "pre-images/app/requirements.txt")
    exact = _download(orch, run_id, pre_image, ADA)
    assert KEPT in exact.text  # rollback's bytes, as stored
    viewer = _download(orch, run_id, pre_image, VIC)
    assert KEPT not in viewer.text
    assert "# index token ***" in viewer.text
    assert viewer.headers["X-Moonmind-Redacted"] == "true"
    diff = next(a for a in listed if a["kind"] == "patch_diff")
    assert KEPT not in _download(orch, run_id, diff, ADA).text  # context lines, redacted
