"""Per-service profiles: what may be patched, how to build it, and how to verify it.

Profiles are derived from the resolved compose config (so they match what compose will
actually build) and narrowed/extended by operator overrides from ``config.toml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from moonmind.workflows.orchestrator.errors import UnknownService
from moonmind.workflows.orchestrator.paths import (
    UnsafePathError,
    checked_target,
    literal_prefix,
    never_patchable_reason,
)

DEFAULT_MANIFESTS = (
    "requirements*.txt",
    "pyproject.toml",
    "poetry.lock",
    "package.json",
    "package-lock.json",
    "pnpm-lock.yaml",
    "yarn.lock",
)

_OVERRIDE_KEYS = frozenset(
    {
        "host",
        "health_url",
        "health_expected_status",
        "health_timeout_seconds",
        "stable_seconds",
        "allow",
        "protected",
        "approval_requirement",
        "approver_roles",
        "approval_valid_minutes",
    }
)
APPROVAL_REQUIREMENTS = ("pre-run", "pre-verify")
MIN_APPROVAL_MINUTES = 5
_HEALTHCHECK_LINE = re.compile(r"^\s*HEALTHCHECK\s+(?!NONE\b)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ServiceProfile:
    """Everything the orchestrator needs to know about one compose service."""

    name: str
    build_context: str | None
    dockerfile: str | None
    image: str | None
    health_url: str | None
    health_expected_status: int = 200
    health_timeout_seconds: float = 120
    # Verify: the container must have been up this long since its start (minReadySeconds).
    stable_seconds: float = 3.0
    has_healthcheck: bool = False
    allow: tuple[str, ...] = ()
    protected: bool = False
    has_build: bool = False
    approval_requirement: str = "pre-run"
    approver_roles: tuple[str, ...] = ("operator",)
    approval_valid_minutes: int = 60
    # The Docker host the service runs on; its worker consumes "<queue>.<host>".
    host: str | None = None


def get_profile(
    profiles: Mapping[str, ServiceProfile], name: str, compose_path: Path | None = None
) -> ServiceProfile:
    """Look up a profile, failing with the list of valid names."""
    try:
        return profiles[name]
    except KeyError:
        raise UnknownService(name, sorted(profiles), compose_path) from None


def load_profiles(
    compose_config: Mapping[str, Any],
    *,
    workspace: Path,
    overrides: Mapping[str, Mapping[str, Any]],
    compose_file: Path | None = None,
) -> dict[str, ServiceProfile]:
    """Build one profile per compose service, applying validated overrides."""
    services = compose_config.get("services") or {}
    unknown = sorted(set(overrides) - set(services))
    if unknown:
        raise ValueError(
            f"[orchestrator.services.{unknown[0]}] names a service not in the compose file "
            f"(available: {', '.join(sorted(services)) or '(none)'})"
        )
    root = workspace.resolve()
    guard = _PatternGuard(root, _compose_relpaths(root, compose_file))
    profiles = {}
    for name in sorted(services):
        base = _base_profile(name, services[name] or {}, root, guard)
        profiles[name] = _apply_override(base, overrides.get(name) or {}, guard)
    return profiles


def _base_profile(
    name: str, service: Mapping[str, Any], root: Path, guard: _PatternGuard
) -> ServiceProfile:
    """Profile straight from compose: build location, image, healthcheck, default allow."""
    context, dockerfile, has_build = _build_paths(service.get("build"), root)
    allow = _default_allow(context, dockerfile, guard)
    image = service.get("image")
    return ServiceProfile(
        name=name,
        build_context=context,
        dockerfile=dockerfile,
        image=image if isinstance(image, str) else None,
        health_url=None,
        has_healthcheck=_compose_healthcheck(service) or _dockerfile_healthcheck(root, dockerfile),
        allow=allow,
        has_build=has_build,
    )


def _build_paths(build: Any, root: Path) -> tuple[str | None, str | None, bool]:
    """(context, dockerfile) relative to the workspace, or None when outside/remote."""
    if build is None:
        return None, None, False
    if isinstance(build, str):
        raw_context, raw_dockerfile = build, "Dockerfile"
    elif isinstance(build, Mapping):
        raw_context = str(build.get("context") or ".")
        raw_dockerfile = build.get("dockerfile") or "Dockerfile"
        if "dockerfile_inline" in build and "dockerfile" not in build:
            raw_dockerfile = None
    else:
        return None, None, True
    context_abs = _local_path(raw_context, root)
    context = _relative_to(context_abs, root)
    if context_abs is None or context is None:
        return None, None, True
    dockerfile = None
    if raw_dockerfile is not None:
        dockerfile = _relative_to(context_abs / str(raw_dockerfile), root)
    return context, dockerfile, True


def _local_path(raw: str, root: Path) -> Path | None:
    """Absolute local path for a build context; None for git/URL contexts."""
    if "://" in raw or raw.startswith("git@") or raw.endswith(".git"):
        return None
    path = Path(raw)
    return path if path.is_absolute() else root / path


def _relative_to(path: Path | None, root: Path) -> str | None:
    """Workspace-relative posix path, or None if ``path`` escapes the workspace."""
    if path is None:
        return None
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        return None
    return rel.as_posix()


def _default_allow(
    context: str | None, dockerfile: str | None, guard: _PatternGuard
) -> tuple[str, ...]:
    """The Dockerfile plus dependency manifests in the build context."""
    if context is None:
        return ()
    prefix = PurePosixPath(context)
    patterns = [dockerfile] if dockerfile else []
    patterns += [(prefix / manifest).as_posix() for manifest in DEFAULT_MANIFESTS]
    seen: dict[str, None] = {}
    for pattern in patterns:
        if guard.refusal(pattern) is None:
            seen.setdefault(pattern, None)
    return tuple(seen)


def _compose_healthcheck(service: Mapping[str, Any]) -> bool:
    """True when compose defines an enabled healthcheck for the service."""
    check = service.get("healthcheck")
    if not isinstance(check, Mapping) or check.get("disable"):
        return False
    test = check.get("test")
    if isinstance(test, list) and test and str(test[0]).upper() == "NONE":
        return False
    return test is not None


def _dockerfile_healthcheck(root: Path, dockerfile: str | None) -> bool:
    """True when the service's Dockerfile declares a HEALTHCHECK (compose may not)."""
    if dockerfile is None:
        return False
    try:
        text = (root / dockerfile).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_HEALTHCHECK_LINE.search(text))


def _compose_relpaths(root: Path, compose_file: Path | None) -> tuple[str, ...]:
    """Workspace-relative path of a compose file with an unusual name (never patchable).

    The usual names (docker-compose*.y*ml, compose*.y*ml) are refused by the path rules.
    """
    if compose_file is None:
        return ()
    rel = _relative_to(compose_file if compose_file.is_absolute() else root / compose_file, root)
    return (rel,) if rel else ()


@dataclass(frozen=True)
class _PatternGuard:
    """Refuses allow patterns that name never-patchable files or escape the workspace."""

    root: Path
    compose_files: tuple[str, ...]

    def refusal(self, pattern: str) -> str | None:
        """Why an allow pattern targets something that must never be edited, or None.

        The pattern itself must be a safe, patchable relative path, and its leading
        directories (up to the first wildcard) must not leave the workspace through a
        symlink or land in .git.
        """
        reason = never_patchable_reason(pattern, self.compose_files)
        if reason is not None:
            return reason
        prefix = literal_prefix(pattern)
        if not prefix:
            return None
        try:
            checked_target(self.root, prefix, self.compose_files)
        except UnsafePathError as exc:
            return exc.reason
        return None


def _apply_override(
    base: ServiceProfile, override: Mapping[str, Any], guard: _PatternGuard
) -> ServiceProfile:
    """Merge one ``[orchestrator.services.<name>]`` table after validating it."""
    where = f"[orchestrator.services.{base.name}]"
    extra = sorted(set(override) - _OVERRIDE_KEYS)
    if extra:
        raise ValueError(f"{where}: unknown key {extra[0]!r} (allowed: {sorted(_OVERRIDE_KEYS)})")
    return ServiceProfile(
        name=base.name,
        build_context=base.build_context,
        dockerfile=base.dockerfile,
        image=base.image,
        health_url=_opt_str(override, "health_url", base.health_url, where),
        health_expected_status=_status(override, base.health_expected_status, where),
        health_timeout_seconds=_timeout(override, base.health_timeout_seconds, where),
        stable_seconds=_stable(override, base.stable_seconds, where),
        has_healthcheck=base.has_healthcheck,
        allow=_allow(override, base.allow, guard, where),
        protected=_bool(override, "protected", base.protected, where),
        has_build=base.has_build,
        host=_host(override, base.host, where),
        **_approval(override, base, where),
    )


def _approval(override: Mapping[str, Any], base: ServiceProfile, where: str) -> dict[str, Any]:
    """The approval policy of a protected service (data model: roles, lifetime >= 5 min)."""
    requirement = override.get("approval_requirement", base.approval_requirement)
    if requirement not in APPROVAL_REQUIREMENTS:
        raise ValueError(f"{where}: approval_requirement must be one of {APPROVAL_REQUIREMENTS}")
    roles = override.get("approver_roles", list(base.approver_roles))
    if (
        not isinstance(roles, list | tuple)
        or not roles
        or not all(isinstance(r, str) and r for r in roles)
    ):
        raise ValueError(f"{where}: approver_roles must be a non-empty list of role names")
    minutes = override.get("approval_valid_minutes", base.approval_valid_minutes)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < MIN_APPROVAL_MINUTES:
        raise ValueError(
            f"{where}: approval_valid_minutes must be a whole number >= {MIN_APPROVAL_MINUTES}"
        )
    return {
        "approval_requirement": requirement,
        "approver_roles": tuple(roles),
        "approval_valid_minutes": minutes,
    }


def _opt_str(override: Mapping[str, Any], key: str, default: str | None, where: str) -> str | None:
    value = override.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string")
    return value or None


def _status(override: Mapping[str, Any], default: int, where: str) -> int:
    value = override.get("health_expected_status", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{where}: health_expected_status must be an HTTP status (100-599)")
    return value


def _timeout(override: Mapping[str, Any], default: float, where: str) -> float:
    value = override.get("health_timeout_seconds", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where}: health_timeout_seconds must be a positive number")
    return float(value)


def _stable(override: Mapping[str, Any], default: float, where: str) -> float:
    value = override.get("stable_seconds", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{where}: stable_seconds must be a number >= 0")
    return float(value)


def _host(override: Mapping[str, Any], default: str | None, where: str) -> str | None:
    value = _opt_str(override, "host", default, where)
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"{where}: host must be letters, digits, '.', '_' or '-'")
    return value


def _bool(override: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = override.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be true or false")
    return value


def _allow(
    override: Mapping[str, Any],
    default: tuple[str, ...],
    guard: _PatternGuard,
    where: str,
) -> tuple[str, ...]:
    """Validated allow globs; explicit patterns for forbidden files are rejected loudly."""
    if "allow" not in override:
        return default
    value = override["allow"]
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"{where}: allow must be a list of non-empty glob strings")
    for pattern in value:
        reason = guard.refusal(pattern)
        if reason is not None:
            raise ValueError(f"{where}: allow pattern {pattern!r} is refused: {reason}")
    return tuple(dict.fromkeys(value))
