"""The embedded transport never hands a consumer a message that is still being written."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem

from moonmind.workflows.orchestrator import local_transport

# Large enough that serialising and writing it takes many consumer polls.
BIG = {"body": "x" * 8_000_000, "items": list(range(200_000))}


def _options(folder: Path) -> dict[str, Any]:
    for sub in ("queue", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
    }


def _poll(transport: type, options: dict[str, Any], results: Any) -> None:
    """In its own process (no GIL shared with the producer): read the queue as fast as
    possible until a message comes, and say what it was."""
    with Connection("filesystem://", transport=transport, transport_options=options) as c:
        channel = c.channel()
        results.put("polling")
        while True:
            try:
                message = channel._get("q")
            except filesystem.Empty:
                continue
            except json.JSONDecodeError:
                results.put("unreadable")
                return
            results.put("whole" if message == BIG else "different")
            return


def _race(transport: type, folder: Path) -> str:
    """One process puts BIG while another polls the queue; what did the poller read?"""
    options = _options(folder)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    poller = context.Process(target=_poll, args=(transport, options, results))
    poller.start()
    try:
        assert results.get(timeout=30) == "polling"
        with Connection("filesystem://", transport=transport, transport_options=options) as c:
            c.channel()._put("q", BIG)
        return str(results.get(timeout=60))
    finally:
        poller.kill()
        poller.join()


def test_a_consumer_polling_during_a_put_reads_the_whole_message(tmp_path: Path) -> None:
    assert _race(local_transport.Transport, tmp_path) == "whole"
    assert not list((tmp_path / "queue").iterdir()), "no partial file is left behind"


def test_kombus_own_transport_hands_out_a_message_still_being_written(tmp_path: Path) -> None:
    """The failure the atomic transport exists for (a worker died of it in CI)."""
    assert _race(filesystem.Transport, tmp_path) == "unreadable"


def test_a_put_into_a_missing_folder_is_a_channel_error(tmp_path: Path) -> None:
    options = _options(tmp_path) | {"data_folder_out": str(tmp_path / "gone")}
    with Connection(
        "filesystem://", transport=local_transport.Transport, transport_options=options
    ) as c:
        with pytest.raises(local_transport.ChannelError):
            c.channel()._put("q", {"a": 1})
    assert not list((tmp_path / "queue").iterdir())
