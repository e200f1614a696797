"""FastAPI dependencies: one unit of work per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api_service.db.base import Database
from moonmind.config import Settings

# What only reads the app's state is `async def`: FastAPI runs it on the event loop. A
# plain `def` dependency costs a hop to the thread pool and back on every request.


async def get_db(request: Request) -> Database:
    return _database(request)


def _database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


def get_session(request: Request) -> Iterator[Session]:
    with _database(request).session() as session:
        yield session


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DatabaseDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
