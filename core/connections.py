"""Redis clients as every Courier process builds them."""

from __future__ import annotations

import redis


def redis_client(url: str, max_connections: int = 200) -> redis.Redis:
    """A redis-py client whose pool blocks (instead of failing) when all connections are busy."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        health_check_interval=10,
        socket_connect_timeout=5,
        socket_timeout=30,
        retry_on_timeout=True,
    )
    return redis.Redis(connection_pool=pool)
