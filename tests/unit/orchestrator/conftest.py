"""Shared fixtures of the database-only orchestrator tests: settings on a SQLite file in
the test's tmp_path, and that database migrated. A module may define its own instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_service.db.base import Database, get_database
from api_service.db.migrate import upgrade
from moonmind.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        artifact_root=tmp_path / "artifacts",
    )


@pytest.fixture
def db(settings: Settings) -> Database:
    upgrade(settings.database_url)
    return get_database(settings.database_url)
