"""The orchestrator's own files: never part of a workspace snapshot, diff or pre-image.

With the defaults, a worker started in a stack's own repository keeps its SQLite file,
its filesystem broker and its artifacts under that repository's ``var/``. These paths
are handed to every snapshot as exclusions, wherever they are configured; the ones
outside the workspace are simply never met.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from moonmind.config import Settings

STATE_DIR = "var"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _absolute(path: Path, cwd: Path) -> Path:
    path = path.expanduser()
    return (path if path.is_absolute() else cwd / path).resolve()


def sqlite_files(url: str, cwd: Path) -> tuple[Path, ...]:
    """The SQLite database file a URL names and its WAL/journal companions (none otherwise)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return ()
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return ()
    db = _absolute(Path(str(parsed.database)), cwd)
    return (db, *(db.with_name(db.name + suffix) for suffix in _SQLITE_SIDE_FILES))


def orchestrator_state(settings: Settings, cwd: Path | None = None) -> tuple[Path, ...]:
    """Absolute paths of everything the orchestrator writes for itself.

    The artifact root, the SQLite file (and its -wal/-shm/-journal), the filesystem
    broker's folder and the ``var/`` folder of the directory the process runs in.
    """
    here = (cwd or Path.cwd()).resolve()
    found = [
        settings.artifact_root_path,
        *sqlite_files(settings.database_url, here),
        _absolute(Path(settings.broker_folder), here),
        here / STATE_DIR,
    ]
    return tuple(dict.fromkeys(found))
