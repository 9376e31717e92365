"""OpenAI (and any OpenAI-compatible server: vLLM, Ollama, the simulator) through the official SDK.

The request is already OpenAI-shaped (docs/contract.md, The job), so the mapping is thin: a
top-level ``system`` becomes a leading system message, and only the fields that are present
are sent. Decisions:

* A response with ``finish_reason == "content_filter"`` (or a ``refusal`` in the message) is a
  *result* with finish reason ``content_filter``, not an error: the call succeeded and used
  tokens. Only a 400 with code ``content_filter``/``content_policy_violation`` raises
  ``ContentFiltered``.
* ``function_call`` finish reasons and legacy ``function_call`` messages are reported as
  ``tool_calls``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import openai

from core.errors import InvalidRequest, ProviderUnavailable
from core.results import ProviderResult, Usage
from workers.providers.sdk_client import SdkClient, SdkProvider, StreamLimits
from workers.providers.streams import OnText, OpenAIChunks

# Chat fields sent to the API as they are, when present (the contract's, plus a few safe OpenAI
# extras).
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


def normalize_finish_reason(reason: str | None) -> str:
    """OpenAI ``finish_reason`` → one of ``stop | length | content_filter | tool_calls | error``."""
    return FINISH_REASONS.get(reason, "error")


def build_chat_params(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for a chat request of the contract."""
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
    """The keyword arguments of ``embeddings.create`` for an embedding request of the contract."""
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


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if function is not None:
        return {
            "id": call.get("id", ""),
            "type": "function",
            "function": {"name": function.get("name"), "arguments": function.get("arguments")},
        }
    custom = call.get("custom") or {}  # custom (free-form) tools
    return {
        "id": call.get("id", ""),
        "type": call.get("type", "custom"),
        "custom": {"name": custom.get("name"), "input": custom.get("input")},
    }


def _usage(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    return answer.get("usage") or {}


def chat_usage(answer: Mapping[str, Any]) -> Usage:
    """``usage`` of a chat completion: ``prompt_tokens`` counts every input token, of which
    ``prompt_tokens_details.cached_tokens`` came from OpenAI's prompt cache (billed lower)."""
    usage = _usage(answer)
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def chat_result(completion: Mapping[str, Any], *, model: str, latency_ms: int) -> ProviderResult:
    """A ``ProviderResult`` from a chat completion's JSON (``model`` is "<provider>:<name>")."""
    choices = completion.get("choices")
    if not choices:  # an answer all the same: its tokens were billed
        raise ProviderUnavailable(
            f"{model.partition(':')[0]}: response had no choices", usage=chat_usage(completion)
        )
    choice = choices[0]
    msg = choice.get("message") or {}
    content: str | None = msg.get("content")
    tool_calls = [_tool_call(call) for call in (msg.get("tool_calls") or [])]
    legacy = msg.get("function_call")
    if legacy and not tool_calls:
        tool_calls.append(
            {
                "id": "",
                "type": "function",
                "function": {"name": legacy.get("name"), "arguments": legacy.get("arguments")},
            }
        )
    finish_reason = normalize_finish_reason(choice.get("finish_reason"))
    message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    refusal = msg.get("refusal")
    if refusal:
        message["refusal"] = refusal
        if not content:
            finish_reason = "content_filter"
    return ProviderResult(
        model=model,
        finish_reason=finish_reason,
        usage=chat_usage(completion),
        latency_ms=latency_ms,
        output=content or "",
        message=message,
    )


def embedding_result(response: Mapping[str, Any], *, model: str, latency_ms: int) -> ProviderResult:
    """A ``ProviderResult`` from an embeddings answer's JSON, vectors in input order."""
    items = sorted(response.get("data") or [], key=lambda item: item.get("index", 0))
    return ProviderResult(
        model=model,
        finish_reason="stop",
        usage=Usage(input_tokens=_usage(response).get("prompt_tokens") or 0, output_tokens=0),
        latency_ms=latency_ms,
        embeddings=[list(item["embedding"]) for item in items],
    )


class OpenAIProvider(SdkProvider):
    """Chat completions and embeddings on shared ``openai.OpenAI`` clients.

    ``api_key``/``base_url`` default to ``OPENAI_API_KEY``/``OPENAI_BASE_URL``.
    """

    name = "openai"
    sdk_error = openai.OpenAIError
    client_class: Callable[..., SdkClient] = openai.OpenAI
    http_client_class = openai.DefaultHttpxClient
    stream_class = openai.Stream[object]

    def complete(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """One chat completion; raises only :mod:`core.errors` exceptions."""
        params = build_chat_params(model, request)
        return self._call("/chat/completions", params, chat_result, model, timeout)

    def stream_complete(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        timeout: float,
        chunk_timeout: float,
        on_text: OnText,
    ) -> ProviderResult:
        """One chat completion streamed (usage in its last chunk), each piece of text handed
        to ``on_text``; the result is the non-streamed call's. Raises only :mod:`core.errors`
        exceptions; a fault mid-stream is retryable."""
        params = build_chat_params(model, request)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        chunks = OpenAIChunks(on_text)

        def finish() -> ProviderResult:
            return chat_result(chunks.completion(), model=f"openai:{model}", latency_ms=0)

        limits = StreamLimits(timeout, chunk_timeout)
        return self._stream_call("/chat/completions", params, chunks, finish, limits)

    def embed(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """One embeddings call; raises only :mod:`core.errors` exceptions."""
        params = build_embedding_params(model, request)
        return self._call("/embeddings", params, embedding_result, model, timeout)
