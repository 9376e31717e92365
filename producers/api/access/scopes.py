"""Scopes and roles (docs/contract.md, Access control): what each scope allows and which
scopes each role grants.

An API key acts as role ``user``. A token carries the scopes its client asked for, which
must lie within the client's role; asking for none grants the whole role.
"""

from __future__ import annotations

from typing import Literal

Scope = Literal["jobs:write", "jobs:read", "usage:read", "audit:read", "admin"]
Role = Literal["user", "admin", "auditor"]

SCOPES: dict[str, str] = {
    "jobs:write": "Submit, cancel and redeliver jobs",
    "jobs:read": "Read and list jobs",
    "usage:read": "Read the tenant's usage and budget",
    "audit:read": "Read the tenant's audit log",
    "admin": "Manage the tenant's OAuth2 clients",
}
ROLES: dict[str, frozenset[str]] = {
    "user": frozenset({"jobs:write", "jobs:read", "usage:read"}),
    "auditor": frozenset({"audit:read", "jobs:read", "usage:read"}),
    "admin": frozenset(SCOPES),
}
API_KEY_ROLE: Role = "user"


class ScopeError(ValueError):
    """A scope request the client's role does not cover (OAuth2 ``invalid_scope``)."""


def parse(text: str | None) -> list[str]:
    """RFC 6749 §3.3: space-delimited, order kept, duplicates dropped."""
    return list(dict.fromkeys((text or "").split()))


def grant(role: str, asked: str | None) -> list[str]:
    """The scopes a token of a client with ``role`` carries when it asks for ``asked``
    (None or empty: all of the role's), in a stable order; ``ScopeError`` otherwise."""
    allowed = ROLES[role]
    wanted = parse(asked)
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ScopeError(f"unknown scope(s): {' '.join(unknown)}; known: {' '.join(SCOPES)}")
    outside = [s for s in wanted if s not in allowed]
    if outside:
        raise ScopeError(
            f"scope(s) {' '.join(outside)} are outside role {role!r} ({' '.join(ordered(allowed))})"
        )
    return ordered(wanted or allowed)


def ordered(scopes: frozenset[str] | list[str]) -> list[str]:
    return [s for s in SCOPES if s in scopes]
