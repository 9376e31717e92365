"""The vocabulary shared by the limiter, the algorithms and the storage backends.

An :class:`Algorithm` is pure arithmetic on a small state with the clock passed in; it exists
twice, as Python (used by the in-memory backend and by :func:`limiter_state`) and as a Lua
snippet (spliced into the Redis backend's scripts), and the unit tests hold the two to the
same scenarios. A backend owns storage and atomicity: it applies one :class:`Ask` or one
:class:`Settlement` to every resource of a :class:`Rule` all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

RESOURCES = ("requests", "tokens")


class Algorithm(Protocol):
    """A budget of ``cap`` units per ``period`` seconds. States are mutable, made by ``new``."""

    name: str
    period: float
    lua: str  # defines alg_load/alg_save/alg_available/alg_add/alg_correct/alg_hold/alg_wait

    def new(self, cap: float, now: float) -> Any: ...

    def available(self, state: Any, now: float, cap: float) -> float:
        """Units that could be taken at ``now`` (negative while in debt or held)."""
        ...

    def add(self, state: Any, now: float, cap: float, delta: float) -> None:
        """Take (``delta`` < 0) or give back (``delta`` > 0) units at ``now``."""
        ...

    def correct(self, state: Any, now: float, cap: float, remaining: float) -> None:
        """Lower the available units to ``remaining`` if above it (never raises them)."""
        ...

    def hold(self, state: Any, now: float, cap: float, until: float, level: float) -> None:
        """Nothing before ``until``; from then on at most ``level`` units, refilling."""
        ...

    def wait(self, state: Any, now: float, cap: float, need: float) -> float:
        """Seconds from ``now`` until ``need`` units are available (0 if they are)."""
        ...

    def dump(self, state: Any) -> dict[str, float]: ...

    def load(self, raw: dict[str, str]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit key: the COURIER_LIMITS pattern matched, with the provider API key in use."""

    name: str  # "<pattern>|<sha256(api key)[:12]>"
    rpm: int = 0  # 0: not limited
    tpm: int = 0
    max_in_flight: int = 0

    def caps(self) -> tuple[int, int]:
        return self.rpm, self.tpm


@dataclass(frozen=True, slots=True)
class Ask:
    """One reservation attempt: 1 request, ``tokens`` tokens and one in-flight slot."""

    tokens: int
    priority: int  # index in PRIORITIES: 0 is the highest
    waiter: str  # stable across attempts of one job: its place in the line
    reservation: str  # unique per attempt: its in-flight slot
    input_tokens: int | None = None  # of ``tokens``, the prompt part (None: all of it)
    tenant: str = ""  # whose job: the fair order between tenants in the line ("" = none)
    weight: float = 1.0  # the tenant's weight (COURIER_TENANT_WEIGHTS)


@dataclass(frozen=True, slots=True)
class Verdict:
    granted: bool
    wait_s: float = 0.0
    # cooldown|priority|fair|queue|in_flight|room|requests|tokens when refused
    reason: str = "granted"


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to undo or correct after a call (see the limiter's settle rules)."""

    reservation: str
    give_requests: int = 0  # requests to give back (the provider did not count the call)
    give_tokens: float = 0.0  # > 0 refund, < 0 charge more
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None
    cooldown_s: float | None = None
    latency_s: float | None = None
    output_tokens: int | None = None  # the answer's true output, for the line's token cost
    call_tokens: float | None = None  # what this call used: "no room for another" below it


@dataclass(frozen=True, slots=True)
class Policy:
    """Tunables, the same for every limit key (documented in :mod:`core.ratelimit`)."""

    high_share: float = 0.10  # of each bucket kept for `high` while work is waiting
    rate_margin: float = 0.99  # refill at 99 % of the limit (build_limiter's algorithm period)
    grace_s: float = 5.0  # a due waiter holds others up this long for its job to come back
    forget_s: float = 600.0  # a late waiter keeps its place in line this long
    in_flight_ttl_s: float = 180.0  # a slot whose worker died is freed after this
    min_wait_s: float = 0.05
    learn_ttl_s: float = 600.0  # a lower limit learned from headers, refreshed by each answer
    keep_s: float = 3600.0  # idle limiter keys expire after this
    max_cooldown_s: float = 300.0
    default_latency_s: float = 1.0  # before any call was timed (in-flight waits)


class Backend(Protocol):
    algorithm: Algorithm
    policy: Policy

    def reserve(self, rule: Rule, ask: Ask) -> Verdict: ...

    def settle(self, rule: Rule, settlement: Settlement) -> None: ...

    def snapshot(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The state of every limit key (or of ``names``), as :func:`limiter_state` reports."""
        ...
