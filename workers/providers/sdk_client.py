"""What both adapters share: a sharded pool of SDK clients and one JSON POST through it.

Courier forwards a request it has already validated and reads a few fields of the answer, so it
calls the SDK's own low-level ``client.post(path, body=..., cast_to=httpx2.Response)`` (the
SDKs' documented way to make a custom request) rather than ``chat.completions.create``. The
call still goes through the SDK: its auth and version headers, base URL, per-call timeout and
its exception for every HTTP status (mapped by :mod:`workers.providers.errors_map`). What it
skips is the SDK's recursive transform of the params and the pydantic models built from the
answer, which were measured at ~30 % of the CPU of a bare ``create`` call (``make bench``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Protocol, Self

import httpx2

from workers.providers import CLIENT_SHARDS, MAX_CONNECTIONS, MAX_KEEPALIVE_CONNECTIONS

# The clients' own timeout; every call passes its own, so this only bounds a forgotten one.
CLIENT_TIMEOUT_S = 600.0


class SdkClient(Protocol):
    """What Courier uses of ``openai.OpenAI`` and ``anthropic.Anthropic``."""

    @property
    def base_url(self) -> Any: ...

    def post(
        self, path: str, *, cast_to: type[Any], body: Any = ..., options: Any = ...
    ) -> Any: ...

    def copy(self, *, http_client: Any = ...) -> Self: ...

    def close(self) -> None: ...


def shard_http_client(client_class: Callable[..., httpx2.Client]) -> httpx2.Client:
    """The SDK's default HTTP client (``DefaultHttpxClient``) with one shard's share of the pool."""
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS // CLIENT_SHARDS,
        max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS // CLIENT_SHARDS,
    )
    return client_class(limits=limits, timeout=CLIENT_TIMEOUT_S)


class ShardedClient:
    """One SDK client per pool shard, used in turn (see :mod:`workers.providers`).

    A caller-supplied HTTP client is used as it is, unsharded: its pool is the caller's.
    """

    def __init__(
        self, first: SdkClient, new_http_client: Callable[[], httpx2.Client] | None
    ) -> None:
        shards = [first]
        if new_http_client is not None:
            shards += [first.copy(http_client=new_http_client()) for _ in range(CLIENT_SHARDS - 1)]
        self.first = first
        self._shards = shards
        self._next = itertools.cycle(shards).__next__

    def post_json(
        self, path: str, body: dict[str, Any], *, timeout: float
    ) -> tuple[dict[str, Any], httpx2.Headers]:
        """POST ``body`` to ``path``; the decoded JSON answer and the response headers.

        Raises the SDK's exceptions (a non-2xx status, a transport fault) or ``ValueError``
        for a body that is not a JSON object.
        """
        response: httpx2.Response = self._next().post(
            path, body=body, cast_to=httpx2.Response, options={"timeout": timeout}
        )
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object from {path}, got {type(data).__name__}")
        return data, response.headers

    def close(self) -> None:
        for shard in self._shards:
            shard.close()
