"""Redis clients as every Courier process builds them.

:func:`store_client` and :func:`store_async_client` reach the job store's Redis: the master
that Redis Sentinel names when ``COURIER_REDIS_SENTINELS`` is set (asked again for every new
connection, and whenever a connection finds its server gone or demoted to a replica, so a
failover is followed without a restart), else ``COURIER_REDIS_URL``. Their pools block,
instead of failing, while every connection is busy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.sentinel import Sentinel, SentinelConnectionPool

from config.settings import Settings

POOL_TIMEOUT_S = 30  # a caller waits this long for a free connection, then gets an error
SENTINEL_TIMEOUT_S = 2  # one Sentinel's answer; the next one is asked after it


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (the master's address asked of the Sentinels for each new connection)
    that blocks, as :class:`redis.BlockingConnectionPool` does, while all are busy."""


class BlockingAsyncSentinelPool(AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):  # type: ignore[misc]
    """:class:`BlockingSentinelPool` for ``redis.asyncio``."""


def _sync_options() -> dict[str, Any]:
    return dict(
        decode_responses=True,
        health_check_interval=10,
        socket_connect_timeout=5,
        socket_timeout=30,
        retry_on_timeout=True,
    )


def _async_options(max_connections: int) -> dict[str, Any]:
    return dict(
        max_connections=max_connections,
        timeout=10,
        decode_responses=True,
        socket_connect_timeout=5,
    )


def redis_client(url: str, max_connections: int = 200) -> redis.Redis:
    """A client of the Redis at ``url`` whose pool blocks (instead of failing) when all
    connections are busy."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_TIMEOUT_S, **_sync_options()
    )
    return redis.Redis(connection_pool=pool)


def store_client(settings: Settings, max_connections: int = 200) -> redis.Redis:
    """The job store's Redis (its master, through Sentinel where configured)."""
    if not settings.redis_sentinels:
        return redis_client(settings.redis_url, max_connections)
    sentinel = Sentinel(
        settings.redis_sentinels,
        socket_connect_timeout=SENTINEL_TIMEOUT_S,
        socket_timeout=SENTINEL_TIMEOUT_S,
    )
    master: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        **_sync_options(),
        **url_credentials(settings.redis_url),
    )
    return master


def store_async_client(settings: Settings, max_connections: int = 500) -> aioredis.Redis:
    """The job store's Redis for asyncio code (the API's reads, long-polls and quotas)."""
    if not settings.redis_sentinels:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, **_async_options(max_connections)
        )
        return aioredis.Redis(connection_pool=pool)
    sentinel = AsyncSentinel(
        settings.redis_sentinels,
        socket_connect_timeout=SENTINEL_TIMEOUT_S,
        socket_timeout=SENTINEL_TIMEOUT_S,
    )
    master: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=BlockingAsyncSentinelPool,
        **_async_options(max_connections),
        **url_credentials(settings.redis_url),
    )
    return master


def url_credentials(url: str) -> dict[str, Any]:
    """The database number, user and password of a ``redis://`` URL (with Sentinel, its
    host and port are not used)."""
    parts = urlsplit(url)
    out: dict[str, Any] = {"db": int(parts.path.strip("/") or 0)}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    return out
