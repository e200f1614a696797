"""Settings: built-in defaults < config.toml < environment variables.

config.toml groups settings in tables whose names prefix the environment variable:
``[orchestrator] queue = "x"`` is the same setting as ``ORCHESTRATOR_QUEUE=x``.
Per-service overrides live in ``[orchestrator.services.<name>]`` and are kept apart.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from moonmind.utils.durations import DurationSeconds, OptionalDurationSeconds
from moonmind.webhook_settings import Webhooks

DEFAULT_CONFIG_PATH = "config.toml"


class SettingsError(Exception):
    """A setting has a bad value; the message names it."""


API_ROLES = ("viewer", "operator", "approver", "admin")
# The orchestrator's own variables (URLs, tokens, Docker host): never a patch agent's.
AGENT_ENV_REFUSED = ("MOONMIND_", "CELERY_", "ORCHESTRATOR_", "DOCKER_", "STATSD_")


class PrincipalConfig(BaseModel):
    """One ``[[orchestrator.auth.principals]]`` entry: who a bearer token is.

    ``roles`` holds API roles (viewer, operator, approver, admin) and any role a service's
    ``approver_roles`` names (e.g. ``sre``). Only the token's hex sha256 is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+$")
    roles: tuple[str, ...] = Field(min_length=1)
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class OperatorSignature(BaseModel):
    """One ``[[orchestrator.signatures]]`` entry: a regex on the crash block, a kind name,
    and the remediation shown when it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(min_length=1)
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    remediation: str = Field(min_length=1, max_length=2000)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _env_aliases(env_name: str) -> AliasChoices:
    """A setting's environment variable (the config.toml key, flattened) in both cases."""
    return AliasChoices(env_name, env_name.lower())


def _orchestrator_aliases(field: str) -> AliasChoices:
    """Most settings: ``queue`` is ORCHESTRATOR_QUEUE, ``[orchestrator] queue``."""
    return _env_aliases(f"ORCHESTRATOR_{field.upper()}")


class Settings(BaseSettings):
    # A field without its own validation_alias is ORCHESTRATOR_<FIELD>; the field name is
    # accepted too (populate_by_name).
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=_orchestrator_aliases),
    )

    config_path: str = Field(
        default=DEFAULT_CONFIG_PATH, validation_alias=AliasChoices("MOONMIND_CONFIG")
    )
    database_url: str = Field(
        default="sqlite:///var/orchestrator.db",
        validation_alias=_env_aliases("MOONMIND_DATABASE_URL"),
    )
    broker_url: str = Field(
        default="filesystem://",
        validation_alias=_env_aliases("CELERY_BROKER_URL"),
    )
    broker_folder: str = Field(
        default="var/celery",
        validation_alias=_env_aliases("CELERY_BROKER_FOLDER"),
    )
    queue: str = "orchestrator.run"
    # The Docker host this worker drives: it consumes "<queue>.<host>". Empty: the one
    # local host, on the plain queue. Services name their host in [orchestrator.services.x].
    host: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    workspace: Path = Path(".")
    compose_file: str = "docker-compose.yaml"
    compose_project: str = ""
    compose_command: str = ""
    artifact_root: Path = Path("var/artifacts/spec_workflows")
    patch_agent: str = ""
    patch_agent_timeout_seconds: float = Field(default=600.0, gt=0)
    build_timeout_seconds: float = Field(default=900.0, gt=0)
    up_timeout_seconds: float = Field(default=300.0, gt=0)
    # Environment variables the patch agent receives besides PATH, HOME, TZ and the locale.
    patch_agent_env: tuple[str, ...] = ()
    # RabbitMQ's default consumer timeout is 30 minutes
    step_time_limit_seconds: int = Field(default=1500, gt=0, lt=1800)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    stale_after_seconds: float = Field(default=120.0, gt=0)
    rollback_tags_keep: int = Field(default=3, ge=1)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    statsd_host: str = Field(default="", validation_alias=_env_aliases("STATSD_HOST"))
    statsd_port: int = Field(
        default=8125, ge=1, le=65535, validation_alias=_env_aliases("STATSD_PORT")
    )
    statsd_prefix: str = Field(
        default="moonmind.orchestrator",
        validation_alias=_env_aliases("STATSD_PREFIX"),
    )
    api_max_body_bytes: int = Field(  # larger request bodies are answered 413, never read
        default=16 * 1024 * 1024,  # above the largest body the schema accepts (~12.1 MB)
        ge=1024,
    )
    auth_principals: tuple[PrincipalConfig, ...] = ()
    signatures: tuple[OperatorSignature, ...] = ()
    webhooks: Webhooks = ()  # [[orchestrator.webhooks]], see moonmind/webhook_settings.py
    # where the API is reached from outside: links in webhook bodies
    public_url: str = "http://127.0.0.1:8000"
    # periodic prune in the worker; off: None
    prune_older_than: OptionalDurationSeconds = None
    prune_interval: DurationSeconds = Field(default=3600.0, gt=0)
    # [orchestrator.services.<name>], passed by load_settings: no ORCHESTRATOR_ variable.
    service_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, validation_alias="service_overrides"
    )

    @field_validator("auth_principals")
    @classmethod
    def _unique_principals(cls, value: tuple[PrincipalConfig, ...]) -> tuple[PrincipalConfig, ...]:
        ids = [p.id for p in value]
        if len(set(ids)) != len(ids):
            raise ValueError("principal ids must be unique")
        if len({p.token_sha256 for p in value}) != len(value):
            raise ValueError("two principals share a token")
        return value

    @field_validator("patch_agent_env")
    @classmethod
    def _agent_env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.upper().startswith(AGENT_ENV_REFUSED):
                raise ValueError(f"{name} is the orchestrator's own setting, never an agent's")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected a URL such as amqp://guest:guest@127.0.0.1:5672//")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over config.toml, which arrives as init values.
        return (env_settings, init_settings)

    # -- derived values -------------------------------------------------
    @property
    def workspace_path(self) -> Path:
        return self.workspace.expanduser().resolve()

    @property
    def compose_path(self) -> Path:
        path = Path(self.compose_file).expanduser()
        return path if path.is_absolute() else self.workspace_path / path

    @property
    def project_name(self) -> str:
        if self.compose_project:
            return self.compose_project
        return self.compose_path.parent.name.lower().replace(".", "") or "default"

    @property
    def artifact_root_path(self) -> Path:
        return self.artifact_root.expanduser().resolve()

    def host_queue(self, host: str | None) -> str:
        """The queue of a Docker host's worker: the plain queue for the local host."""
        return f"{self.queue}.{host}" if host else self.queue

    @property
    def worker_queue(self) -> str:
        """The queue this process's worker consumes (ORCHESTRATOR_HOST picks it)."""
        return self.host_queue(self.host)

    @property
    def broker_is_local(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    def redacted(self, url: str) -> str:
        """A URL with its password hidden, for start-up banners."""
        try:
            return make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            return url.split("@")[-1]


def _flatten_toml(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    values: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    for table, entries in data.items():
        if not isinstance(entries, dict):
            values[table.upper()] = entries
            continue
        for key, value in entries.items():
            if table == "orchestrator" and key == "services" and isinstance(value, dict):
                services = {name: dict(v) for name, v in value.items()}
            elif table == "orchestrator" and key == "auth" and isinstance(value, dict):
                # [[orchestrator.auth.principals]] is ORCHESTRATOR_AUTH_PRINCIPALS
                for sub, sub_value in value.items():
                    values[f"{table}_{key}_{sub}".upper()] = sub_value
            else:
                values[f"{table}_{key}".upper()] = value
    return values, services


def load_settings(config_path: str | os.PathLike[str] | None = None) -> Settings:
    """Read config.toml (if present) and the environment; raise SettingsError on bad values."""
    path = Path(config_path or os.environ.get("MOONMIND_CONFIG") or DEFAULT_CONFIG_PATH)
    values: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    if path.is_file():
        try:
            values, services = _flatten_toml(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"MOONMIND_CONFIG: {path} is not valid TOML: {exc}") from None
    elif config_path or os.environ.get("MOONMIND_CONFIG"):
        raise SettingsError(f"MOONMIND_CONFIG: {path} does not exist")
    try:
        return Settings(config_path=str(path), service_overrides=services, **values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    alias = _ENV_NAMES.get(field, field.upper())
    return f"{alias}: {first['msg']} (got {first.get('input')!r})"


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return field.upper()


_ENV_NAMES = {name: _env_name(name) for name in Settings.model_fields}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
