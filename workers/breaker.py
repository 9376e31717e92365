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

from workers import keys

RECORD_FAILURE = """
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], 3600)
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', ARGV[2])
  return 1
end
return 0
"""


@dataclass
class CircuitBreaker:
    client: redis.Redis
    threshold: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        self._record_failure = self.client.register_script(RECORD_FAILURE)

    def open_for(self, model: str) -> float:
        """Seconds the circuit for ``model`` stays open; 0 when calls may go through."""
        raw = self.client.hget(keys.breaker(model), "open_until")
        if not raw:
            return 0.0
        return max(0.0, float(raw) - time.time())  # type: ignore[arg-type]

    def record_failure(self, model: str) -> bool:
        """Count a retryable failure; True when this opened (or re-opened) the circuit."""
        until = time.time() + self.cooldown_s
        return bool(self._record_failure(keys=[keys.breaker(model)], args=[self.threshold, until]))

    def record_success(self, model: str) -> None:
        self.client.delete(keys.breaker(model))
