"""Service profiles derived from compose config plus config.toml overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moonmind.workflows.orchestrator.service_profiles import (
    DEFAULT_MANIFESTS,
    ServiceProfile,
    UnknownService,
    get_profile,
    load_profiles,
)


def _config(workspace: Path) -> dict[str, Any]:
    """Shaped like `docker-compose config` v1 output: absolute contexts, no default dockerfile."""
    return {
        "services": {
            "api": {"build": {"context": str(workspace / "api")}, "image": "acme/api:dev"},
            "web": {"build": "./web"},
            "worker": {
                "build": {"context": str(workspace), "dockerfile": "docker/worker.Dockerfile"},
                "healthcheck": {"test": ["CMD", "true"], "interval": "5s"},
            },
            "db": {"image": "postgres:16"},
            "ext": {"build": {"context": "/somewhere/else"}},
            "nohc": {"build": "./nohc", "healthcheck": {"disable": True}},
        }
    }


def test_defaults_for_dict_and_string_build(tmp_path: Path) -> None:
    profiles = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})
    api = profiles["api"]
    assert api.build_context == "api"
    assert api.dockerfile == "api/Dockerfile"
    assert api.image == "acme/api:dev"
    assert api.has_build
    assert api.allow == ("api/Dockerfile", *(f"api/{m}" for m in DEFAULT_MANIFESTS))
    web = profiles["web"]
    assert (web.build_context, web.dockerfile, web.image) == ("web", "web/Dockerfile", None)
    assert web.health_url is None
    assert web.health_expected_status == 200
    assert web.health_timeout_seconds == 120
    assert web.stable_seconds == 3.0
    assert web.protected is False


def test_workspace_root_context_and_custom_dockerfile(tmp_path: Path) -> None:
    worker = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})["worker"]
    assert worker.build_context == "."
    assert worker.dockerfile == "docker/worker.Dockerfile"
    assert worker.allow[0] == "docker/worker.Dockerfile"
    assert "requirements*.txt" in worker.allow
    assert worker.has_healthcheck


def test_image_only_and_outside_services_get_no_allow(tmp_path: Path) -> None:
    profiles = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})
    db, ext = profiles["db"], profiles["ext"]
    assert (db.build_context, db.dockerfile, db.allow, db.has_build) == (None, None, (), False)
    assert (ext.build_context, ext.dockerfile, ext.allow, ext.has_build) == (None, None, (), True)


def test_healthcheck_detection(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(
        'FROM scratch\nHEALTHCHECK --interval=5s CMD ["/busybox", "true"]\n'
    )
    (tmp_path / "nohc").mkdir()
    (tmp_path / "nohc" / "Dockerfile").write_text("FROM scratch\nHEALTHCHECK NONE\n")
    profiles = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})
    assert profiles["web"].has_healthcheck
    assert not profiles["nohc"].has_healthcheck
    assert not profiles["api"].has_healthcheck


def test_overrides_are_applied(tmp_path: Path) -> None:
    overrides = {
        "web": {
            "health_url": "http://127.0.0.1:8080/health",
            "health_expected_status": 204,
            "health_timeout_seconds": 30,
            "stable_seconds": 0,
            "allow": ["web/src/**/*.py", "web/Dockerfile"],
            "protected": True,
        }
    }
    web = load_profiles(_config(tmp_path), workspace=tmp_path, overrides=overrides)["web"]
    assert web == ServiceProfile(
        name="web",
        build_context="web",
        dockerfile="web/Dockerfile",
        image=None,
        health_url="http://127.0.0.1:8080/health",
        health_expected_status=204,
        health_timeout_seconds=30.0,
        stable_seconds=0.0,
        has_healthcheck=False,
        allow=("web/src/**/*.py", "web/Dockerfile"),
        protected=True,
        has_build=True,
    )


def test_unknown_override_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'health_path'"):
        load_profiles(
            _config(tmp_path), workspace=tmp_path, overrides={"web": {"health_path": "/"}}
        )


def test_override_for_missing_service(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nginx"):
        load_profiles(_config(tmp_path), workspace=tmp_path, overrides={"nginx": {}})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("health_expected_status", "200"),
        ("health_expected_status", True),
        ("health_timeout_seconds", 0),
        ("stable_seconds", -1),
        ("stable_seconds", "3"),
        ("protected", "yes"),
        ("allow", "web/Dockerfile"),
        ("health_url", 8080),
    ],
)
def test_override_types_are_checked(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        load_profiles(_config(tmp_path), workspace=tmp_path, overrides={"web": {key: value}})


@pytest.mark.parametrize(
    "pattern",
    [
        ".env",
        "web/.env.local",
        ".git/config",
        ".GIT/config",
        "docker-compose.yml",
        "web/Compose.YAML",
        "../x",
        "/etc/x",
    ],
)
def test_forbidden_allow_patterns_rejected(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="allow pattern"):
        load_profiles(
            _config(tmp_path), workspace=tmp_path, overrides={"web": {"allow": [pattern]}}
        )


def test_custom_compose_file_name_is_forbidden(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compose file"):
        load_profiles(
            _config(tmp_path),
            workspace=tmp_path,
            overrides={"web": {"allow": ["deploy/stack.yml"]}},
            compose_file=tmp_path / "deploy" / "stack.yml",
        )


def test_defaults_never_include_forbidden_files(tmp_path: Path) -> None:
    profiles = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})
    for profile in profiles.values():
        for pattern in profile.allow:
            assert ".env" not in pattern
            assert ".git/" not in pattern
            assert not pattern.startswith(("docker-compose", "compose."))


def test_get_profile_unknown_lists_available(tmp_path: Path) -> None:
    profiles = load_profiles(_config(tmp_path), workspace=tmp_path, overrides={})
    assert get_profile(profiles, "web").name == "web"
    with pytest.raises(UnknownService) as info:
        get_profile(profiles, "nginx")
    assert info.value.available == ["api", "db", "ext", "nohc", "web", "worker"]
    assert "nginx" in str(info.value)


def test_empty_config(tmp_path: Path) -> None:
    assert load_profiles({}, workspace=tmp_path, overrides={}) == {}
