"""What a provider call returns, as both sides read it: the answer, its usage, the model name.

A chat request is the OpenAI-shaped dict of docs/contract.md, The job (``messages``,
``system``, ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``tools``,
``response_format``), already validated by the API. An embedding request is
``{"input": [str, ...]}``. Adapters turn provider SDK exceptions into the
error tree of :mod:`core.errors`; nothing else escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls", "error")


@dataclass(slots=True)
class Usage:
    """Tokens a call used, as the provider reported them. ``input_tokens`` counts every
    prompt token; of those, ``cached_input_tokens`` were read from the provider's prompt
    cache and ``cache_write_tokens`` written to it (Anthropic), each priced apart
    (:mod:`core.cost.prices`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    def to_record(self) -> dict[str, int]:
        """``result.usage``: input and output, and the cache's shares when there are any."""
        out = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.cached_input_tokens:
            out["cached_input_tokens"] = self.cached_input_tokens
        if self.cache_write_tokens:
            out["cache_write_tokens"] = self.cache_write_tokens
        return out


@dataclass(slots=True)
class ProviderResult:
    """A normalized answer (``result`` in docs/contract.md, The job) plus the provider's
    rate-limit headers."""

    model: str  # "provider:model" that answered
    finish_reason: str
    usage: Usage
    latency_ms: int
    output: str | None = None
    message: dict[str, Any] | None = None
    embeddings: list[list[float]] | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The ``result`` object of the job record."""
        return {
            "output": self.output,
            "message": self.message,
            "embeddings": self.embeddings,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_record(),
            "model": self.model,
            "latency_ms": self.latency_ms,
        }


def split_model(qualified: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``; raises ValueError if malformed."""
    provider, sep, name = qualified.partition(":")
    if not sep or not provider or not name:
        raise ValueError(f"model must be 'provider:model', got {qualified!r}")
    return provider, name
