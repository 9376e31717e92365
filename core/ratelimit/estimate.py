"""Token estimates for a request before it is sent (tiktoken cannot download its encodings here).

The estimate follows the openai-cookbook's chat counting with the chars/4 rule for content:

* chat: ``2`` (reply priming) + for each message ``4 + ceil(chars / 4)`` of its text (the
  ``system`` field counts as one more message; non-text parts count their JSON length), plus
  ``ceil(chars / 4)`` of the JSON of ``tools`` and ``response_format``;
* output: ``n * max_tokens`` (or ``max_completion_tokens``); absent, :data:`DEFAULT_MAX_TOKENS`
  (the Anthropic adapter's own default);
* embedding: ``ceil(chars / 4)`` per input, no output.

The estimate is charged at reserve time and settled to the provider's ``usage`` afterwards, so
it only needs to be an upper bound of the right size, not exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TOKENS = 4096
PER_MESSAGE = 4
PRIMING = 2


@dataclass(frozen=True, slots=True)
class Estimate:
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def text_tokens(text: str) -> int:
    """The chars/4 rule, rounded up (0 for empty text)."""
    return math.ceil(len(text) / 4)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            else:
                total += text_tokens(json.dumps(part, default=str))
        return total
    return text_tokens(json.dumps(content, default=str))


def _json_tokens(value: Any) -> int:
    return 0 if value is None else text_tokens(json.dumps(value, default=str))


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def estimate_request(request: Mapping[str, Any]) -> Estimate:
    """Estimated input and output tokens of a chat or embedding request (its shape:
    docs/contract.md, The job)."""
    if "messages" not in request and "input" in request:
        raw = request["input"]
        inputs = raw if isinstance(raw, list) else [raw]
        return Estimate(sum(_content_tokens(i) for i in inputs) or 1, 0)
    messages = request.get("messages") or []
    tokens = PRIMING
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, Mapping) else message
        tokens += PER_MESSAGE + _content_tokens(content)
        if isinstance(message, Mapping) and message.get("tool_calls"):
            tokens += _json_tokens(message["tool_calls"])
    if request.get("system"):
        tokens += PER_MESSAGE + _content_tokens(request["system"])
    tokens += _json_tokens(request.get("tools")) + _json_tokens(request.get("response_format"))
    max_tokens = _positive_int(request.get("max_tokens")) or _positive_int(
        request.get("max_completion_tokens")
    )
    n = _positive_int(request.get("n")) or 1
    return Estimate(tokens, n * (max_tokens or DEFAULT_MAX_TOKENS))
