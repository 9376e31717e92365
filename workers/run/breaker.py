"""A circuit breaker per provider:model, shared by every worker through Redis.

Closed: calls go through and consecutive failures are counted. After ``threshold``
consecutive retryable failures it opens for ``cooldown_s``: jobs go straight to their
fallback, or wait, instead of hammering a dead provider. After the cool-down one call
is let through (half-open); a success closes it, a failure opens it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from core import keys, scripts


@dataclass
class CircuitBreaker:
    client: redis.Redis
    threshold: int = 5
    cooldown_s: float = 30.0

    # A model seen with no failures at all is taken as closed for this long without asking
    # Redis again: the hot path of a healthy provider costs no breaker round trips.
    clean_cache_s: float = 1.0

    def __post_init__(self) -> None:
        self._record_failure = self.client.register_script(scripts.RECORD_FAILURE)
        self._clean_until: dict[str, float] = {}

    def open_for(self, model: str) -> float:
        """Seconds the circuit for ``model`` stays open; 0 when calls may go through."""
        now = time.monotonic()
        if self._clean_until.get(model, 0.0) > now:
            return 0.0
        failures, open_until = self.client.hmget(keys.breaker(model), ["failures", "open_until"])  # type: ignore[misc]
        if failures is None:
            self._clean_until[model] = now + self.clean_cache_s
            return 0.0
        if not open_until:
            return 0.0
        return max(0.0, float(open_until) - time.time())

    def record_failure(self, model: str) -> bool:
        """Count a retryable failure; True when this opened (or re-opened) the circuit."""
        self._clean_until.pop(model, None)
        until = time.time() + self.cooldown_s
        return bool(self._record_failure(keys=[keys.breaker(model)], args=[self.threshold, until]))

    def record_success(self, model: str) -> None:
        if self._clean_until.get(model, 0.0) > time.monotonic():
            return  # nothing to reset
        self.client.delete(keys.breaker(model))
