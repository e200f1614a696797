"""Principals, tokens and the start-up rule: no principals, no listening beyond loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind.auth import LOCAL_PRINCIPAL, authenticate, bind_refusal
from moonmind.cli import main
from moonmind.config import SettingsError, load_settings
from tests.support.auth import ALICE, BOB, VIC, principals_toml

REPO = Path(__file__).resolve().parents[2]
SETTING_PREFIXES = ("MOONMIND_", "ORCHESTRATOR_", "CELERY_", "STATSD_")


def _moonmind(args: list[str], config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(MOONMIND_CONFIG=str(config), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "moonmind.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["api", "up"])
def test_all_interfaces_without_principals_exits_with_one_line(
    tmp_path: Path, command: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    result = _moonmind(
        ["orchestrator", command, "--host", "0.0.0.0", "--port", "1"], config, tmp_path
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "0.0.0.0" in lines[0]
    assert "no principals" in lines[0]
    assert not (tmp_path / "var").exists()  # refused before touching the database


def test_bind_rule(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    empty = load_settings(config)
    assert bind_refusal(empty, "127.0.0.1") is None
    assert bind_refusal(empty, "::1") is None
    assert bind_refusal(empty, "localhost") is None
    assert bind_refusal(empty, "0.0.0.0") is not None
    assert bind_refusal(empty, "192.0.2.1") is not None
    config.write_text(principals_toml(ALICE))
    assert bind_refusal(load_settings(config), "0.0.0.0") is None


def test_tokens_map_to_principals_and_roles(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    assert authenticate(load_settings(config), None) is LOCAL_PRINCIPAL
    config.write_text(principals_toml(ALICE, BOB, VIC))
    settings = load_settings(config)
    bob = authenticate(settings, BOB.token)
    assert bob is not None
    assert bob.id == "bob"
    assert bob.has_role("approver")
    assert bob.has_role("sre")
    assert bob.has_role("viewer")
    assert not bob.has_role("operator")
    vic = authenticate(settings, VIC.token)
    assert vic is not None
    assert not vic.has_role("operator")
    assert authenticate(settings, None) is None
    assert authenticate(settings, "guess") is None
    assert authenticate(settings, hashlib.sha256(BOB.token.encode()).hexdigest()) is None


def test_bad_principal_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[orchestrator.auth.principals]]\nid = "x"\nroles = ["viewer"]\n')
    with pytest.raises(SettingsError, match="ORCHESTRATOR_AUTH_PRINCIPALS"):
        load_settings(config)


def test_add_principal_prints_a_token_once_and_it_authenticates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    original = '[orchestrator]\nqueue = "q"  # kept\n'
    config.write_text(original)
    monkeypatch.setenv("MOONMIND_CONFIG", str(config))
    assert main(["auth", "add-principal", "alice", "--roles", "operator,approver,sre"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # the token, once
    token = out[0]
    text = config.read_text()
    assert text.startswith(original)
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert token not in text
    settings = load_settings(config)
    assert settings.queue == "q"
    principal = authenticate(settings, token)
    assert principal is not None
    assert principal.id == "alice"
    assert principal.roles == {"operator", "approver", "sre"}

    assert main(["auth", "add-principal", "alice", "--roles", "viewer"]) == 2  # exists
    assert main(["auth", "add-principal", "bob", "--roles", "viewer"]) == 0
    capsys.readouterr()
    assert main(["auth", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.splitlines() == ["alice\toperator,approver,sre", "bob\tviewer"]
    assert "sha256" not in listed
    assert settings.auth_principals[0].token_sha256 not in listed
