"""The API freezes its start-up heap once it starts serving (full garbage collections
under load then skip it instead of stalling the process for a tenth of a second)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from api_service.main import create_app
from moonmind.config import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_start_up_freezes_the_heap_built_so_far(unfrozen: None, tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert gc.get_freeze_count() == 0
    frozen: list[int] = []

    async def start() -> None:
        async with app.router.lifespan_context(app):  # as uvicorn starts and stops the app
            frozen.append(gc.get_freeze_count())

    anyio.run(start)
    assert len(frozen) == 1
    assert frozen[0] > 0
