"""Console session cookies: signed per principal, bound CSRF tokens, expiry, token rotation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api_service.console import session as sessions
from api_service.console.views import diff_lines, human
from moonmind.auth import LOCAL_PRINCIPAL, Principal
from moonmind.config import Settings, load_settings
from tests.support.auth import ALICE, BOB, Caller, principals_toml


def _settings(tmp_path: Path, *callers: Caller) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(principals_toml(*callers))
    return load_settings(config)


def _alice() -> Principal:
    return Principal("alice", frozenset(ALICE.roles))


def test_a_cookie_names_its_principal_and_carries_a_session_bound_csrf(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ALICE, BOB)
    first, second = sessions.issue(settings, _alice()), sessions.issue(settings, _alice())
    one, two = sessions.read(settings, first), sessions.read(settings, second)
    assert one is not None
    assert two is not None
    assert one.principal == _alice()
    assert not one.open_mode
    assert one.csrf != two.csrf  # each session has its own
    assert sessions.csrf_ok(one, one.csrf)
    assert not sessions.csrf_ok(one, two.csrf)
    assert not sessions.csrf_ok(one, None)
    assert ALICE.token not in first


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # signature changed
        lambda c: "Ym9i" + c[c.index(".") :],  # another principal's id ("bob")
        lambda c: c.rsplit(".", 1)[0],  # signature dropped
        lambda c: "",
    ],
)
def test_a_changed_cookie_is_no_session(tmp_path: Path, forge: Callable[[str], str]) -> None:
    settings = _settings(tmp_path, ALICE, BOB)
    cookie = sessions.issue(settings, _alice())
    assert sessions.read(settings, forge(cookie)) is None


def test_a_new_token_or_an_old_cookie_ends_the_session(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ALICE)
    cookie = sessions.issue(settings, _alice())
    rotated = _settings(tmp_path, Caller("alice", ALICE.roles))  # alice got a new token
    assert sessions.read(rotated, cookie) is None
    encoded_id, _, nonce, _ = cookie.split(".")
    old = f"{encoded_id}.{int(time.time()) - sessions.MAX_AGE_SECONDS - 5}.{nonce}"
    key = sessions._principal_and_key(settings, "alice")
    assert key is not None
    assert sessions.read(settings, f"{old}.{sessions._mac(key[1], 'session', old)}") is None


def test_open_mode_sessions_are_the_local_principal_only(tmp_path: Path) -> None:
    open_settings = _settings(tmp_path)
    cookie = sessions.issue(open_settings, LOCAL_PRINCIPAL)
    found = sessions.read(open_settings, cookie)
    assert found is not None
    assert found.principal is LOCAL_PRINCIPAL
    assert found.open_mode
    assert sessions.read(_settings(tmp_path, ALICE), cookie) is None  # principals added


def test_diff_lines_and_durations() -> None:
    diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n same"
    assert [kind for kind, _ in diff_lines(diff)] == ["file", "file", "hunk", "del", "add", "ctx"]
    durations = [human(s) for s in (None, 4, 125, 3780, 93600)]
    assert durations == ["", "4s", "2m 05s", "1h 03m", "1d 2h"]
