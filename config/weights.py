"""``COURIER_TENANT_WEIGHTS``: tenant → weight of its fair share (README, *Fair share*).

A JSON object (or a TOML table): ``{"acme": 3, "beta": 1}``. A tenant not named weighs 1.
A weight is a finite number > 0 and at most 1,000,000; a tenant name follows the rules of
:mod:`config.names`. Anything else stops the process at start, naming what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from config.names import tenant_problem

DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 1_000_000.0


def parse_weights(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"COURIER_TENANT_WEIGHTS is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError('COURIER_TENANT_WEIGHTS takes a JSON object: {"tenant": weight, ...}')
    weights: dict[str, float] = {}
    for tenant, weight in value.items():
        problem = tenant_problem(str(tenant))
        if problem:
            raise ValueError(f"COURIER_TENANT_WEIGHTS: {problem}")
        is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not is_number or not math.isfinite(weight) or not 0 < weight <= MAX_WEIGHT:
            raise ValueError(
                f"COURIER_TENANT_WEIGHTS[{tenant!r}]: a weight is a number > 0 and <= "
                f"{MAX_WEIGHT:,.0f}, got {weight!r}"
            )
        weights[str(tenant)] = float(weight)
    return weights
