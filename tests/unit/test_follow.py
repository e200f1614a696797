"""The one follow loop shared by `moonmind orchestrator submit --follow` and `make demo`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from moonmind.follow import FollowTimeout, follow_run, step_line

RUN_ID = "4f1c2a7e-0000-4000-8000-000000000001"


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    chunks = [": keep-alive\n\n"]
    for number, (kind, data) in enumerate(events, start=1):
        chunks.append(f"id: {number}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")
    return "".join(chunks).encode()


EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("step", {"name": "analyze", "status": "in_progress", "message": None}),
    ("log", {"step": "analyze", "file": "analyze.log", "line": "ModuleNotFoundError: yaml"}),
    ("step", {"name": "analyze", "status": "failed", "message": "engine unreachable"}),
    ("step", {"name": "build", "status": "skipped", "message": None}),
    ("status", {"status": "failed", "message": "analyze failed"}),
]


def _client(body: bytes) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/orchestrator/runs/{RUN_ID}":  # the detail, read at the end
            return httpx.Response(200, json={"run_id": RUN_ID, "diagnosis": None})
        assert request.url.path == f"/orchestrator/runs/{RUN_ID}/events"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return httpx.Client(transport=httpx.MockTransport(handler))


def _follow(body: bytes, **kwargs: Any) -> tuple[str, list[str]]:
    lines: list[str] = []
    with _client(body) as client:
        status = follow_run(client, "http://api", RUN_ID, out=lines.append, **kwargs)
    return status, lines


def test_prints_steps_and_the_final_status() -> None:
    status, lines = _follow(_sse(EVENTS))
    assert status == "failed"
    assert lines == [
        "analyze  in_progress",
        "analyze  failed — engine unreachable",
        "build    skipped",
        "run failed (analyze failed)",
    ]


def test_log_lines_only_when_asked() -> None:
    _, lines = _follow(_sse(EVENTS), show_logs=True)
    assert "  analyze| ModuleNotFoundError: yaml" in lines


def test_the_demo_leaves_out_the_status_line() -> None:
    status, lines = _follow(_sse(EVENTS), show_status=False)
    assert status == "failed"
    assert not any(line.startswith("run ") for line in lines)


def test_a_stream_that_ends_early_has_unknown_status() -> None:
    status, lines = _follow(_sse(EVENTS[:2]))
    assert status == "unknown"
    assert lines == ["analyze  in_progress"]


def test_timeout_stops_following() -> None:
    with pytest.raises(FollowTimeout):
        _follow(_sse(EVENTS), timeout=-1)


def test_step_line_pads_the_name() -> None:
    assert step_line({"name": "verify", "status": "succeeded"}) == "verify   succeeded"
