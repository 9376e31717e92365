"""OpenAI (and any OpenAI-compatible server: vLLM, Ollama, the simulator) through the official SDK.

The request is already OpenAI-shaped (SPEC §3), so the mapping is thin: a top-level ``system``
becomes a leading system message, and only the fields that are present are sent. Decisions:

* A response with ``finish_reason == "content_filter"`` (or a ``refusal`` in the message) is a
  *result* with finish reason ``content_filter``, not an error: the call succeeded and used
  tokens. Only a 400 with code ``content_filter``/``content_policy_violation`` raises
  ``ContentFiltered``.
* ``function_call`` finish reasons and legacy ``function_call`` messages are reported as
  ``tool_calls``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import httpx
import httpx2
import openai

from workers.errors import InvalidRequest, ProviderUnavailable
from workers.providers import CLIENT_SHARDS, MAX_CONNECTIONS, MAX_KEEPALIVE_CONNECTIONS
from workers.providers.base import ProviderResult, Usage
from workers.providers.errors_map import NON_SDK_ERRORS, map_sdk_error, rate_limit_headers

# Chat fields sent to the API as they are, when present (SPEC §3 plus a few safe OpenAI extras).
PASSTHROUGH_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
)
EMBEDDING_PASSTHROUGH_FIELDS = ("dimensions", "user")

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    None: "stop",
}

# The client's own timeout; every call passes its own, so this only bounds a forgotten one.
CLIENT_TIMEOUT_S = 600.0
_CAUGHT: tuple[type[Exception], ...] = (openai.OpenAIError, *NON_SDK_ERRORS)


def normalize_finish_reason(reason: str | None) -> str:
    """OpenAI ``finish_reason`` → one of ``stop | length | content_filter | tool_calls | error``."""
    return FINISH_REASONS.get(reason, "error")


def build_chat_params(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for a SPEC chat request."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("chat request needs 'messages' (a list)")
    system = request.get("system")
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    params: dict[str, Any] = {"model": model, "messages": messages}
    for name in PASSTHROUGH_FIELDS:
        value = request.get(name)
        if value is not None:
            params[name] = value
    return params


def build_embedding_params(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``embeddings.create`` for a SPEC embedding request."""
    texts = request.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidRequest("embedding request needs 'input' (a non-empty list of strings)")
    params: dict[str, Any] = {"model": model, "input": texts}
    for name in EMBEDDING_PASSTHROUGH_FIELDS:
        value = request.get(name)
        if value is not None:
            params[name] = value
    return params


def _tool_call(call: Any) -> dict[str, Any]:
    function = getattr(call, "function", None)
    if function is not None:
        return {
            "id": call.id,
            "type": "function",
            "function": {"name": function.name, "arguments": function.arguments},
        }
    custom = getattr(call, "custom", None)  # custom (free-form) tools
    return {
        "id": call.id,
        "type": getattr(call, "type", "custom"),
        "custom": {"name": getattr(custom, "name", None), "input": getattr(custom, "input", None)},
    }


def chat_result(completion: Any, *, model: str, latency_ms: int) -> ProviderResult:
    """A ``ProviderResult`` from a parsed ``ChatCompletion`` (``model`` is "openai:<name>")."""
    if not completion.choices:
        raise ProviderUnavailable("openai: response had no choices")
    choice = completion.choices[0]
    msg = choice.message
    content: str | None = msg.content
    tool_calls = [_tool_call(call) for call in (msg.tool_calls or [])]
    legacy = getattr(msg, "function_call", None)
    if legacy is not None and not tool_calls:
        tool_calls.append(
            {
                "id": "",
                "type": "function",
                "function": {"name": legacy.name, "arguments": legacy.arguments},
            }
        )
    finish_reason = normalize_finish_reason(choice.finish_reason)
    message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    refusal = getattr(msg, "refusal", None)
    if refusal:
        message["refusal"] = refusal
        if not content:
            finish_reason = "content_filter"
    usage = completion.usage
    return ProviderResult(
        model=model,
        finish_reason=finish_reason,
        usage=Usage(
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
        ),
        latency_ms=latency_ms,
        output=content or "",
        message=message,
    )


def embedding_result(response: Any, *, model: str, latency_ms: int) -> ProviderResult:
    """A ``ProviderResult`` from a parsed ``CreateEmbeddingResponse``, vectors in input order."""
    items = sorted(response.data, key=lambda item: item.index)
    usage = response.usage
    return ProviderResult(
        model=model,
        finish_reason="stop",
        usage=Usage(input_tokens=(usage.prompt_tokens or 0) if usage else 0, output_tokens=0),
        latency_ms=latency_ms,
        embeddings=[list(item.embedding) for item in items],
    )


def default_http_client() -> httpx2.Client:
    """The SDK's own default HTTP client, with one shard's share of the connection pool."""
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS // CLIENT_SHARDS,
        max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS // CLIENT_SHARDS,
    )
    return openai.DefaultHttpxClient(limits=limits, timeout=CLIENT_TIMEOUT_S)


class OpenAIProvider:
    """Chat completions and embeddings on one shared ``openai.OpenAI`` client.

    ``api_key``/``base_url`` default to what the SDK reads (``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``). SDK retries are off: Courier owns the retry policy.
    """

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        http_client: httpx2.Client | httpx.Client | None = None,
    ) -> None:
        own_client = http_client is None
        client = default_http_client() if http_client is None else http_client
        try:
            self._client = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                http_client=client,  # type: ignore[arg-type]  # the SDK accepts httpx too
                max_retries=0,
                timeout=CLIENT_TIMEOUT_S,
            )
        except _CAUGHT as exc:
            if own_client:
                client.close()
            raise map_sdk_error(exc, provider=self.name, secrets=(api_key,)) from None
        self._secrets: tuple[str | None, ...] = (api_key, getattr(self._client, "api_key", None))
        shards = [self._client]
        if own_client:
            shards += [
                self._client.copy(http_client=default_http_client())  # type: ignore[arg-type]
                for _ in range(CLIENT_SHARDS - 1)
            ]
        self._shards = shards
        self._next_shard = itertools.cycle(shards).__next__

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def complete(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """One chat completion; raises only :mod:`workers.errors` exceptions."""
        params = build_chat_params(model, request)
        started = time.perf_counter()
        try:
            raw = self._next_shard().chat.completions.with_raw_response.create(
                **params, timeout=timeout
            )
            latency_ms = int((time.perf_counter() - started) * 1000)
            result = chat_result(raw.parse(), model=f"{self.name}:{model}", latency_ms=latency_ms)
            result.rate_limit_headers = rate_limit_headers(raw.headers)
        except _CAUGHT as exc:
            raise map_sdk_error(exc, provider=self.name, secrets=self._secrets) from None
        return result

    def embed(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """One embeddings call; raises only :mod:`workers.errors` exceptions."""
        params = build_embedding_params(model, request)
        started = time.perf_counter()
        try:
            raw = self._next_shard().embeddings.with_raw_response.create(**params, timeout=timeout)
            latency_ms = int((time.perf_counter() - started) * 1000)
            result = embedding_result(
                raw.parse(), model=f"{self.name}:{model}", latency_ms=latency_ms
            )
            result.rate_limit_headers = rate_limit_headers(raw.headers)
        except _CAUGHT as exc:
            raise map_sdk_error(exc, provider=self.name, secrets=self._secrets) from None
        return result

    def close(self) -> None:
        """Close the connection pool."""
        for shard in self._shards:
            shard.close()
