"""What both adapters share: a sharded pool of SDK clients, one JSON POST through it, errors
mapped (:class:`SdkProvider`).

Courier forwards a request it has already validated and reads a few fields of the answer, so it
calls the SDK's own low-level ``client.post(path, body=..., cast_to=httpx2.Response)`` (the
SDKs' documented way to make a custom request) rather than ``chat.completions.create``. The
call still goes through the SDK: its auth and version headers, base URL, per-call timeout and
its exception for every HTTP status (mapped by :mod:`workers.providers.errors_map`). What it
skips is the SDK's recursive transform of the params and the pydantic models built from the
answer, a large part of the CPU of a bare ``create`` call (README, Worker model).
"""

from __future__ import annotations

import functools
import itertools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import httpx
import httpx2

from core.errors import CourierError, ProviderTimeout
from core.results import ProviderResult
from workers.providers import CLIENT_SHARDS, MAX_CONNECTIONS, MAX_KEEPALIVE_CONNECTIONS
from workers.providers.errors_map import (
    NON_SDK_ERRORS,
    map_sdk_error,
    map_stream_error,
    rate_limit_headers,
)

# The clients' own timeout; every call passes its own, so this only bounds a forgotten one.
CLIENT_TIMEOUT_S = 600.0


class Assembler(Protocol):
    """Takes a stream's decoded events in order (:mod:`workers.providers.streams`)."""

    def feed(self, event: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """A streamed call's time limits: the whole call, and the longest wait for any chunk."""

    timeout: float
    chunk_timeout: float


class SdkClient(Protocol):
    """What Courier uses of ``openai.OpenAI`` and ``anthropic.Anthropic``."""

    @property
    def base_url(self) -> Any: ...

    def post(self, *args: Any, **kwargs: Any) -> Any:
        """``post(path, *, cast_to, body, options, stream, stream_cls)``."""
        ...

    def copy(self, *, http_client: Any = ...) -> Self: ...

    def close(self) -> None: ...


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context (CA bundle loaded once) for every shard of every provider: a client
    building its own would load the bundle again, once per shard (README, Worker model)."""
    return httpx2.create_ssl_context()


def shard_http_client(client_class: Callable[..., httpx2.Client]) -> httpx2.Client:
    """The SDK's default HTTP client (``DefaultHttpxClient``) with one shard's share of the pool."""
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS // CLIENT_SHARDS,
        max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS // CLIENT_SHARDS,
    )
    return client_class(limits=limits, timeout=CLIENT_TIMEOUT_S, verify=shared_ssl_context())


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

    def post_stream(
        self, path: str, body: dict[str, Any], *, timeout: httpx2.Timeout, stream_cls: Any
    ) -> Any:
        """POST ``body`` asking for a stream; the SDK's ``Stream`` of decoded JSON events
        (``cast_to=object``: no models built), its ``response`` the HTTP response."""
        return self._next().post(
            path,
            body=body,
            cast_to=object,
            options={"timeout": timeout},
            stream=True,
            stream_cls=stream_cls,
        )

    def close(self) -> None:
        for shard in self._shards:
            shard.close()


class SdkProvider:
    """What both adapters share: the sharded SDK clients, and one call with its errors mapped
    onto :mod:`core.errors`. Subclasses name the provider and their SDK's classes.

    ``api_key``/``base_url`` default to what the SDK reads from the environment (a named
    provider passes both: see :mod:`workers.providers.factory`); ``name`` is what results and
    errors are labelled with (``gemini:…``), the class's own by default; ``headers`` go with
    every request. SDK retries are off: Courier owns the retry policy.
    """

    name: str
    sdk_error: type[Exception]  # the SDK's base exception
    client_class: Callable[..., SdkClient]  # openai.OpenAI, anthropic.Anthropic
    http_client_class: Callable[..., httpx2.Client]  # the SDK's DefaultHttpxClient
    stream_class: Any  # the SDK's Stream class, for decoded JSON events

    def __init__(
        self,
        *,
        name: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx2.Client | httpx.Client | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        self._caught: tuple[type[Exception], ...] = (self.sdk_error, *NON_SDK_ERRORS)
        # while a stream is read, httpx's own errors too (the SDKs wrap only some)
        self._stream_caught: tuple[type[Exception], ...] = (
            *self._caught,
            httpx2.TransportError,
            httpx.TransportError,
        )

        def new_http_client() -> httpx2.Client:
            return shard_http_client(self.http_client_class)

        client = new_http_client() if http_client is None else http_client
        try:
            first = self.client_class(
                **self.client_options(api_key, base_url),
                default_headers=dict(headers) if headers else None,
                http_client=client,
                max_retries=0,
                timeout=CLIENT_TIMEOUT_S,
            )
        except self._caught as exc:
            if http_client is None:
                client.close()
            raise map_sdk_error(exc, provider=self.name, secrets=(api_key,)) from None
        self._secrets: tuple[str | None, ...] = (
            api_key,
            getattr(first, "api_key", None),
            getattr(first, "auth_token", None),  # anthropic's bearer-token alternative
        )
        self._clients = ShardedClient(first, new_http_client if http_client is None else None)

    def client_options(self, api_key: str | None, base_url: str | None) -> dict[str, Any]:
        """The SDK client's arguments that say where and as whom (Azure's differ)."""
        return {"api_key": api_key, "base_url": base_url}

    @property
    def base_url(self) -> str:
        return str(self._clients.first.base_url)

    def _call(
        self,
        path: str,
        params: dict[str, Any],
        to_result: Callable[..., ProviderResult],
        model: str,
        timeout: float,
    ) -> ProviderResult:
        """POST ``params``, turn the answer into a result; raises only Courier errors."""
        started = time.perf_counter()
        try:
            answer, headers = self._clients.post_json(path, params, timeout=timeout)
            latency_ms = int((time.perf_counter() - started) * 1000)
            result = to_result(answer, model=f"{self.name}:{model}", latency_ms=latency_ms)
            result.rate_limit_headers = rate_limit_headers(headers)
        except self._caught as exc:
            raise map_sdk_error(exc, provider=self.name, secrets=self._secrets) from None
        return result

    def _stream_call(
        self,
        path: str,
        params: dict[str, Any],
        assembler: Assembler,
        finish: Callable[[], ProviderResult],
        limits: StreamLimits,
    ) -> ProviderResult:
        """POST ``params`` as a stream, feed each event to ``assembler``, then ``finish``;
        raises only Courier errors. A fault mid-stream (a dropped connection, a cut or
        malformed body, a stall past the chunk timeout, an error event) is retryable."""
        started = time.perf_counter()
        deadline = time.monotonic() + limits.timeout
        read_timeout = min(limits.chunk_timeout, limits.timeout)
        http_timeout = httpx2.Timeout(limits.timeout, read=read_timeout)
        try:
            events = self._clients.post_stream(
                path, params, timeout=http_timeout, stream_cls=self.stream_class
            )
        except self._caught as exc:
            raise map_sdk_error(exc, provider=self.name, secrets=self._secrets) from None
        try:
            with events:
                for event in events:
                    assembler.feed(event)
                    if time.monotonic() > deadline:
                        raise ProviderTimeout(f"{self.name}: the stream outlasted its timeout")
            result = finish()
        except CourierError:
            raise
        except self._stream_caught as exc:
            raise map_stream_error(exc, self.name, self._secrets) from None
        result.latency_ms = int((time.perf_counter() - started) * 1000)
        result.rate_limit_headers = rate_limit_headers(events.response.headers)
        return result

    def close(self) -> None:
        """Close the connection pools."""
        self._clients.close()
