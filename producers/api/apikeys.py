"""Managed API keys: created, listed and revoked with ``courier keys``, kept in Redis.

A key is ``ck_<id>_<secret>``: ``id`` (12 hex characters) names it in listings and in
``courier keys revoke``; ``secret`` is 32 random bytes (base64url). Redis holds only the
SHA-256 digest of the whole key, never the key itself:

- ``courier:apikey:<sha256 hex>`` (hash): ``id``, ``tenant``, ``created`` (epoch s),
  ``revoked`` (epoch s, or empty), ``digest`` (the same hex, compared in constant time);
- ``courier:apikeys`` (hash): id → digest, for listing and revoking by id.

A presented key is looked up by its digest (the lookup leaks nothing about any stored key:
an attacker would have to find SHA-256 preimages), then the stored digest is compared with
``hmac.compare_digest``. There is no cache: a revoked key fails on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from config.names import tenant_problem
from core import keys
from producers.api.revocable import Revocable

KEY_PREFIX = "ck_"
ID_HEX_CHARS = 12
SECRET_BYTES = 32


def digest(key: str) -> str:
    """SHA-256 hex of a presented key (the only form stored)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def looks_managed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) <= 200


def new_key() -> tuple[str, str]:
    """A fresh (id, key)."""
    key_id = secrets.token_hex(ID_HEX_CHARS // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


@dataclass(frozen=True, slots=True)
class KeyInfo(Revocable):
    """What is known about a managed key (never the key)."""


def _info(record: dict[str, str]) -> KeyInfo:
    return KeyInfo(**Revocable.fields(record))


def _tenant_of(record: dict[str, str], presented_digest: str) -> str | None:
    stored = record.get("digest", "")
    if not hmac.compare_digest(stored.encode(), presented_digest.encode()):
        return None
    if record.get("revoked"):
        return None
    return record.get("tenant") or None


class ManagedKeys:
    """Create, list, revoke and look up managed keys (a sync redis-py client,
    ``decode_responses=True``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, tenant: str) -> tuple[KeyInfo, str]:
        """A new key for ``tenant``: (its info, the key — shown once, never stored)."""
        problem = tenant_problem(tenant)
        if problem:
            raise ValueError(problem)
        key_id, key = new_key()
        hexdigest = digest(key)
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.api_key(hexdigest),
            mapping={
                "id": key_id,
                "tenant": tenant,
                "created": repr(now),
                "revoked": "",
                "digest": hexdigest,
            },
        )
        pipe.hset(keys.API_KEYS, key_id, hexdigest)
        pipe.execute()
        return KeyInfo(key_id, tenant, now, None), key

    def list(self) -> list[KeyInfo]:
        """Every managed key, oldest first."""
        digests: dict[str, str] = self.redis.hgetall(keys.API_KEYS)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for hexdigest in digests.values():
            pipe.hgetall(keys.api_key(hexdigest))
        infos = [_info(r) for r in pipe.execute() if r]
        return sorted(infos, key=lambda i: (i.created, i.id))

    def revoke(self, key_id: str) -> KeyInfo | None:
        """Revoke a key by id (at once: nothing caches keys); None if there is no such id.
        Revoking twice keeps the first revocation time."""
        hexdigest = self.redis.hget(keys.API_KEYS, key_id)
        if not hexdigest:
            return None
        name = keys.api_key(str(hexdigest))
        record: dict[str, str] = self.redis.hgetall(name)  # type: ignore[assignment]
        if not record:
            return None
        if not record.get("revoked"):
            record["revoked"] = repr(time.time())
            self.redis.hset(name, "revoked", record["revoked"])
        return _info(record)

    def active_count(self) -> int:
        return sum(1 for info in self.list() if info.active)

    def tenant_for(self, key: str) -> str | None:
        """The tenant a presented key authenticates as, or None (unknown or revoked)."""
        if not looks_managed(key):
            return None
        presented = digest(key)
        record: dict[str, str] = self.redis.hgetall(keys.api_key(presented))  # type: ignore[assignment]
        return _tenant_of(record, presented) if record else None


async def tenant_for_async(client: aioredis.Redis, key: str) -> str | None:
    """:meth:`ManagedKeys.tenant_for` on an asyncio client (the API's auth dependency)."""
    if not looks_managed(key):
        return None
    presented = digest(key)
    record: dict[str, str] = await client.hgetall(keys.api_key(presented))  # type: ignore[misc,assignment]
    return _tenant_of(record, presented) if record else None
