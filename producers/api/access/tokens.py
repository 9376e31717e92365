"""Access tokens: JWTs signed with HS256 by PyJWT (docs/contract.md, Access control).

Claims: ``iss`` and ``aud`` (``COURIER_JWT_ISSUER``, ``COURIER_JWT_AUDIENCE``), ``sub`` and
``client_id`` (the client), ``tenant``, ``role``, ``scope`` (space-separated), ``iat``,
``exp`` (``COURIER_TOKEN_TTL_S``, default 3600 s) and ``jti``. The header's ``kid`` names the
signing key: ``COURIER_JWT_SIGNING_KEYS`` lists ``kid:secret`` pairs, the first signs and
every one verifies, so a rotation puts the new key first and keeps the old one until the
last token it signed has expired (one TTL).

Only the API verifies tokens, so a shared secret (HS256) suffices; the key never leaves the
API's configuration.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import redis

from config.production import signing_keys_problem
from config.settings import Settings
from core import keys
from producers.api.access.scopes import ROLES, SCOPES

ALGORITHM = "HS256"
LEEWAY_S = 5  # clock skew between API hosts
REQUIRED = ["exp", "iat", "iss", "aud", "sub", "client_id", "tenant", "role", "scope"]


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's content."""

    client_id: str
    tenant: str
    role: str
    scopes: frozenset[str]
    expires_at: int


class TokenError(Exception):
    """A token that does not authenticate; ``claims`` when its signature was good (an
    expired token still names its client and tenant, for the audit)."""

    def __init__(self, reason: str, claims: Claims | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims


def generate_signing_key() -> str:
    """A fresh ``kid:secret`` for ``COURIER_JWT_SIGNING_KEYS`` (48 random bytes)."""
    return f"k{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}:{secrets.token_urlsafe(48)}"


def signing_keys(settings: Settings, client: redis.Redis) -> dict[str, str]:
    """The configured keys; in development without any, one generated once for the whole
    cluster and kept in Redis (the first process to ask stores it). Production refuses to
    run without configured keys."""
    if settings.jwt_signing_keys:
        return dict(settings.jwt_signing_keys)
    if settings.profile == "production":
        raise RuntimeError(signing_keys_problem(settings))
    client.set(keys.JWT_DEV_KEY, generate_signing_key(), nx=True)
    stored = client.get(keys.JWT_DEV_KEY)
    text = stored.decode() if isinstance(stored, bytes) else str(stored or "")
    kid, _, secret = text.partition(":")
    if not secret:
        raise RuntimeError("the generated token signing key could not be read back from Redis")
    return {kid: secret}


class Tokens:
    """Issues and verifies access tokens with the given keys (kid → secret, first signs), or
    with those ``load`` returns when first needed (the development key is read from Redis
    then, so the API starts while Redis is down)."""

    def __init__(
        self,
        signing: dict[str, str] | Callable[[], dict[str, str]],
        issuer: str,
        audience: str,
        ttl_s: int,
    ) -> None:
        self._keys: dict[str, str] | None = None
        self._load = signing if callable(signing) else None
        if not callable(signing):
            if not signing:
                raise ValueError("no signing key")
            self._keys = dict(signing)
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis) -> Tokens:
        """The configured keys; production without any raises at once."""
        if settings.profile == "production" and not settings.jwt_signing_keys:
            raise RuntimeError(signing_keys_problem(settings))
        return cls(
            lambda: signing_keys(settings, client),
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.token_ttl_s,
        )

    @property
    def keys(self) -> dict[str, str]:
        if self._keys is None:
            assert self._load is not None
            self._keys = self._load()
        return self._keys

    @property
    def current(self) -> str:
        return next(iter(self.keys))

    def issue(self, client_id: str, tenant: str, role: str, scopes: list[str]) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "tenant": tenant,
            "role": role,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_hex(12),
        }
        return jwt.encode(
            payload, self.keys[self.current], algorithm=ALGORITHM, headers={"kid": self.current}
        )

    def verify(self, token: str) -> Claims:
        """The token's claims, or ``TokenError`` naming what is wrong with it."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise TokenError("malformed token") from None
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("token signed with an unknown key")
        try:
            payload = self._decode(token, key, verify_exp=True)
        except jwt.ExpiredSignatureError:
            # the signature was checked before the expiry: the claims are the issuer's
            raise TokenError("token expired", self._claims(self._decode(token, key))) from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad token signature") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token without the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid token") from None
        return self._claims(payload)

    def _decode(self, token: str, key: str, verify_exp: bool = False) -> dict[str, object]:
        payload: dict[str, object] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_S,
            options={"require": REQUIRED, "verify_exp": verify_exp},
        )
        return payload

    @staticmethod
    def _claims(payload: dict[str, object]) -> Claims:
        role, tenant, client_id = payload.get("role"), payload.get("tenant"), payload.get("sub")
        scope, exp = payload.get("scope"), payload.get("exp")
        if not (
            isinstance(role, str)
            and role in ROLES
            and isinstance(tenant, str)
            and tenant
            and isinstance(client_id, str)
            and isinstance(scope, str)
            and isinstance(exp, int)
        ):
            raise TokenError("token with invalid claims")
        scopes = frozenset(scope.split())
        if not scopes <= ROLES[role] or not scopes <= set(SCOPES):
            raise TokenError("token with scopes outside its role")
        return Claims(client_id, tenant, role, scopes, exp)
