"""Run artifacts on disk: <artifact root>/<run_id>/<relative path>, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from moonmind.workflows.orchestrator.paths import UnsafePathError, is_inside, normalize_relpath


class ArtifactPathError(ValueError):
    """A relative path that would leave the run's folder."""


class ArtifactStorageError(OSError):
    """The artifact root cannot be written."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the run folder, posix separators
    checksum: str
    size_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def run_dir(self, run_id: uuid.UUID | str) -> Path:
        return self.root / str(uuid.UUID(str(run_id)))

    def resolve(self, run_id: uuid.UUID | str, relpath: str) -> Path:
        """Map a relative artifact path to a file inside the run folder, or refuse it."""
        try:
            rel = normalize_relpath(relpath.replace("\\", "/"))
        except UnsafePathError as exc:
            raise ArtifactPathError(f"artifact path refused: {exc}") from None
        base = self.run_dir(run_id).resolve()
        target = (base / rel).resolve()
        # resolve() follows symlinks already on disk, so a link pointing out is caught here.
        if not is_inside(target, base) or target == base:
            raise ArtifactPathError(f"artifact path escapes the run folder: {relpath!r}")
        return target

    def write(self, run_id: uuid.UUID | str, relpath: str, data: bytes) -> StoredArtifact:
        target = self.resolve(run_id, relpath)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ArtifactStorageError(f"cannot write artifact {relpath}: {exc}") from exc
        return StoredArtifact(
            path=self._relative(run_id, target),
            checksum=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
        )

    def stream(self, run_id: uuid.UUID | str, relpath: str) -> LogStream:
        """A log written line by line so readers can follow it while it grows."""
        target = self.resolve(run_id, relpath)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = target.open("w", encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ArtifactStorageError(f"cannot write artifact {relpath}: {exc}") from exc
        return LogStream(self, run_id, target, handle)

    def describe(self, run_id: uuid.UUID | str, relpath: str) -> StoredArtifact:
        target = self.resolve(run_id, relpath)
        return StoredArtifact(
            path=self._relative(run_id, target),
            checksum=sha256_file(target),
            size_bytes=target.stat().st_size,
        )

    def _relative(self, run_id: uuid.UUID | str, target: Path) -> str:
        return target.relative_to(self.run_dir(run_id).resolve()).as_posix()


class LogStream:
    def __init__(
        self, store: ArtifactStore, run_id: uuid.UUID | str, target: Path, handle: IO[str]
    ) -> None:
        self._store = store
        self._run_id = run_id
        self.target = target
        self._handle = handle

    def line(self, text: str) -> None:
        self._handle.write(text.rstrip("\n") + "\n")
        self._handle.flush()

    def close(self) -> StoredArtifact:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        return self._store.describe(self._run_id, self._rel())

    def _rel(self) -> str:
        return self.target.relative_to(self._store.run_dir(self._run_id).resolve()).as_posix()

    def __enter__(self) -> LogStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._handle.closed:
            self._handle.close()
