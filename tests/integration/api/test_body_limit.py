"""A patch body over ORCHESTRATOR_API_MAX_BODY_BYTES is answered 413 before anything is
written, whether its size is announced (Content-Length) or streamed (chunked).

The API runs with a 64 KiB limit (conftest), so a body the default 8 MiB limit would
take is refused here: the limit is the setting's, not a constant's.
"""

from __future__ import annotations

import json
import select
import socket
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func
from sqlalchemy import select as sql_select

from api_service.db.base import Database
from api_service.db.models import ActionPlan, OrchestratorRun
from tests.integration.api.conftest import MAX_BODY_BYTES, ApiServer
from tests.support.auth import ALICE

FIFTY_MB = 50 * 1024 * 1024
# Small chunks, each given a moment to be read: the server has consumed everything sent
# when it answers, so closing the connection does not reset it under the answer.
CHUNK = 16 * 1024


def _rows(database_url: str) -> tuple[int, int]:
    db = Database(database_url)
    try:
        with db.session() as session:
            runs = session.scalar(sql_select(func.count()).select_from(OrchestratorRun))
            plans = session.scalar(sql_select(func.count()).select_from(ActionPlan))
            return int(runs or 0), int(plans or 0)
    finally:
        db.dispose()


def _request_head(server: ApiServer, extra: str) -> bytes:
    host = urlsplit(server.base_url).netloc
    return (
        f"POST /orchestrator/runs HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {ALICE.token}\r\nContent-Type: application/json\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:  # the answer is already in hand by then
            break
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _send_chunked(server: ApiServer, total: int) -> tuple[int, dict[str, str], bytes, int]:
    """Stream a JSON body of ``total`` bytes in chunks, stopping as soon as the server
    answers; what it answered and how many body bytes left the client."""
    parts = urlsplit(server.base_url)
    prefix = b'{"instruction": "fix it", "target_service": "app", "patch": "'
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(_request_head(server, "Transfer-Encoding: chunked\r\n"))
        while sent < total:
            piece = (prefix if sent == 0 else b"") + b"x" * CHUNK
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
        status, headers, body = _read_response(sock)
    return status, headers, body, sent


def test_a_50_mb_patch_announced_by_content_length_is_413_unread(api_server: ApiServer) -> None:
    before = _rows(api_server.database_url)
    parts = urlsplit(api_server.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        # Only the head: the server must answer without waiting for the 50 MB.
        sock.sendall(_request_head(api_server, f"Content-Length: {FIFTY_MB}\r\n"))
        status, headers, body = _read_response(sock)
    assert status == 413
    error = json.loads(body)
    assert error["error"] == "payload_too_large"
    assert str(MAX_BODY_BYTES) in error["detail"]
    assert error["request_id"] == headers["x-request-id"]
    assert _rows(api_server.database_url) == before


def test_a_50_mb_patch_streamed_without_length_is_413_once_past_the_limit(
    api_server: ApiServer,
) -> None:
    before = _rows(api_server.database_url)
    status, headers, body, sent = _send_chunked(api_server, FIFTY_MB)
    assert status == 413, body[:500]
    assert json.loads(body)["error"] == "payload_too_large"
    assert sent < FIFTY_MB  # answered long before the client was done
    assert _rows(api_server.database_url) == before


def test_a_body_under_the_limit_is_still_accepted(api_server: ApiServer) -> None:
    small = {"instruction": "fix it", "target_service": "app", "patch": "x" * 1000}
    response = httpx.post(
        f"{api_server.base_url}/orchestrator/runs", json=small, headers=ALICE.headers, timeout=60
    )
    # Reaches validation (a patch that is no diff is refused later, by the patch step).
    assert response.status_code == 202, response.text
    over = {**small, "patch": "x" * (MAX_BODY_BYTES + 1)}
    refused = httpx.post(
        f"{api_server.base_url}/orchestrator/runs", json=over, headers=ALICE.headers, timeout=60
    )
    assert refused.status_code == 413
