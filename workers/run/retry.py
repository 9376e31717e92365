"""Retry policy as data: exponential backoff with full jitter, never sooner than Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 60.0
    # A wait up to this long is slept in place (a cheap greenlet); longer waits hand the job
    # back to the durable schedule so no worker slot is held and no message sits unacked.
    inline_max_s: float = 3.0

    def delay(
        self, failures: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, failures - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after or 0.0)
