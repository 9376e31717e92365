"""The HTTP client webhooks go out on: one per process, pinned to checked addresses.

httpcore opens every new connection through a *network backend*; ours resolves the
host itself, refuses it unless every address is public (see :mod:`core.ssrf`),
and connects to one of the addresses it checked. The request keeps its URL, so the
``Host`` header, TLS SNI and certificate checks still use the callback's host name, and
the pool keys connections by that name (a connection reused later was checked when it
was opened). No proxy from the environment, no redirects.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import httpcore
import httpx

from core.ssrf import checked_addresses

POOL_SIZE = 200  # ~200 deliveries in flight per worker process
KEEPALIVE = 50


class GuardedBackend(httpcore.NetworkBackend):
    """Connects only to addresses :func:`checked_addresses` approved for the host."""

    def __init__(self, allow_private: bool, inner: httpcore.NetworkBackend | None = None):
        self.allow_private = allow_private
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = checked_addresses(host, port, self.allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are never sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses :class:`GuardedBackend`."""

    def __init__(
        self,
        allow_private: bool,
        limits: httpx.Limits,
        backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private, backend),
        )


def build_client(
    allow_private: bool,
    timeout_s: float,
    *,
    pool_size: int = POOL_SIZE,
    backend: httpcore.NetworkBackend | None = None,
) -> httpx.Client:
    """A client for webhook deliveries: pinned, no redirects, no env proxies."""
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=KEEPALIVE)
    return httpx.Client(
        transport=GuardedTransport(allow_private, limits, backend),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
    )


_clients: dict[tuple[int, bool, float], httpx.Client] = {}
_clients_lock = threading.Lock()


def shared_client(allow_private: bool, timeout_s: float) -> httpx.Client:
    """This process's client (a forked child builds its own)."""
    key = (os.getpid(), allow_private, timeout_s)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = build_client(allow_private, timeout_s)
        return client
