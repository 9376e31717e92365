"""The settings of cost and budgets: ``COURIER_PRICES`` and ``COURIER_BUDGETS`` entries,
refused at start when negative or absurd (docs/contract.md, Cost, budgets and cache)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.names import tenant_problem

# Beyond these a price or budget is a typo, not a plan (docs/contract.md, Configuration).
MAX_PRICE_USD_PER_M = 10_000.0
MAX_BUDGET_USD = 1_000_000.0  # the ledger counts nano-dollars in Redis' exact integer range
MAX_PATTERN_CHARS = 200


class PriceTier(BaseModel):
    """Prices in USD per 1M tokens: input, output, and the prompt cache's reads and writes
    (each the input price when not given)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=MAX_PRICE_USD_PER_M)
    output: float = Field(ge=0, le=MAX_PRICE_USD_PER_M)
    cached_input: float | None = Field(default=None, ge=0, le=MAX_PRICE_USD_PER_M)
    cache_write: float | None = Field(default=None, ge=0, le=MAX_PRICE_USD_PER_M)


class LongContextTier(PriceTier):
    """The prices of a whole call whose input exceeds ``above_input_tokens``."""

    above_input_tokens: int = Field(ge=1)


class ModelPrice(PriceTier):
    """One entry of COURIER_PRICES."""

    long_context: LongContextTier | None = None


class TenantBudget(BaseModel):
    """One entry of COURIER_BUDGETS: what a tenant may spend per period."""

    model_config = ConfigDict(extra="forbid")

    usd: float = Field(ge=0, le=MAX_BUDGET_USD)
    period: Literal["day", "month", "total"]


def parse_table(value: Any, name: str) -> Any:
    """A table setting given as text: JSON (``{...}``), else TOML."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    try:
        return json.loads(text) if text.startswith("{") else tomllib.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError both are
        raise ValueError(f"{name} is neither a JSON object nor a TOML table: {exc}") from None


def check_tenants(table: Mapping[str, Any]) -> None:
    for tenant in table:
        problem = tenant_problem(str(tenant))
        if problem:
            raise ValueError(f"COURIER_BUDGETS: {problem}")


def check_names(table: Mapping[str, Any], what: str) -> None:
    for name in table:
        if not name or len(name) > MAX_PATTERN_CHARS or any(c.isspace() for c in name):
            raise ValueError(
                f"{what} {name!r} must be 1 to {MAX_PATTERN_CHARS} characters without spaces"
            )
