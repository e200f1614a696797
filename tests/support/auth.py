"""Principals for tests: a token each, the config.toml text that declares them, headers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from moonmind.config import PrincipalConfig
from moonmind.workflows.orchestrator.policies import token_sha256


@dataclass(frozen=True)
class Caller:
    id: str
    roles: tuple[str, ...]
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def config(self) -> PrincipalConfig:
        return PrincipalConfig(id=self.id, roles=self.roles, token_sha256=token_sha256(self.token))


def principals_toml(*callers: Caller) -> str:
    """``[[orchestrator.auth.principals]]`` tables for config.toml (only the sha256 kept)."""
    parts = []
    for caller in callers:
        roles = ", ".join(f'"{role}"' for role in caller.roles)
        parts.append(
            "[[orchestrator.auth.principals]]\n"
            f'id = "{caller.id}"\nroles = [{roles}]\n'
            f'token_sha256 = "{token_sha256(caller.token)}"\n'
        )
    return "\n".join(parts)


# The usual cast: a requester, an approver holding the gate's role, one without it, a reader.
ALICE = Caller("alice", ("operator", "approver", "sre"))  # may approve, not her own runs
BOB = Caller("bob", ("approver", "sre"))
CAROL = Caller("carol", ("approver",))
VIC = Caller("vic", ("viewer",))
CAST = (ALICE, BOB, CAROL, VIC)
