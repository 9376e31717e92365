"""What a provider call costs: the shipped price table, ``COURIER_PRICES`` over it, and the
arithmetic in nano-dollars (10^-9 USD, integers, so that Redis adds them exactly).

A model is priced by the most specific pattern of ``COURIER_PRICES`` that matches it (the
rate limiter's rule: an exact name, else the pattern with the most literal characters), and
only when none does, by the most specific pattern of :data:`DEFAULT_PRICES`: so
``COURIER_PRICES='{"openai:*": ...}'`` reprices every OpenAI model, shipped ones included.
A model neither table matches has no price: its jobs show ``cost_usd: null``.

**Where the shipped prices come from** (read on 2026-12-06; this machine has no internet,
so from stored copies of public pages, not the live ones). OpenAI: the GPT-5.2, 5.3-codex,
5.4 (mini, nano) and 5.5 prices, with their long-context tiers, from the API list prices in
GitHub's Copilot table (github/docs ``data/tables/copilot/models-and-pricing.yml`` at
024f6b0f); the earlier models (GPT-5, 5.1, 4.1, 4o, o-series, embeddings) as OpenAI's
pricing page (https://platform.openai.com/docs/pricing) gave them in 2025. Anthropic: the
pricing page https://platform.claude.com/docs/en/about-claude/pricing and each model's page
under https://platform.claude.com/docs/en/models/ (5-minute cache writes; 1-hour writes cost
more and are not modelled: a call that writes a 1-hour cache is undercounted by the
difference). Prices change and new models appear: check them, and set ``COURIER_PRICES``.
Batch API and priority-tier prices are not modelled (Courier uses neither).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from config.costs import LongContextTier, ModelPrice, PriceTier
from core.ratelimit.limiter import match_pattern
from core.results import Usage

NANO_PER_USD = 1_000_000_000
NANO_PER_TOKEN_PER_USD_PER_M = 1_000  # $1 per 1M tokens is 1,000 nano-dollars per token


def _p(
    input: float,
    output: float,
    cached_input: float | None = None,
    cache_write: float | None = None,
    long_context: tuple[int, float, float, float | None] | None = None,
) -> ModelPrice:
    tier = None
    if long_context is not None:
        above, l_in, l_out, l_cached = long_context
        tier = LongContextTier(
            above_input_tokens=above, input=l_in, output=l_out, cached_input=l_cached
        )
    return ModelPrice(
        input=input,
        output=output,
        cached_input=cached_input,
        cache_write=cache_write,
        long_context=tier,
    )


def _models(provider: str, names: str, price: ModelPrice) -> dict[str, ModelPrice]:
    """Each model name exactly, and its dated snapshots (``gpt-4o-mini-2024-07-18``,
    ``claude-haiku-4-5-20251001``). Not a wildcard after the name: ``gpt-5.5*`` would also
    price a ``gpt-5.5-pro`` at a fraction of its cost, and a budget must never rest on an
    underestimate. A model not listed has no price until ``COURIER_PRICES`` gives it one."""
    out: dict[str, ModelPrice] = {}
    for name in names.split():
        out[f"{provider}:{name}"] = price
        out[f"{provider}:{name}-20*"] = price
    return out


# USD per 1M tokens: input, output, cached input (a prompt-cache read), cache write.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    # OpenAI, GPT-5.2 and later (GitHub's Copilot table of API list prices, 024f6b0f)
    **_models(
        "openai", "gpt-5.5", _p(5.00, 30.00, 0.50, long_context=(272_000, 10.00, 45.00, 1.00))
    ),
    **_models(
        "openai", "gpt-5.4", _p(2.50, 15.00, 0.25, long_context=(272_000, 5.00, 22.50, 0.50))
    ),
    **_models("openai", "gpt-5.4-mini", _p(0.75, 4.50, 0.075)),
    **_models("openai", "gpt-5.4-nano", _p(0.20, 1.25, 0.02)),
    **_models("openai", "gpt-5.2 gpt-5.3-codex", _p(1.75, 14.00, 0.175)),
    # OpenAI, earlier models (platform.openai.com/docs/pricing, 2025)
    **_models("openai", "gpt-5 gpt-5.1", _p(1.25, 10.00, 0.125)),
    **_models("openai", "gpt-5-mini", _p(0.25, 2.00, 0.025)),
    **_models("openai", "gpt-5-nano", _p(0.05, 0.40, 0.005)),
    **_models("openai", "gpt-4.1", _p(2.00, 8.00, 0.50)),
    **_models("openai", "gpt-4.1-mini", _p(0.40, 1.60, 0.10)),
    **_models("openai", "gpt-4.1-nano", _p(0.10, 0.40, 0.025)),
    **_models("openai", "gpt-4o", _p(2.50, 10.00, 1.25)),
    "openai:gpt-4o-2024-05-13": _p(5.00, 15.00),  # the first snapshot, dearer
    **_models("openai", "gpt-4o-mini", _p(0.15, 0.60, 0.075)),
    **_models("openai", "o4-mini", _p(1.10, 4.40, 0.275)),
    **_models("openai", "o3", _p(2.00, 8.00, 0.50)),
    **_models("openai", "o3-mini o1-mini", _p(1.10, 4.40, 0.55)),
    **_models("openai", "o3-pro", _p(20.00, 80.00)),
    **_models("openai", "o1", _p(15.00, 60.00, 7.50)),
    **_models("openai", "o1-pro", _p(150.00, 600.00)),
    **_models("openai", "gpt-4-turbo", _p(10.00, 30.00)),
    "openai:gpt-4": _p(30.00, 60.00),
    **_models("openai", "gpt-3.5-turbo", _p(0.50, 1.50)),
    "openai:text-embedding-3-small": _p(0.02, 0.0),
    "openai:text-embedding-3-large": _p(0.13, 0.0),
    "openai:text-embedding-ada-002": _p(0.10, 0.0),
    # Anthropic (platform.claude.com pricing and model pages; 5-minute cache writes)
    **_models("anthropic", "claude-fable-5-2", _p(8.00, 40.00, 0.80, 10.00)),
    **_models("anthropic", "claude-fable-5-1", _p(10.00, 50.00, 0.25, 12.50)),
    **_models("anthropic", "claude-fable-5", _p(10.00, 50.00, 1.00, 12.50)),
    **_models("anthropic", "claude-opus-5-5", _p(4.00, 20.00, 0.20, 5.00)),
    **_models("anthropic", "claude-opus-5", _p(5.00, 25.00, 0.50, 6.25)),
    **_models("anthropic", "claude-sonnet-5 claude-sonnet-5-5", _p(2.00, 10.00, 0.20, 2.50)),
    # Haiku 5.5 is priced by prompt length: above 100K input tokens the whole call costs 5x.
    **_models(
        "anthropic",
        "claude-haiku-5-5",
        _p(0.10, 0.50, 0.01, 0.125, long_context=(100_000, 0.50, 2.50, 0.05)),
    ),
    **_models(
        "anthropic",
        "claude-opus-4-5 claude-opus-4-6 claude-opus-4-7 claude-opus-4-8",
        _p(5.00, 25.00, 0.50, 6.25),
    ),
    **_models(
        "anthropic", "claude-opus-4 claude-opus-4-0 claude-opus-4-1", _p(15.00, 75.00, 1.50, 18.75)
    ),
    **_models("anthropic", "claude-sonnet-4-6", _p(3.00, 15.00, 0.30, 3.75)),
    # Sonnet 4 and 4.5: a prompt over 200K tokens (1M context) costs $6 / $22.50.
    **_models(
        "anthropic",
        "claude-sonnet-4 claude-sonnet-4-0 claude-sonnet-4-5",
        _p(3.00, 15.00, 0.30, 3.75, long_context=(200_000, 6.00, 22.50, 0.60)),
    ),
    **_models("anthropic", "claude-haiku-4-5", _p(1.00, 5.00, 0.10, 1.25)),
    **_models(
        "anthropic", "claude-3-7-sonnet claude-3-7-sonnet-latest", _p(3.00, 15.00, 0.30, 3.75)
    ),
    **_models("anthropic", "claude-3-5-haiku claude-3-5-haiku-latest", _p(0.80, 4.00, 0.08, 1.00)),
    **_models("anthropic", "claude-3-haiku", _p(0.25, 1.25, 0.03, 0.30)),
}


@dataclass(frozen=True, slots=True)
class Rates:
    """One tier's prices in nano-dollars per token."""

    input: float
    output: float
    cached_input: float
    cache_write: float

    @classmethod
    def of(cls, tier: PriceTier) -> Rates:
        k = NANO_PER_TOKEN_PER_USD_PER_M
        cached = tier.input if tier.cached_input is None else tier.cached_input
        write = tier.input if tier.cache_write is None else tier.cache_write
        return cls(tier.input * k, tier.output * k, cached * k, write * k)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices, ready for arithmetic; ``pattern`` names the entry that matched."""

    pattern: str
    base: Rates
    long: Rates | None = None
    long_above: int = 0

    @classmethod
    def of(cls, pattern: str, price: ModelPrice) -> Price:
        long = price.long_context
        if long is None:
            return cls(pattern, Rates.of(price))
        return cls(pattern, Rates.of(price), Rates.of(long), long.above_input_tokens)

    def rates(self, input_tokens: int) -> Rates:
        if self.long is not None and input_tokens > self.long_above:
            return self.long
        return self.base

    def cost_nano(self, usage: Usage) -> int:
        """What a call with this ``usage`` cost, rounded up to the nano-dollar."""
        rates = self.rates(usage.input_tokens)
        cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
        written = min(max(usage.cache_write_tokens, 0), usage.input_tokens - cached)
        fresh = usage.input_tokens - cached - written
        total = (
            fresh * rates.input
            + cached * rates.cached_input
            + written * rates.cache_write
            + usage.output_tokens * rates.output
        )
        return math.ceil(total - 1e-6) if total > 0 else 0

    def worst_nano(self, input_tokens: int, output_tokens: int) -> int:
        """The most a call of at most these tokens can cost: every input token at the
        dearest input rate (a cache write costs more than a plain read), in the tier its
        input may reach."""
        worst = 0.0
        for rates in (self.base, self.rates(input_tokens)):
            per_input = max(rates.input, rates.cached_input, rates.cache_write)
            worst = max(worst, input_tokens * per_input + output_tokens * rates.output)
        return math.ceil(worst)


class PriceTable:
    """``COURIER_PRICES`` over the shipped defaults; lookups are remembered per model."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        defaults: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        self.prices = dict(prices)
        self.defaults = dict(defaults)
        self._found: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The price of ``provider:model``, or None when it has none."""
        if model in self._found:
            return self._found[model]
        found: Price | None = None
        for table in (self.prices, self.defaults):
            pattern = match_pattern(table, model)
            if pattern is not None:
                found = Price.of(pattern, table[pattern])
                break
        if len(self._found) < 10_000:  # model names come from users: bound the memo
            self._found[model] = found
        return found

    def unpriced(self, models: list[str]) -> list[str]:
        """Those of ``models`` that have no price."""
        return [model for model in models if self.price(model) is None]


def usd(nano: int | float) -> float:
    """Nano-dollars → dollars, rounded to the nano-dollar."""
    return round(nano / NANO_PER_USD, 9)


def nano(dollars: float) -> int:
    return round(dollars * NANO_PER_USD)
