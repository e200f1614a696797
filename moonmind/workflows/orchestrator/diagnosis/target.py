"""What the rules work on (the service's files in the workspace) and what they produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moonmind.workflows.orchestrator.paths import is_inside


@dataclass(frozen=True)
class FileEdit:
    """Full new content for one workspace-relative file, with a human reason.

    ``package`` and ``unpinned`` (its ecosystem) name a dependency added without a
    version, which the build step pins to what it installed; ``guess`` says why a name
    was guessed (it is not in a known table), so a person can see it and approve it.
    """

    path: str
    new_data: bytes
    reason: str
    package: str = field(default="", compare=False)
    unpinned: str = field(default="", compare=False)
    guess: str = field(default="", compare=False)


@dataclass(frozen=True)
class Target:
    """Where the service's files live, resolved against the workspace.

    ``context`` and ``dockerfile`` are normalised workspace-relative paths ("" = root).
    """

    workspace: Path
    context: str
    dockerfile: str

    def file(self, relpath: str) -> Path | None:
        """Existing regular file inside the workspace, or None."""
        full = self.workspace / relpath
        if not full.is_file() or full.is_symlink():
            return None
        return full if self.contains(full) else None

    def contains(self, path: Path) -> bool:
        """True when path, symlinks followed, stays inside the workspace."""
        return is_inside(path.resolve(), self.workspace.resolve())
