"""The HTTP side of `moonmind runs`: base URL, bearer token, errors mapped to exit codes.

Exit codes (README, "From the terminal"): 0 ok; 1 the run ended failed, rolled_back or
cancelled; 2 usage or a request the API refused as invalid (400/422); 3 authentication
or permission refused (401/403); 4 run or artifact not found (404); 5 API unreachable or
answering with a server error; 6 not allowed in the run's current state (409).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8000"

OK = 0
RUN_NOT_SUCCEEDED = 1
USAGE = 2
AUTH_REFUSED = 3
NOT_FOUND = 4
UNREACHABLE = 5
CONFLICT = 6

_BY_STATUS = {401: AUTH_REFUSED, 403: AUTH_REFUSED, 404: NOT_FOUND, 409: CONFLICT}

BAD_ENDINGS = ("failed", "rolled_back", "cancelled")


def default_api() -> str:
    """``MOONMIND_API``, else the local API's address."""
    return os.environ.get("MOONMIND_API") or DEFAULT_API


class CliError(Exception):
    """A failure the CLI reports in one or two lines and turns into its exit code."""

    def __init__(self, code: int, message: str, remediation: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.remediation = remediation

    def report(self) -> int:
        print(f"moonmind: {self.message}", file=sys.stderr)
        if self.remediation:
            print(f"moonmind: {self.remediation}", file=sys.stderr)
        return self.code


def error_from(response: httpx.Response) -> CliError:
    """The API's ErrorResponse (error, detail, remediation) as a CliError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": f"HTTP {response.status_code}", "detail": response.text[:200]}
    if response.status_code == 422 and "error" not in body:  # FastAPI's validation answer
        body = {"error": "invalid_request", "detail": str(body.get("detail"))[:300]}
    code = _BY_STATUS.get(response.status_code)
    if code is None:
        code = UNREACHABLE if response.status_code >= 500 else USAGE
    message = f"{body.get('error')}: {body.get('detail') or ''}".rstrip(": ")
    return CliError(code, message, body.get("remediation"))


class Api:
    """One API base URL and token; every call raises CliError instead of returning a 4xx/5xx."""

    def __init__(self, base: str, *, read_timeout: float = 60.0) -> None:
        self.base = base.rstrip("/")
        token = os.environ.get("MOONMIND_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=read_timeout), headers=headers)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                UNREACHABLE,
                f"cannot reach the API at {self.base}: {exc}",
                "start it (moonmind orchestrator up) or point --api / MOONMIND_API at it",
            ) from None
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/orchestrator/runs/{run_id}"))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/orchestrator/runs/{run_id}/artifacts")["artifacts"])

    def download(self, run_id: str, artifact_id: str) -> httpx.Response:
        return self.request("GET", f"/orchestrator/runs/{run_id}/artifacts/{artifact_id}")


def ended_badly(status: str) -> bool:
    return status in BAD_ENDINGS
