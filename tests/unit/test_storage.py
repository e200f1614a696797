from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from moonmind.workflows.orchestrator.storage import ArtifactPathError, ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


RUN = uuid.UUID("00000000-0000-4000-8000-000000000001")


class TestWrite:
    def test_records_checksum_and_size(self, store: ArtifactStore) -> None:
        stored = store.write(RUN, "logs/build.log", b"step 1\nstep 2\n")
        target = store.run_dir(RUN) / "logs" / "build.log"
        assert target.read_bytes() == b"step 1\nstep 2\n"
        assert stored.path == "logs/build.log"
        assert stored.checksum == hashlib.sha256(b"step 1\nstep 2\n").hexdigest()
        assert stored.size_bytes == 14

    def test_replaces_atomically_without_leftovers(self, store: ArtifactStore) -> None:
        store.write(RUN, "plan.json", b"{}")
        store.write(RUN, "plan.json", b'{"v": 2}')
        folder = store.run_dir(RUN)
        assert sorted(p.name for p in folder.iterdir()) == ["plan.json"]
        assert (folder / "plan.json").read_bytes() == b'{"v": 2}'

    def test_stream_is_readable_while_written(self, store: ArtifactStore) -> None:
        stream = store.stream(RUN, "build.log")
        stream.line("first")
        assert (store.run_dir(RUN) / "build.log").read_text() == "first\n"
        stream.line("second")
        stored = stream.close()
        assert stored.checksum == hashlib.sha256(b"first\nsecond\n").hexdigest()


class TestRejectsEscapes:
    @pytest.mark.parametrize(
        "relpath", ["../x", "a/../../x", "..", "/etc/passwd", "", ".", "a//b/../../../x", "a/\x00"]
    )
    def test_bad_paths(self, store: ArtifactStore, relpath: str) -> None:
        with pytest.raises(ArtifactPathError):
            store.write(RUN, relpath, b"nope")
        assert not (store.root.parent / "x").exists()

    def test_symlinked_directory_out_of_run_folder(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        store.run_dir(RUN).mkdir(parents=True)
        os.symlink(outside, store.run_dir(RUN) / "logs")
        with pytest.raises(ArtifactPathError):
            store.write(RUN, "logs/evil.log", b"nope")
        assert list(outside.iterdir()) == []

    def test_symlinked_file_out_of_run_folder(self, store: ArtifactStore, tmp_path: Path) -> None:
        victim = tmp_path / "victim.txt"
        victim.write_text("keep me")
        store.run_dir(RUN).mkdir(parents=True)
        os.symlink(victim, store.run_dir(RUN) / "build.log")
        with pytest.raises(ArtifactPathError):
            store.write(RUN, "build.log", b"overwrite")
        assert victim.read_text() == "keep me"

    def test_run_id_must_be_a_uuid(self, store: ArtifactStore) -> None:
        with pytest.raises(ValueError, match="badly formed"):
            store.write("../../etc", "x", b"nope")
