"""Prices, a call's cost and its worst case, and the settings that refuse bad prices and
budgets (pure functions: nothing else to talk to)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from config.costs import ModelPrice
from config.settings import Settings
from core.cost.bound import IMAGE_TOKENS, TOOLS_TOKENS, bound, capped
from core.cost.prices import DEFAULT_PRICES, PriceTable
from core.ratelimit.estimate import DEFAULT_MAX_TOKENS
from core.results import Usage
from workers.providers.anthropic_adapter import message_usage
from workers.providers.openai_adapter import chat_usage


def test_shipped_prices_name_models_and_their_snapshots_only() -> None:
    table = PriceTable({})

    def pattern(model: str) -> str | None:
        price = table.price(model)
        return price.pattern if price is not None else None

    assert pattern("openai:gpt-4o-mini") == "openai:gpt-4o-mini"
    assert pattern("openai:gpt-4o-mini-2024-07-18") == "openai:gpt-4o-mini-20*"
    assert pattern("openai:gpt-4o-2024-05-13") == "openai:gpt-4o-2024-05-13"  # dearer
    # A Fable 5 snapshot is not Fable 5.2 (cheaper), however its date begins.
    assert pattern("anthropic:claude-fable-5-20260601") == "anthropic:claude-fable-5-20*"
    assert pattern("anthropic:claude-opus-4-5") == "anthropic:claude-opus-4-5"
    assert pattern("anthropic:claude-opus-4-20250514") == "anthropic:claude-opus-4-20*"
    # an unknown variant gets no price rather than its family's (it may cost far more)
    assert pattern("openai:gpt-5.5-pro") is None
    assert pattern("openai:my-finetune") is None
    assert table.unpriced(["openai:gpt-4o-mini", "local:llama"]) == ["local:llama"]


def test_courier_prices_come_before_every_shipped_one() -> None:
    table = PriceTable({"openai:*": ModelPrice(input=1, output=2)})
    price = table.price("openai:gpt-4o-mini")  # a shipped entry is more specific, yet loses
    assert price is not None and price.pattern == "openai:*"
    assert table.price("anthropic:claude-haiku-4-5") is not None  # the defaults still apply


def test_cost_from_usage_in_nano_dollars() -> None:
    price = PriceTable({}).price("openai:gpt-4o-mini")
    assert price is not None
    # 1,000 in at $0.15/M + 500 out at $0.60/M = $0.00015 + $0.0003
    assert price.cost_nano(Usage(1000, 500)) == 450_000
    # 400 of the 1,000 input tokens from OpenAI's prompt cache at $0.075/M
    assert price.cost_nano(Usage(1000, 500, cached_input_tokens=400)) == 420_000
    assert price.cost_nano(Usage(0, 0)) == 0


def test_anthropic_cache_reads_and_writes_are_priced_apart() -> None:
    price = PriceTable({}).price("anthropic:claude-haiku-4-5")
    assert price is not None
    usage = message_usage(
        {
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        }
    )
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == (
        1300,
        1000,
        200,
    )
    # 100 at $1 + 1000 at $0.10 + 200 at $1.25 + 10 at $5 (per 1M): 500 millionths of a dollar
    assert price.cost_nano(usage) == 100_000 + 100_000 + 250_000 + 50_000


def test_openai_usage_reads_cached_tokens() -> None:
    usage = chat_usage(
        {
            "usage": {
                "prompt_tokens": 2000,
                "completion_tokens": 30,
                "prompt_tokens_details": {"cached_tokens": 1024},
            }
        }
    )
    assert usage == Usage(2000, 30, cached_input_tokens=1024)
    assert usage.to_record() == {
        "input_tokens": 2000,
        "output_tokens": 30,
        "cached_input_tokens": 1024,
    }


def test_long_context_tier_prices_the_whole_call() -> None:
    price = PriceTable({}).price("openai:gpt-5.4")
    assert price is not None
    short = price.cost_nano(Usage(272_000, 0))
    long = price.cost_nano(Usage(272_001, 0))
    assert long > 1.9 * short
    # the worst case of a prompt that may cross the threshold uses the dearer tier
    assert price.worst_nano(300_000, 0) >= price.cost_nano(Usage(300_000, 0))


def test_worst_case_bounds_every_true_cost() -> None:
    price = PriceTable({}).price("anthropic:claude-haiku-4-5")
    assert price is not None
    request = {"messages": [{"role": "user", "content": "日本語のテキスト" * 50}], "max_tokens": 64}
    limits = bound(request)
    worst = price.worst_nano(limits.input_tokens, limits.output_tokens)
    # whatever the tokenizer makes of it, at most one token per byte and max_tokens out,
    # and the dearest input rate (a cache write) for each
    for usage in (
        Usage(len("日本語のテキスト" * 50), 64),
        Usage(limits.input_tokens, 64, cache_write_tokens=limits.input_tokens),
    ):
        assert price.cost_nano(usage) <= worst


def test_bound_counts_bytes_images_tools_and_output() -> None:
    text = {"messages": [{"role": "user", "content": "é" * 100}]}
    limits = bound(text)
    assert limits.input_tokens >= 200  # é is two UTF-8 bytes
    assert limits.output_tokens == DEFAULT_MAX_TOKENS
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    with_image = bound({"messages": [{"role": "user", "content": [image]}], "max_tokens": 5})
    assert IMAGE_TOKENS <= with_image.input_tokens < IMAGE_TOKENS + 200
    assert with_image.output_tokens == 5
    tools = bound({**text, "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert tools.input_tokens >= limits.input_tokens + TOOLS_TOKENS
    assert bound({"input": ["abc", "de"]}).input_tokens >= 5


def test_capped_sets_the_output_limit_only_when_none_is_set() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    assert capped(request)["max_completion_tokens"] == DEFAULT_MAX_TOKENS
    assert capped({**request, "max_tokens": 7}) == {**request, "max_tokens": 7}
    assert capped({"input": ["x"]}) == {"input": ["x"]}


def test_every_shipped_price_is_valid() -> None:
    assert len(DEFAULT_PRICES) > 30
    for pattern, price in DEFAULT_PRICES.items():
        assert ":" in pattern and price.input > 0, pattern


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COURIER_PRICES", '{"openai:x": {"input": -1, "output": 1}}', "greater than or equal"),
        ("COURIER_PRICES", '{"openai:x": {"input": 1e9, "output": 1}}', "less than or equal"),
        ("COURIER_PRICES", '{"openai:x": {"input": 1}}', "output"),
        ("COURIER_PRICES", '{"open ai": {"input": 1, "output": 1}}', "without spaces"),
        ("COURIER_PRICES", "[not, a, table", "neither a JSON object nor a TOML table"),
        ("COURIER_BUDGETS", '{"t1": {"usd": -5, "period": "day"}}', "greater than or equal"),
        ("COURIER_BUDGETS", '{"t1": {"usd": 1e12, "period": "day"}}', "less than or equal"),
        ("COURIER_BUDGETS", '{"t1": {"usd": 5, "period": "week"}}', "'day', 'month' or 'total'"),
        ("COURIER_BUDGETS", '{"t 1": {"usd": 5, "period": "day"}}', "tenant name refused"),
    ],
)
def test_bad_prices_and_budgets_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_prices_and_budgets_as_json_or_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURIER_PRICES", '"local:*" = {input = 0, output = 0}')
    monkeypatch.setenv("COURIER_BUDGETS", json.dumps({"t1": {"usd": 5, "period": "month"}}))
    settings = Settings()
    assert settings.prices["local:*"].output == 0
    assert settings.budgets["t1"].period == "month"
