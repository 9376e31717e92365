"""Scripted faults (queued by tests through ``/_sim/faults``) and random error injection.

A fault either answers an error status in the provider's shape (``status``,
optional ``retry_after`` seconds and ``message``) or delays the request by
``delay`` seconds and then lets it be answered normally.

Scripted faults are consumed FIFO: a request takes the oldest queued fault
whose ``match`` is empty or occurs in its model name or message text. Only when
no scripted fault applies does ``--error-rate`` roll its (seeded) dice.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SLOW_SECONDS = 30.0


@dataclass(slots=True, frozen=True)
class Fault:
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    match: str | None = None

    @classmethod
    def parse(cls, raw: Any, match: str | None) -> Fault:
        """Validate one fault object from the admin API; raises ValueError."""
        if not isinstance(raw, Mapping):
            raise ValueError("each fault must be an object")
        unknown = set(raw) - {"status", "retry_after", "delay", "message"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        status = raw.get("status")
        delay = raw.get("delay", 0.0)
        retry_after = raw.get("retry_after")
        message = raw.get("message")
        if status is not None and (
            not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599
        ):
            raise ValueError("fault status must be an integer 400..599")
        if not _is_number(delay) or delay < 0:
            raise ValueError("fault delay must be a number >= 0")
        if retry_after is not None and (not _is_number(retry_after) or retry_after < 0):
            raise ValueError("fault retry_after must be a number >= 0")
        if message is not None and not isinstance(message, str):
            raise ValueError("fault message must be a string")
        if status is None and not delay:
            raise ValueError("a fault needs a status or a delay")
        return cls(
            status=status,
            retry_after=None if retry_after is None else float(retry_after),
            delay=float(delay),
            message=message,
            match=match or None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "message": self.message,
            "match": self.match,
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FaultQueue:
    """Scripted faults, consumed FIFO by the first request each one matches."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, faults: list[Fault]) -> None:
        self._queue.extend(faults)

    def clear(self) -> None:
        self._queue.clear()

    def pending(self) -> list[Fault]:
        return list(self._queue)

    def take(self, model: str, text: str) -> Fault | None:
        """Remove and return the oldest fault that applies to this request, if any."""
        if not self._queue:
            return None
        for i, fault in enumerate(self._queue):
            if fault.match is None or fault.match in model or fault.match in text:
                del self._queue[i]
                return fault
        return None


def random_fault(rng: random.Random, error_rate: float, provider: str) -> Fault | None:
    """With probability ``error_rate``: 429 (Retry-After 1), 500, 503 (OpenAI) or
    529 (Anthropic), or a 30 s delay; each equally likely."""
    if error_rate <= 0 or rng.random() >= error_rate:
        return None
    kind = rng.randrange(4)
    if kind == 0:
        return Fault(status=429, retry_after=1.0, message="Simulated rate limit (error injection)")
    if kind == 1:
        return Fault(status=500, message="Simulated server error (error injection)")
    if kind == 2:
        status = 529 if provider == "anthropic" else 503
        return Fault(status=status, message="Simulated overload (error injection)")
    return Fault(delay=SLOW_SECONDS)
