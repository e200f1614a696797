"""An edited ``.env`` is seen by the next submission: the parsed stack is cached per
version of the compose file and of the ``.env`` beside it, which compose interpolates."""

from __future__ import annotations

from pathlib import Path

import pytest

from moonmind.config import Settings
from moonmind.workflows.orchestrator.service import load_stack

COMPOSE = """\
version: "2.4"
services:
  app:
    image: "envtest/app:${APP_TAG}"
    build:
      context: .
      args:
        GREETING: "${GREETING}"
"""


def _image_and_args(settings: Settings) -> tuple[str, dict[str, str]]:
    app = load_stack(settings).config["services"]["app"]
    return app["image"], app["build"]["args"]


@pytest.mark.parametrize("folder", ["", "deploy"], ids=["at-the-root", "in-a-subfolder"])
def test_an_edited_env_file_changes_the_parsed_stack(tmp_path: Path, folder: str) -> None:
    workspace = tmp_path / "stack"
    compose_dir = workspace / folder
    compose_dir.mkdir(parents=True)
    (compose_dir / "docker-compose.yaml").write_text(COMPOSE)
    env = compose_dir / ".env"
    env.write_text("APP_TAG=1\nGREETING=hello\n")
    settings = Settings(
        workspace=workspace,
        compose_file=str(Path(folder) / "docker-compose.yaml"),
        compose_project=f"envtest{folder}",
    )
    assert _image_and_args(settings) == ("envtest/app:1", {"GREETING": "hello"})
    assert load_stack(settings) is load_stack(settings)  # unchanged files: parsed once

    env.write_text("APP_TAG=22\nGREETING=good morning\n")
    assert _image_and_args(settings) == ("envtest/app:22", {"GREETING": "good morning"})
