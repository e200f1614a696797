from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind.config import SettingsError, load_settings

SETTING_VARS = (
    "MOONMIND_CONFIG",
    "MOONMIND_DATABASE_URL",
    "CELERY_BROKER_URL",
    "ORCHESTRATOR_QUEUE",
    "ORCHESTRATOR_WORKSPACE",
    "ORCHESTRATOR_COMPOSE_FILE",
    "ORCHESTRATOR_ARTIFACT_ROOT",
    "STATSD_HOST",
    "STATSD_PORT",
    "STATSD_PREFIX",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTING_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/orchestrator.db"
    assert settings.broker_is_local
    assert settings.queue == "orchestrator.run"
    assert settings.statsd_prefix == "moonmind.orchestrator"
    assert settings.artifact_root == Path("var/artifacts/spec_workflows")
    assert settings.compose_path == Path.cwd().resolve() / "docker-compose.yaml"


def test_environment_overrides_config_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(
        '[orchestrator]\nqueue = "from-toml"\ncompose_file = "stack.yml"\n'
        '[statsd]\nhost = "127.0.0.1"\nport = 9125\n'
        '[orchestrator.services.api]\nhealth_url = "http://127.0.0.1:8000/health"\n'
    )
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    monkeypatch.setenv("STATSD_PORT", "9999")
    settings = load_settings()
    assert settings.queue == "from-toml"
    assert settings.compose_file == "stack.yml"
    assert settings.statsd_host == "127.0.0.1"
    assert settings.statsd_port == 9999
    assert settings.service_overrides == {"api": {"health_url": "http://127.0.0.1:8000/health"}}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STATSD_PORT", "not-a-port"),
        ("STATSD_PORT", "70000"),
        ("MOONMIND_DATABASE_URL", "not a url"),
        ("CELERY_BROKER_URL", "rabbit"),
        ("ORCHESTRATOR_QUEUE", "  "),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}: "):
        load_settings()


def test_missing_config_file_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONMIND_CONFIG", "/nonexistent/config.toml")
    with pytest.raises(SettingsError, match="MOONMIND_CONFIG"):
        load_settings()


def test_cli_fails_at_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARS}
    env["STATSD_PORT"] = "abc"
    result = subprocess.run(
        [sys.executable, "-m", "moonmind.cli", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "STATSD_PORT" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()


def test_every_setting_is_in_the_templates_and_config_toml() -> None:
    """T001: .env-template, .env.vllm-template and config.toml carry the same knobs."""
    from moonmind.config import _ENV_NAMES, _flatten_toml

    repo = Path(__file__).resolve().parents[2]
    names = {
        name
        for field, name in _ENV_NAMES.items()
        if field not in ("service_overrides", "auth_principals", "signatures", "webhooks")
    }
    names.discard("CELERY_BROKER_FOLDER")  # only meaningful for the local transport
    for template in (".env-template", ".env.vllm-template"):
        keys = {
            line.split("=", 1)[0]
            for line in (repo / template).read_text().splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert names <= keys, (template, sorted(names - keys))
    import tomllib

    values, _ = _flatten_toml(tomllib.loads((repo / "config.toml").read_text()))
    assert names - {"MOONMIND_CONFIG"} <= set(values), sorted(names - set(values))
