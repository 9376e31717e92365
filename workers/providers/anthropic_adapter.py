"""Anthropic through the official SDK's Messages API, fed OpenAI-shaped chat requests.

Request mapping (OpenAI chat fields → Messages API):

* ``system`` (top level) and every ``system``/``developer`` message, in order, are joined by a
  blank line into ``system`` (Anthropic has no mid-conversation system turns).
* ``max_tokens`` (or ``max_completion_tokens``) is required by Anthropic: absent, it is
  :data:`DEFAULT_MAX_TOKENS`.
* ``stop`` (a string or a list) → ``stop_sequences``; ``temperature`` (clamped to Anthropic's
  0 to 1 range) and ``top_p`` pass through; ``user`` → ``metadata.user_id``; ``seed`` and the
  penalties have no Anthropic equivalent and are dropped.
* ``tools`` ``{"type": "function", "function": {name, description, parameters}}`` →
  ``{name, description, input_schema}``; ``tool_choice`` ``auto|required|none|{function}`` →
  ``auto|any|none|{tool}``; ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``.
* An assistant message's ``tool_calls`` → ``tool_use`` blocks (``arguments`` JSON → ``input``);
  ``role: tool`` messages → ``tool_result`` blocks in a user message; consecutive messages that
  land on the same role are merged into one message of content blocks.
* Content parts: ``text`` → text blocks, ``image_url`` (``data:`` or http URL) → image blocks;
  any other part is assumed to be Anthropic-shaped already and passes through.
* ``response_format`` ``json_object``/``json_schema`` → an instruction appended to ``system``
  (the schema included). Portable across every Claude model and compatible server; Anthropic's
  native structured outputs depend on the model, so they are not used.

Response: text blocks are concatenated into ``output``; ``tool_use`` blocks come back as
OpenAI-shaped ``tool_calls``. ``refusal`` is a *result* with finish reason ``content_filter``
(not an error). ``usage.input_tokens`` includes cache-creation and cache-read input tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anthropic

from core.errors import InvalidRequest
from core.results import ProviderResult, Usage
from workers.providers.sdk_client import SdkProvider, StreamLimits
from workers.providers.streams import AnthropicEvents, OnText

DEFAULT_MAX_TOKENS = 4096
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)
JSON_SCHEMA_INSTRUCTION = (
    "Respond with a single valid JSON object that conforms to the JSON Schema below, and "
    "nothing else: no prose, no code fences.\nJSON Schema: {schema}"
)

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    None: "stop",
}
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def normalize_finish_reason(reason: str | None) -> str:
    """Anthropic ``stop_reason`` → ``stop | length | content_filter | tool_calls | error``."""
    return STOP_REASONS.get(reason, "error")


def _text_of(content: Any) -> str:
    """The text of a system message's content (a string or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or (isinstance(part, Mapping) and "text" in part)
        )
    raise InvalidRequest("system content must be a string or a list of text parts")


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url part needs a url")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (string, list of parts, or None) → Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            blocks.extend(_blocks(part))
        elif not isinstance(part, Mapping):
            raise InvalidRequest("message content parts must be objects")
        elif part.get("type") == "text":
            blocks.extend(_blocks(part.get("text")))
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
        else:
            blocks.append(dict(part))
    return blocks


def _tool_use(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, Mapping) or not function.get("name"):
        raise InvalidRequest("tool_calls entries need function.name")
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise InvalidRequest(
            f"tool call {function['name']!r} has arguments that are not JSON"
        ) from None
    if not isinstance(tool_input, Mapping):
        raise InvalidRequest(f"tool call {function['name']!r} arguments must be a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function["name"], "input": tool_input}


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not call_id:
        raise InvalidRequest("tool messages need tool_call_id")
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": content if isinstance(content, str) else _blocks(content),
    }


def _append(messages: list[dict[str, Any]], role: str, content: Any) -> None:
    """Add a turn, merging it into the previous one if that has the same role."""
    if messages and messages[-1]["role"] == role:
        previous = messages[-1]
        previous["content"] = _blocks_of(previous["content"]) + _blocks_of(content)
    else:
        messages.append({"role": role, "content": content})


def _blocks_of(content: Any) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else _blocks(content)


def map_messages(
    openai_messages: list[Any], system: Any = None
) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI chat messages (+ top-level system) → (Anthropic ``system``, ``messages``)."""
    system_parts = [_text_of(system)] if system else []
    messages: list[dict[str, Any]] = []
    for message in openai_messages:
        if not isinstance(message, Mapping):
            raise InvalidRequest("messages must be objects")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system_parts.append(text)
        elif role == "user":
            _append(messages, "user", content if isinstance(content, str) else _blocks(content))
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if calls:
                blocks = _blocks(content) + [_tool_use(call) for call in calls]
                _append(messages, "assistant", blocks)
            elif content:
                _append(
                    messages, "assistant", content if isinstance(content, str) else _blocks(content)
                )
        elif role == "tool":
            _append(messages, "user", [_tool_result(message)])
        else:
            raise InvalidRequest(f"unsupported message role {role!r} for anthropic")
    return "\n\n".join(system_parts), messages


def _map_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise InvalidRequest("tools entries must be objects")
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, Mapping):
        return dict(tool)  # already Anthropic-shaped (or a server tool)
    mapped: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        mapped["description"] = function["description"]
    return mapped


def _map_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None
    if choice is None:
        mapped = None
    elif isinstance(choice, str):
        mapped = dict(TOOL_CHOICES.get(choice) or {"type": "auto"})
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    else:
        mapped = dict(choice)
    if parallel is False and (mapped is None or mapped["type"] != "none"):
        mapped = mapped or {"type": "auto"}
        mapped["disable_parallel_tool_use"] = True
    return mapped


def _format_instruction(response_format: Any) -> str | None:
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return JSON_OBJECT_INSTRUCTION
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema", spec) if isinstance(spec, Mapping) else spec
        return JSON_SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, separators=(",", ":")))
    return None


def build_message_params(model: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for an OpenAI-shaped chat request
    (docs/contract.md, The job)."""
    openai_messages = request.get("messages")
    if not isinstance(openai_messages, list):
        raise InvalidRequest("chat request needs 'messages' (a list)")
    system, messages = map_messages(openai_messages, request.get("system"))
    instruction = _format_instruction(request.get("response_format"))
    if instruction:
        system = f"{system}\n\n{instruction}" if system else instruction
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    params: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        params["system"] = system
    stop = request.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = request.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise InvalidRequest("temperature must be a number")
        params["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if request.get("top_p") is not None:
        params["top_p"] = request["top_p"]
    tools = request.get("tools")
    if tools:
        params["tools"] = [_map_tool(tool) for tool in tools]
        choice = _map_tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            params["tool_choice"] = choice
    if request.get("user"):
        params["metadata"] = {"user_id": str(request["user"])}
    return params


def message_usage(usage: Mapping[str, Any]) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; Courier's
    ``input_tokens`` is all three, with the cache's shares kept for pricing."""
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(usage.get("input_tokens") or 0) + read + written,
        output_tokens=usage.get("output_tokens") or 0,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )


def message_result(message: Mapping[str, Any], *, model: str, latency_ms: int) -> ProviderResult:
    """A ``ProviderResult`` from a Messages API answer's JSON (``model`` is "anthropic:<name>")."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input"), separators=(",", ":"), ensure_ascii=False)
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    text = "".join(texts)
    return ProviderResult(
        model=model,
        finish_reason=normalize_finish_reason(message.get("stop_reason")),
        usage=message_usage(message.get("usage") or {}),
        latency_ms=latency_ms,
        output=text,
        message={"role": "assistant", "content": text or None, "tool_calls": tool_calls},
    )


class AnthropicProvider(SdkProvider):
    """The Messages API on shared ``anthropic.Anthropic`` clients (no embeddings).

    ``api_key``/``base_url`` default to ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``.
    """

    name = "anthropic"
    sdk_error = anthropic.AnthropicError
    client_class = anthropic.Anthropic
    http_client_class = anthropic.DefaultHttpxClient
    stream_class = anthropic.Stream[object]

    def complete(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """One Messages API call; raises only :mod:`core.errors` exceptions."""
        params = build_message_params(model, request)
        return self._call("/v1/messages", params, message_result, model, timeout)

    def stream_complete(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        timeout: float,
        chunk_timeout: float,
        on_text: OnText,
    ) -> ProviderResult:
        """One Messages API call streamed, each piece of text handed to ``on_text``; the
        result is the non-streamed call's. Raises only :mod:`core.errors` exceptions; a
        fault mid-stream is retryable."""
        params = build_message_params(model, request)
        params["stream"] = True
        events = AnthropicEvents(on_text)

        def finish() -> ProviderResult:
            message = events.final_message()
            return message_result(message, model=f"anthropic:{model}", latency_ms=0)

        limits = StreamLimits(timeout, chunk_timeout)
        return self._stream_call("/v1/messages", params, events, finish, limits)

    def embed(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        """Anthropic has no embeddings API: always ``InvalidRequest``."""
        raise InvalidRequest(
            f"anthropic has no embeddings API (model {model!r}); use an openai embedding model"
        )
