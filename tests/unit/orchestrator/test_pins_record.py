"""The run's record of pinned files (pins.json): each pin adds to it, and a write that
fails part-way leaves the previous record whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.steps.pins import PINS_FILE, _remember, pinned_sha256
from tests.support.steps import make_context


def test_each_pin_is_added_to_the_record(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    _remember(ctx, "requirements.txt", "a" * 64)
    _remember(ctx, "web/package.json", "b" * 64)
    assert pinned_sha256(ctx, "requirements.txt") == "a" * 64
    assert pinned_sha256(ctx, "web/package.json") == "b" * 64
    assert pinned_sha256(ctx, "other.txt") is None


def test_a_write_that_fails_leaves_the_previous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path)
    _remember(ctx, "requirements.txt", "a" * 64)
    record = ctx.store.run_dir(ctx.run_id) / PINS_FILE
    before = record.read_bytes()

    def disk_full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the new bytes never reach the disk
    with pytest.raises(OSError, match="No space left"):
        _remember(ctx, "web/package.json", "b" * 64)
    assert record.read_bytes() == before
    assert pinned_sha256(ctx, "requirements.txt") == "a" * 64
    assert sorted(p.name for p in record.parent.iterdir()) == [PINS_FILE]  # no leftovers
