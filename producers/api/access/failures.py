"""Failed token requests, counted per client id and per source address
(docs/contract.md, Access control).

Each failure of ``POST /oauth/token`` adds one to a fixed window per source address
(``COURIER_TOKEN_FAILURES_PER_ADDRESS``, default 30), and each failed client authentication
(``invalid_client``) one to a window per client id named
(``COURIER_TOKEN_FAILURES_PER_CLIENT``, default 10); the window
(``COURIER_TOKEN_FAILURE_WINDOW_S``, default 300 s) starts at the first failure. While either
count is at its limit, every token request for that client or from that address is refused
with 429 and ``Retry-After`` (the window's time left) before its secret is checked, so a
guesser gets a few tries per window whatever it sends. Counters live in Redis
(``courier:oauth:failures:<kind>:<who>``), shared by every API process.
"""

from __future__ import annotations

import hashlib
import math

import redis.asyncio as aioredis

from config.settings import Settings
from core import keys


def _who(value: str) -> str:
    # client ids and addresses are short; a digest keeps odd input out of key names
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class TokenFailures:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.window_s = settings.token_failure_window_s
        self.limits = {
            "client": settings.token_failures_per_client,
            "address": settings.token_failures_per_address,
        }

    def _keys(self, client_id: str | None, address: str | None) -> list[tuple[str, int]]:
        named = [("client", client_id), ("address", address)]
        return [
            (keys.token_failures(kind, _who(who)), self.limits[kind]) for kind, who in named if who
        ]

    async def retry_after(self, client_id: str | None, address: str | None) -> int:
        """Seconds until a token request may be tried again; 0 if it may be now."""
        counters = self._keys(client_id, address)
        if not counters:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in counters:
            pipe.get(key)
            pipe.pttl(key)
        answers = await pipe.execute()
        wait_ms = 0
        for i, (_, limit) in enumerate(counters):
            count, ttl_ms = answers[2 * i], answers[2 * i + 1]
            if count is not None and int(count) >= limit:
                wait_ms = max(wait_ms, int(ttl_ms) if int(ttl_ms) > 0 else self.window_s * 1000)
        return math.ceil(wait_ms / 1000) if wait_ms else 0

    async def record(self, client_id: str | None, address: str | None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for key, _ in self._keys(client_id, address):
            pipe.set(key, 0, ex=self.window_s, nx=True)
            pipe.incr(key)
        await pipe.execute()
