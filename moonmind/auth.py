"""Who a caller is: bearer tokens mapped to principals and roles, and `moonmind auth`.

Principals live in ``[[orchestrator.auth.principals]]`` (id, roles, token_sha256). API
roles: ``viewer`` reads runs, artifacts and events; ``operator`` also submits, retries and
cancels; ``approver`` approves (a service's ``approver_roles`` narrow it further: the role
an approval names must be one of the principal's roles too); ``admin`` may do all of it.

With no principal configured, every caller is the local principal ``local`` with every
role, and the API may only listen on loopback.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from moonmind.config import API_ROLES, PrincipalConfig, Settings, SettingsError, load_settings
from moonmind.workflows.orchestrator.policies import token_sha256

LOCAL_ID = "local"


_IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset(API_ROLES),
    "operator": frozenset({"viewer"}),
    "approver": frozenset({"viewer"}),
}


@dataclass(frozen=True)
class Principal:
    id: str
    roles: frozenset[str]
    everything: bool = False  # the embedded default's local principal

    def has_role(self, role: str) -> bool:
        """May act as ``role``: held, or implied (admin: every API role, not a service's)."""
        if self.everything or role in self.roles:
            return True
        return any(role in _IMPLIED.get(held, ()) for held in self.roles)


LOCAL_PRINCIPAL = Principal(LOCAL_ID, frozenset(API_ROLES), everything=True)


def authenticate(settings: Settings, token: str | None) -> Principal | None:
    """The principal a bearer token names (None: unknown); LOCAL when none is configured."""
    if not settings.auth_principals:
        return LOCAL_PRINCIPAL
    if not token:
        return None
    digest = token_sha256(token)
    found: PrincipalConfig | None = None
    for entry in settings.auth_principals:  # every entry compared: no early exit
        if hmac.compare_digest(digest, entry.token_sha256):
            found = entry
    return Principal(found.id, frozenset(found.roles)) if found else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_refusal(settings: Settings, host: str) -> str | None:
    """Why the API may not listen on ``host`` (one line), or None."""
    if settings.auth_principals or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host}: no principals are configured, so every caller would "
        "have every role; add one with `moonmind auth add-principal ID --roles operator` "
        "or listen on 127.0.0.1"
    )


EMBEDDED_WARNING = (
    "warning: no [[orchestrator.auth.principals]] configured: every caller is the local "
    f"principal '{LOCAL_ID}' with all roles (loopback only; self-approval is still refused)"
)


# -- moonmind auth ------------------------------------------------------------------------

_ROLE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _config_path() -> Path:
    try:
        return Path(load_settings().config_path)
    except SettingsError as exc:
        raise SystemExit(f"moonmind: bad setting: {exc}") from None


def cmd_add_principal(args: argparse.Namespace) -> int:
    """Append a principal with a fresh token's sha256; print the token once."""
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not roles or not all(_ROLE.match(r) for r in roles):
        print("moonmind: --roles needs comma-separated role names", file=sys.stderr)
        return 2
    path = _config_path()
    settings = load_settings(path) if path.exists() else None
    if settings and any(p.id == args.id for p in settings.auth_principals):
        print(f"moonmind: principal {args.id!r} already exists in {path}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    try:
        PrincipalConfig(id=args.id, roles=tuple(roles), token_sha256=token_sha256(token))
    except ValueError as exc:
        print(f"moonmind: bad principal: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    existing = path.read_text() if path.exists() else ""
    quoted = ", ".join(f'"{r}"' for r in roles)  # role names are plain words (checked)
    entry = (
        "[[orchestrator.auth.principals]]\n"
        f'id = "{args.id}"\n'
        f"roles = [{quoted}]\n"
        f'token_sha256 = "{token_sha256(token)}"\n'
    )
    separator = "\n" if existing.strip() else ""
    existing = existing.rstrip("\n") + "\n" if existing.strip() else ""
    path.write_text(existing + separator + entry)
    print(f"added principal {args.id} ({', '.join(roles)}) to {path}", file=sys.stderr)
    print(token)
    print("keep this token: it is shown only once (use it as MOONMIND_TOKEN)", file=sys.stderr)
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"moonmind: bad setting: {exc}", file=sys.stderr)
        return 2
    if not settings.auth_principals:
        print(f"no principals in {settings.config_path}: {EMBEDDED_WARNING.split(': ', 1)[1]}")
    for entry in settings.auth_principals:
        print(f"{entry.id}\t{','.join(entry.roles)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("auth", help="API principals and tokens").add_subparsers(
        dest="cmd", required=True
    )
    add = auth.add_parser("add-principal", help="create a principal and print its token once")
    add.add_argument("id")
    add.add_argument("--roles", required=True, help="e.g. operator,approver (and e.g. sre)")
    add.set_defaults(func=cmd_add_principal)
    auth.add_parser("list", help="principals and their roles").set_defaults(func=cmd_list)
