"""Who is calling, and may they: the one dependency every ``/v1`` route authenticates
through (docs/contract.md, Access control).

``Authorization: Bearer <credential>`` carries either an API key (``COURIER_API_KEYS`` or a
managed key; it acts as role ``user``) or an access token from ``POST /oauth/token``. A
route names the scope it needs with one of the aliases at the end::

    def submit(principal: JobsWrite, ...) -> ...

- no credential, an unknown key, or a token that is malformed, badly signed, expired or of a
  revoked client: 401 with ``WWW-Authenticate: Bearer`` (RFC 6750);
- a valid credential without the scope: 403 type ``forbidden``.

The identity is found once per request (:func:`identify`, kept on ``request.state``), and
every denial is left there for the audit (:mod:`producers.api.audit`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import HTTPBearer, OAuth2, SecurityScopes

from producers.api import apikeys
from producers.api.access.scopes import API_KEY_ROLE, ROLES, SCOPES
from producers.api.access.tokens import TokenError
from producers.api.deps import resolve_tenant, services_of
from producers.api.errors import ApiError

TOKEN_URL = "/oauth/token"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    tenant: str
    actor: str  # "key:<12 hex of the key's SHA-256>" or the client id
    role: str
    scopes: frozenset[str]
    via: Literal["api_key", "token"]


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused credential, for the audit: the tenant when the credential names one."""

    reason: str
    actor: str | None
    tenant: str | None


oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(tokenUrl=TOKEN_URL, scopes=SCOPES)
    ),
    scheme_name="OAuth2",
    description="OAuth 2.0 client credentials (`courier clients create`): a signed token "
    "carrying the scopes asked for, within the client's role",
    auto_error=False,
)
bearer = HTTPBearer(
    scheme_name="HTTPBearer",
    description="An API key (COURIER_API_KEYS or `courier keys create`; role user) or an "
    "access token from `POST /oauth/token`",
    auto_error=False,
)


def key_actor(key: str) -> str:
    """A stable, non-reversible name of an API key (as the audit log's ``key_id``)."""
    return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2 and len(credential) < 8192


def _credential(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def _unauthorized(request: Request, denial: Denial, message: str, invalid: bool) -> ApiError:
    request.state.denial = denial
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ApiError(401, message, "authentication", headers={"WWW-Authenticate": challenge})


async def identify(request: Request) -> Principal:
    """The caller (found once per request), or 401."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    credential = _credential(request)
    if credential is None:
        raise _unauthorized(
            request,
            Denial("no credential", None, None),
            "missing credentials: send 'Authorization: Bearer <API key or access token>'",
            invalid=False,
        )
    principal = await _principal(request, credential)
    request.state.principal = principal
    return principal


async def _principal(request: Request, credential: str) -> Principal:
    services = services_of(request)
    tenant = resolve_tenant(credential, services.settings)
    if tenant is None and apikeys.looks_managed(credential):
        # no cache: a revoked key fails on its next request
        tenant = await apikeys.tenant_for_async(services.aredis, credential)
    if tenant is not None:
        role = API_KEY_ROLE
        return Principal(tenant, key_actor(credential), role, ROLES[role], "api_key")
    if not looks_like_jwt(credential):
        denial = Denial("unknown API key", key_actor(credential), None)
        raise _unauthorized(request, denial, "unknown API key", invalid=False)
    try:
        claims = services.access.tokens.verify(credential)
    except TokenError as exc:
        named = exc.claims
        denial = Denial(
            exc.reason,
            named.client_id if named else None,
            named.tenant if named else None,
        )
        raise _unauthorized(request, denial, exc.reason, invalid=True) from None
    if not await services.access.revocations.active(claims.client_id):
        denial = Denial("client revoked", claims.client_id, claims.tenant)
        raise _unauthorized(request, denial, "the token's client is revoked", invalid=True)
    return Principal(claims.tenant, claims.client_id, claims.role, claims.scopes, "token")


async def authenticate(
    request: Request,
    security_scopes: SecurityScopes,
    _token: Annotated[Any, Depends(oauth2)],
    _key: Annotated[Any, Depends(bearer)],
) -> Principal:
    """The caller, holding every scope the route asks for; else 401 or 403."""
    return holding(request, await identify(request), security_scopes.scopes)


def holding(request: Request, principal: Principal, scopes: Sequence[str]) -> Principal:
    """``principal``, if it holds every one of ``scopes``; else 403 ``forbidden``."""
    missing = [s for s in scopes if s not in principal.scopes]
    if missing:
        request.state.denial = Denial(
            f"missing scope {' '.join(missing)}", principal.actor, principal.tenant
        )
        held = " ".join(s for s in SCOPES if s in principal.scopes) or "none"
        raise ApiError(
            403,
            f"this route needs scope {' '.join(missing)!r}; the credential ({principal.role}) "
            f"holds: {held}",
            "forbidden",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}"'
            },
        )
    return principal


def require(scope: str) -> Any:
    """``Annotated[Principal, require("jobs:write")]``: the caller, holding ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return Security(authenticate, scopes=[scope])


JobsWrite = Annotated[Principal, require("jobs:write")]
JobsRead = Annotated[Principal, require("jobs:read")]
UsageRead = Annotated[Principal, require("usage:read")]
AuditRead = Annotated[Principal, require("audit:read")]
Admin = Annotated[Principal, require("admin")]
