"""The most tokens a call can use, known before it is made: a budget reserves the call's cost
at these counts (:mod:`core.cost.ledger`), so that no true cost can exceed its reservation.

* **Input**: one token per UTF-8 byte of the prompt's text (messages, ``system``; an
  embedding's inputs), plus :data:`PER_MESSAGE` per message and the JSON of tool calls,
  ``tools`` and ``response_format``. The providers' tokenizers are byte-level BPE: a token
  is at least one byte, so this bounds every text, code or CJK included, where the rate
  limiter's chars/4 estimate (:mod:`core.ratelimit.estimate`) is only a typical count. Each
  image part counts :data:`IMAGE_TOKENS` instead of its bytes, and a request with ``tools``
  adds :data:`TOOLS_TOKENS` for the tool-use prompt Anthropic adds.
* **Output**: ``max_tokens`` (or ``max_completion_tokens``), else :data:`DEFAULT_MAX_TOKENS`,
  which :func:`capped` then sends as ``max_completion_tokens`` so that it holds (Anthropic's
  adapter sends the same default already; OpenAI models would otherwise answer up to their
  own limit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.ratelimit.estimate import DEFAULT_MAX_TOKENS

# What the providers bill for one large image, with room: OpenAI's patch-based models bill up
# to ~2,600 tokens for a full-size image, Anthropic's up to ~1,600 at 1.15 megapixels.
IMAGE_TOKENS = 5_000
# Anthropic adds a tool-use system prompt of up to ~350 tokens when ``tools`` are given.
TOOLS_TOKENS = 500
IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
# A message's role and separators: the providers' chat formats add 3 to 4 tokens; with room.
PER_MESSAGE = 8
PRIMING = 3


@dataclass(frozen=True, slots=True)
class Bound:
    input_tokens: int
    output_tokens: int


def _utf8(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _text(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _content(content: Any) -> int:
    """Bytes of a message's text (JSON for anything else), images counted as
    :data:`IMAGE_TOKENS` each."""
    if content is None:
        return 0
    if isinstance(content, str):
        return _text(content)
    if not isinstance(content, list):
        return _utf8(content)
    total = 0
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in IMAGE_PART_TYPES:
            total += IMAGE_TOKENS
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            total += _text(part["text"]) + PER_MESSAGE
        else:
            total += _utf8(part)
    return total


def _output(request: Mapping[str, Any]) -> int:
    for name in ("max_tokens", "max_completion_tokens"):
        value = request.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def bound(request: Mapping[str, Any]) -> Bound:
    """The most input and output tokens a chat or embedding ``request`` can use."""
    if "messages" not in request and "input" in request:
        inputs = request["input"]
        return Bound(
            sum(_content(i) for i in (inputs if isinstance(inputs, list) else [inputs])), 0
        )
    prompt = PRIMING
    for message in request.get("messages") or []:
        if not isinstance(message, Mapping):
            prompt += _utf8(message)
            continue
        prompt += PER_MESSAGE + _content(message.get("content"))
        for name in ("name", "tool_call_id"):
            if isinstance(message.get(name), str):
                prompt += _text(message[name])
        if message.get("tool_calls"):
            prompt += _utf8(message["tool_calls"])
    if request.get("system") is not None:
        prompt += PER_MESSAGE + _content(request["system"])
    for name in ("tools", "response_format"):
        if request.get(name) is not None:
            prompt += _utf8(request[name])
    if request.get("tools"):
        prompt += TOOLS_TOKENS
    return Bound(prompt, _output(request))


def capped(request: dict[str, Any]) -> dict[str, Any]:
    """A chat ``request`` that sets no output limit, with the bound's one
    (``max_completion_tokens``: OpenAI's current name, which every OpenAI chat model takes and
    Courier's Anthropic adapter reads)."""
    if (
        "messages" not in request
        or request.get("max_tokens")
        or request.get("max_completion_tokens")
    ):
        return request
    return {**request, "max_completion_tokens": DEFAULT_MAX_TOKENS}
