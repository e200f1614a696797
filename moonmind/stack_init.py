"""`moonmind init`: a config.toml for the stack in the current repository.

Reads the compose file (through ``compose config`` when a compose CLI is installed, so
interpolation and relative paths resolve as compose sees them; the raw YAML otherwise),
writes one ``[orchestrator.services.<name>]`` section per service with a guessed health
URL and the allow-list of its build context, keeps the orchestrator's state folder out of
git, and says what to type next.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from moonmind.stack_guess import guess_allow, guess_health
from moonmind.workflows.orchestrator.adapters.compose import (
    Compose,
    ComposeError,
    detect_compose_command,
)
from moonmind.workflows.orchestrator.service_profiles import ServiceProfile, load_profiles

COMPOSE_NAMES = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")
STATE_FOLDER = "var/"  # the defaults keep the database, broker and artifacts under var/
NEXT_COMMANDS = ("moonmind db upgrade", "moonmind orchestrator up")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class InitError(Exception):
    """Something stops `moonmind init`; the message says what to do."""


def find_compose_file(root: Path, given: str | None) -> Path:
    if given:
        path = root / given
        if not path.is_file():
            raise InitError(f"{given}: no such compose file")
        return path
    for name in COMPOSE_NAMES:
        if (root / name).is_file():
            return root / name
    raise InitError(
        f"no compose file here ({', '.join(COMPOSE_NAMES)}); run it in your stack's "
        "repository or name the file with --compose-file"
    )


def read_compose(root: Path, compose_file: Path) -> dict[str, Any]:
    """The compose model: resolved by the compose CLI when there is one, else the raw YAML."""
    try:
        command = detect_compose_command(os.environ.get("ORCHESTRATOR_COMPOSE_COMMAND"))
        project = re.sub(r"[^a-z0-9_-]", "", root.name.lower()) or "stack"
        return Compose(tuple(command), project, compose_file, root).config()
    except ComposeError:
        pass
    try:
        data = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InitError(f"cannot read {compose_file.name}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise InitError(f"{compose_file.name} has no services")
    return data


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _section(
    name: str, service: Mapping[str, Any], profile: ServiceProfile, root: Path, probe: bool
) -> list[str]:
    health = guess_health(service, probe=probe)
    allow = guess_allow(profile, root)
    lines = [f"[orchestrator.services.{_toml_key(name)}]"]
    if allow.image_only:
        lines.append(f"# {allow.reason}")
    if health.url is not None:
        lines.append(f"health_url = {json.dumps(health.url)}  # {health.reason}")
    else:
        lines.append(f'# health_url = "http://127.0.0.1:PORT/health"  # {health.reason}: set it')
    if allow.patterns:
        listed = ", ".join(json.dumps(p) for p in allow.patterns)
        lines.append(f"allow = [{listed}]  # {allow.reason}")
    elif not allow.image_only:
        lines.append(f"# allow = []  # {allow.reason}")
    return lines


def render_config(root: Path, compose_file: Path, model: Mapping[str, Any], probe: bool) -> str:
    """config.toml's text for this stack (only what differs from, or adds to, the defaults)."""
    services = model.get("services") or {}
    profiles = load_profiles(model, workspace=root, overrides={}, compose_file=compose_file)
    rel = compose_file.resolve().relative_to(root.resolve()).as_posix()
    out = [
        "# MoonMind Orchestrator settings for this stack, written by `moonmind init`.",
        "# Everything not set here takes its default (README, Settings); environment",
        "# variables override it. Check the guessed health URLs before the first run.",
        "",
        "[orchestrator]",
        f"compose_file = {json.dumps(rel)}",
    ]
    for name in sorted(services):
        out += ["", *_section(name, services[name] or {}, profiles[name], root, probe)]
    return "\n".join(out) + "\n"


def ignore_state_folder(root: Path) -> bool:
    """Add the state folder to .gitignore (created if missing); False when already there."""
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    wanted = STATE_FOLDER.strip("/")
    for line in text.splitlines():
        if line.strip().strip("/") == wanted and not line.strip().startswith(("#", "!")):
            return False
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(f"{text}{STATE_FOLDER}\n", encoding="utf-8")
    return True


def run_init(root: Path, compose_name: str | None, *, force: bool, probe: bool = True) -> Path:
    """Write config.toml in ``root``; its path. InitError when it should not."""
    target = Path(os.environ.get("MOONMIND_CONFIG") or "config.toml")
    target = target if target.is_absolute() else root / target
    if target.exists() and not force:
        raise InitError(
            f"{target.name} already exists; pass --force to overwrite it "
            "(or edit it by hand: see the README's Settings)"
        )
    compose_file = find_compose_file(root, compose_name)
    model = read_compose(root, compose_file)
    try:
        text = render_config(root, compose_file, model, probe)
    except ValueError as exc:
        raise InitError(str(exc)) from None
    target.write_text(text, encoding="utf-8")
    return target


def cmd_init(args: argparse.Namespace) -> int:
    root = Path.cwd()
    try:
        target = run_init(root, args.compose_file, force=args.force)
    except InitError as exc:
        print(f"moonmind: {exc}", file=sys.stderr)
        return 2
    print(target.read_text(encoding="utf-8"), end="")
    print(f"\nwrote {target}")
    if ignore_state_folder(root):
        print(
            f"added {STATE_FOLDER} (the orchestrator's database, queue and artifacts) to .gitignore"
        )
    print("next:")
    for command in NEXT_COMMANDS:
        print(f"  {command}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="write config.toml for the stack in this repository")
    init.add_argument("--compose-file", help=f"default: the first of {', '.join(COMPOSE_NAMES)}")
    init.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    init.set_defaults(func=cmd_init)
