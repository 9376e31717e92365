"""Scripted faults (queued by tests through ``/_sim/faults``) and random error injection.

A fault either answers an error status in the provider's shape (``status``,
optional ``retry_after`` seconds and ``message``), delays the request by
``delay`` seconds and then lets it be answered normally, or breaks a streamed
answer after ``after_chunks`` events (``stream_fault``): ``drop`` (the
connection is cut), ``truncate`` (the body ends early, cleanly), ``malformed``
(an event that is not JSON, then the end) or ``stall`` (nothing more is sent;
the client's read timeout must notice). A stream fault is taken only by a
streamed request.

Scripted faults are consumed FIFO: a request takes the oldest queued fault
whose ``match`` is empty or occurs in its model name or message text. Only when
no scripted fault applies do the (seeded) dice roll: ``--fault-mix`` (a share per
status, e.g. 15 % 429, 10 % 500, 5 % 503) when given, else ``--error-rate``.

An :class:`Outage` ("down for N seconds, then recover") answers every matching
request with one status, at once, until it ends; it comes before everything else.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SLOW_SECONDS = 30.0
STREAM_FAULTS = ("drop", "truncate", "malformed", "stall")


@dataclass(slots=True, frozen=True)
class Fault:
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    match: str | None = None
    stream_fault: str | None = None
    after_chunks: int = 0

    @classmethod
    def parse(cls, raw: Any, match: str | None) -> Fault:
        """Validate one fault object from the admin API; raises ValueError."""
        if not isinstance(raw, Mapping):
            raise ValueError("each fault must be an object")
        unknown = set(raw) - {
            "status",
            "retry_after",
            "delay",
            "message",
            "stream_fault",
            "after_chunks",
        }
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
        stream_fault = raw.get("stream_fault")
        after_chunks = raw.get("after_chunks", 0)
        if stream_fault is not None and stream_fault not in STREAM_FAULTS:
            raise ValueError(f"stream_fault must be one of {', '.join(STREAM_FAULTS)}")
        if not isinstance(after_chunks, int) or isinstance(after_chunks, bool) or after_chunks < 0:
            raise ValueError("after_chunks must be an integer >= 0")
        if stream_fault is not None and status is not None:
            raise ValueError("a fault has a status or a stream_fault, not both")
        if status is None and not delay and stream_fault is None:
            raise ValueError("a fault needs a status, a delay or a stream_fault")
        return cls(
            status=status,
            retry_after=None if retry_after is None else float(retry_after),
            delay=float(delay),
            message=message,
            match=match or None,
            stream_fault=stream_fault,
            after_chunks=after_chunks,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "message": self.message,
            "match": self.match,
            "stream_fault": self.stream_fault,
            "after_chunks": self.after_chunks,
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

    def take(self, model: str, text: str, stream: bool = False) -> Fault | None:
        """Remove and return the oldest fault that applies to this request, if any."""
        if not self._queue:
            return None
        for i, fault in enumerate(self._queue):
            if fault.stream_fault is not None and not stream:
                continue
            if fault.match is None or fault.match in model or fault.match in text:
                del self._queue[i]
                return fault
        return None


@dataclass(slots=True, frozen=True)
class Outage:
    """The provider is down until ``until`` (monotonic seconds): every request whose model
    contains ``match`` (all, when None) is answered ``status`` at once."""

    until: float
    status: int = 503
    match: str | None = None

    def applies(self, model: str, now: float) -> bool:
        return now < self.until and (self.match is None or self.match in model)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "down": now < self.until,
            "remaining_s": round(max(0.0, self.until - now), 3),
            "status": self.status,
            "match": self.match,
        }

    @classmethod
    def parse(cls, raw: Any, now: float) -> Outage:
        """``{"seconds": N, "status": 503?, "match": "substring"?}``; raises ValueError."""
        if not isinstance(raw, Mapping):
            raise ValueError('body must be {"seconds": N, "status": 503, "match": "..."}')
        unknown = set(raw) - {"seconds", "status", "match"}
        if unknown:
            raise ValueError(f"unknown outage fields: {sorted(unknown)}")
        seconds: Any = raw.get("seconds")
        status, match = raw.get("status", 503), raw.get("match")
        if not _is_number(seconds) or seconds <= 0:
            raise ValueError("outage seconds must be a number > 0")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ValueError("outage status must be an integer 400..599")
        if match is not None and not isinstance(match, str):
            raise ValueError("match must be a string")
        return cls(until=now + float(seconds), status=status, match=match or None)


def parse_fault_mix(raw: Any) -> dict[int, float]:
    """``{"429": 0.15, "500": 0.1}`` or ``"429=0.15,500=0.1"`` → {status: share}; the shares
    add up to at most 1. Raises ValueError."""
    if isinstance(raw, str):
        pairs = [p.partition("=") for p in raw.split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("fault mix takes status=share pairs, e.g. 429=0.15,500=0.1")
        raw = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(raw, Mapping):
        raise ValueError("fault_mix must be an object of status -> share")
    mix: dict[int, float] = {}
    for key, value in raw.items():
        try:
            status, share = int(key), float(value)
        except (TypeError, ValueError):
            raise ValueError(f"fault mix entry {key!r}: {value!r} is not status -> share") from None
        if isinstance(value, bool) or not 400 <= status <= 599 or not 0 <= share <= 1:
            raise ValueError("fault mix statuses are 400..599, shares 0..1")
        mix[status] = share
    if sum(mix.values()) > 1 + 1e-9:
        raise ValueError("fault mix shares add up to more than 1")
    return mix


def mixed_fault(rng: random.Random, mix: Mapping[int, float]) -> Fault | None:
    """One roll of the dice over ``mix``: a status with its share of probability (a 429
    with Retry-After 1), or None."""
    roll = rng.random()
    for status, share in mix.items():
        if roll < share:
            retry_after = 1.0 if status == 429 else None
            return Fault(status=status, retry_after=retry_after, message="Simulated (fault mix)")
        roll -= share
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
