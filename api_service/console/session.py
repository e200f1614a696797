"""Console sessions: a signed, HttpOnly cookie naming a principal, and its CSRF token.

The cookie never holds the token. It holds the principal's id, when it was issued and a
random nonce, signed with HMAC-SHA256 keyed by that principal's stored token sha256: only
the server (which reads config.toml) can mint one, and replacing a principal's token ends
all of its sessions. The CSRF token is an HMAC of the session's nonce under the same key,
so it is bound to one session and checked on every state-changing console request.

With no principals configured (the embedded default) every caller is the local principal;
its sessions are signed with a key made when the process starts and are issued without a
sign-in, only to carry the CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

from moonmind.auth import LOCAL_PRINCIPAL, Principal
from moonmind.config import Settings

COOKIE = "mm_console"
PRE_COOKIE = "mm_signin"  # the sign-in form's own double-submit nonce
MAX_AGE_SECONDS = 12 * 3600
_LOCAL_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    csrf: str
    open_mode: bool  # no principals configured: nobody signs in or out
    new_cookie: str | None = None  # to set on the response (a fresh open-mode session)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode()).decode()


def _mac(key: bytes, purpose: str, payload: str) -> str:
    return hmac.new(key, f"{purpose}|{payload}".encode(), hashlib.sha256).hexdigest()


def _principal_and_key(settings: Settings, principal_id: str) -> tuple[Principal, bytes] | None:
    if not settings.auth_principals:
        return (LOCAL_PRINCIPAL, _LOCAL_KEY) if principal_id == LOCAL_PRINCIPAL.id else None
    for entry in settings.auth_principals:
        if entry.id == principal_id:
            key = hashlib.sha256(b"moonmind-console|" + entry.token_sha256.encode()).digest()
            return Principal(entry.id, frozenset(entry.roles)), key
    return None


def issue(settings: Settings, principal: Principal) -> str:
    """A new signed cookie value for ``principal``."""
    found = _principal_and_key(settings, principal.id)
    if found is None:
        raise ValueError(f"unknown principal {principal.id!r}")
    payload = f"{_b64(principal.id)}.{int(time.time())}.{secrets.token_urlsafe(18)}"
    return f"{payload}.{_mac(found[1], 'session', payload)}"


def read(settings: Settings, value: str | None) -> ConsoleSession | None:
    """The session a cookie value carries, or None (absent, forged, expired, unknown)."""
    parts = (value or "").split(".")
    if len(parts) != 4:
        return None
    encoded_id, issued, nonce, signature = parts
    try:
        principal_id, issued_at = _unb64(encoded_id), int(issued)
    except ValueError:
        return None
    found = _principal_and_key(settings, principal_id)
    if found is None:
        return None
    principal, key = found
    payload = f"{encoded_id}.{issued}.{nonce}"
    if not hmac.compare_digest(_mac(key, "session", payload), signature):
        return None
    if not 0 <= time.time() - issued_at <= MAX_AGE_SECONDS:
        return None
    return ConsoleSession(principal, _mac(key, "csrf", nonce), not settings.auth_principals)


def current(request: Request, settings: Settings) -> ConsoleSession | None:
    """The caller's session; in open mode one is made when the cookie is missing."""
    found = read(settings, request.cookies.get(COOKIE))
    if found is not None or settings.auth_principals:
        return found
    cookie = issue(settings, LOCAL_PRINCIPAL)
    made = read(settings, cookie)
    assert made is not None
    return ConsoleSession(made.principal, made.csrf, True, new_cookie=cookie)


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")


def issue_signin_nonce() -> str:
    """The sign-in form's double-submit value (kept in PRE_COOKIE and in the form)."""
    return secrets.token_urlsafe(18)


def csrf_ok_plain(expected: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(expected, sent or "")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def remember(request: Request, response: Response, cookie: str) -> None:
    set_cookie(request, response, COOKIE, cookie, MAX_AGE_SECONDS)


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
