"""Text PostgreSQL cannot store (a NUL character) is a 400, never a 500.

Found by schemathesis (``--checks all``, stateful phase): an instruction with a NUL
reached the INSERT and PostgreSQL refused it (``DataError``), a 500.
"""

from __future__ import annotations

import httpx

from tests.integration.api.conftest import ApiServer
from tests.support.auth import ALICE


def test_nul_in_an_instruction_or_a_filter_is_a_400(api_server: ApiServer) -> None:
    with httpx.Client(base_url=api_server.base_url, headers=ALICE.headers, timeout=60) as http:
        created = http.post(
            "/orchestrator/runs", json={"instruction": "fix\x00it", "target_service": "app"}
        )
        assert created.status_code == 400, created.text
        assert created.json()["detail"].startswith("instruction:")
        listed = http.get("/orchestrator/runs", params={"service": "a\x00b"})
        assert listed.status_code == 400, listed.text
        assert listed.json()["error"] == "invalid_request"
