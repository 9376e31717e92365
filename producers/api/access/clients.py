"""OAuth2 clients (docs/contract.md, Access control): created, listed and revoked with
``courier clients`` or
``/v1/clients``, kept in Redis; the secret is shown once and stored only as a salted scrypt
hash.

- ``courier:oauth:client:<id>`` (hash): ``id``, ``tenant``, ``role``, ``name``, ``created``
  and ``revoked`` (epoch s; ``revoked`` empty while active), ``salt`` and ``hash`` (hex),
  ``kdf`` (the scrypt parameters the hash was made with);
- ``courier:oauth:clients`` (zset): id → created (ms), for listing.

A client id is ``cli_`` + 20 hex digits (not a secret: it names the client in tokens and
audit entries); a secret is ``cs_`` + 32 random bytes (base64url). Secrets are random, so
the hash need not be slow to be safe; scrypt with the interactive parameters (N=2^14, r=8,
p=1: 16 MiB, ~0.1 s of CPU here) is defence in depth, and failed attempts are rate limited
(:mod:`.failures`).

Revocation is checked on every request a token authenticates (:class:`RevocationCache`),
trusting an answer for ``COURIER_TOKEN_REVOCATION_CHECK_S`` (default 5 s) per API process:
a revoked client's existing tokens fail within that bound.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import redis
import redis.asyncio as aioredis

from config.names import tenant_problem
from core import keys
from producers.api.access.scopes import ROLES
from producers.api.revocable import Revocable

ID_PREFIX = "cli_"
SECRET_PREFIX = "cs_"
ID_PATTERN = re.compile(r"^cli_[0-9a-f]{20}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
KDF = "scrypt:n=16384,r=8,p=1"
NAME_MAX = 100


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8", "surrogateescape"), salt=salt, dklen=32, maxmem=64 * 2**20, **SCRYPT
    )


@dataclass(frozen=True, slots=True)
class ClientInfo(Revocable):
    """What is known about a client (never its secret)."""

    role: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return Revocable.to_json(self) | {"role": self.role, "name": self.name}


def _info(record: dict[str, str]) -> ClientInfo:
    return ClientInfo(
        **Revocable.fields(record), role=record.get("role", ""), name=record.get("name", "")
    )


def valid_id(client_id: str) -> bool:
    return bool(ID_PATTERN.match(client_id))


class OAuthClients:
    """Create, list, revoke and authenticate clients (a sync redis-py client,
    ``decode_responses=True``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, tenant: str, role: str, name: str = "") -> tuple[ClientInfo, str]:
        """A new client: (its info, its secret — shown once, never stored)."""
        problem = tenant_problem(tenant)
        if problem:
            raise ValueError(problem)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if len(name) > NAME_MAX or any(not c.isprintable() for c in name):
            raise ValueError(f"name must be at most {NAME_MAX} printable characters")
        client_id = ID_PREFIX + secrets.token_hex(10)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        record: dict[str, str] = {
            "id": client_id,
            "tenant": tenant,
            "role": role,
            "name": name,
            "created": repr(now),
            "revoked": "",
            "salt": salt.hex(),
            "hash": _hash(secret, salt).hex(),
            "kdf": KDF,
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.oauth_client(client_id), mapping=record)  # type: ignore[arg-type]
        pipe.zadd(keys.OAUTH_CLIENTS, {client_id: int(now * 1000)})
        pipe.execute()
        return _info(record), secret

    def get(self, client_id: str) -> ClientInfo | None:
        if not valid_id(client_id):
            return None
        record: dict[str, str] = self.redis.hgetall(keys.oauth_client(client_id))  # type: ignore[assignment]
        return _info(record) if record else None

    def list(self, tenant: str | None = None) -> list[ClientInfo]:
        """Every client (of ``tenant``, if given), oldest first."""
        ids: list[str] = self.redis.zrange(keys.OAUTH_CLIENTS, 0, -1)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for client_id in ids:
            pipe.hgetall(keys.oauth_client(client_id))
        infos = [_info(r) for r in pipe.execute() if r]
        return [i for i in infos if tenant is None or i.tenant == tenant]

    def revoke(self, client_id: str) -> ClientInfo | None:
        """Revoke a client by id; None if there is no such id. Revoking twice keeps the
        first revocation time."""
        info = self.get(client_id)
        if info is None:
            return None
        if info.active:
            now = time.time()
            self.redis.hset(keys.oauth_client(client_id), "revoked", repr(now))
            info = replace(info, revoked=now)
        return info

    def authenticate(self, client_id: str, secret: str) -> tuple[ClientInfo | None, str]:
        """(the client, "") when the secret is right and the client active; else
        (the client if it exists, why not) — the client is kept for the audit."""
        info = self.get(client_id)
        if info is None:
            return None, "unknown client"
        record: dict[str, str] = self.redis.hgetall(keys.oauth_client(client_id))  # type: ignore[assignment]
        if record.get("kdf") != KDF:
            return info, "client record unreadable"
        presented = _hash(secret, bytes.fromhex(record.get("salt", "")))
        if not hmac.compare_digest(presented, bytes.fromhex(record.get("hash", ""))):
            return info, "wrong client secret"
        if not info.active:
            return info, "client revoked"
        return info, ""


class RevocationCache:
    """Whether a client is still active, asked of Redis at most once per ``ttl_s`` per
    process (the bound on how long a revoked client's tokens keep working)."""

    MAX_ENTRIES = 10_000

    def __init__(self, client: aioredis.Redis, ttl_s: float) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.known: dict[str, tuple[bool, float]] = {}

    async def active(self, client_id: str) -> bool:
        now = time.monotonic()
        cached = self.known.get(client_id)
        if cached is not None and now - cached[1] < self.ttl_s:
            return cached[0]
        fields = await self.redis.hmget(keys.oauth_client(client_id), ["id", "revoked"])  # type: ignore[misc]
        active = bool(fields[0]) and not fields[1]
        if len(self.known) >= self.MAX_ENTRIES:
            self.known.clear()
        self.known[client_id] = (active, now)
        return active
