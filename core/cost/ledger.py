"""The ledger in Redis: tenants' budgets, what they spent per period, and the reservations of
calls in flight (the Lua is :mod:`core.cost.scripts`).

**Budgets** live in one hash (``courier:budgets``, tenant → JSON), the one source every API
process, worker and ``courier budgets`` reads. ``COURIER_BUDGETS`` seeds it when an API or a
worker starts: an entry it set before (``source: env``) is replaced by the current value, one
set at run time (``courier budgets set``, ``source: cli``) is kept. A change applies to the
next reservation at once; whether a tenant has a budget at all, a process learns within
:data:`DIRECTORY_TTL_S` (:class:`BudgetDirectory`).

**A call** of a tenant with a budget is reserved at its worst case before it is made
(:meth:`Ledger.reserve`, one Lua script: granted only if what the period has spent, plus what
calls in flight hold, plus this worst case stays within the budget), and settled after it to
its true cost (:meth:`Ledger.settle`). Since no call can cost more than its reservation, no
number of concurrent calls, workers or retries spends past the budget. A call that could not
fit even with nothing in flight is refused for good (``exceeded``); one that could once the
calls in flight settle is told to ``wait``. Every call of every tenant is settled, budget or
not: its cost goes to the job (``cost_usd``), the tenant's usage and ``/metrics``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from config.costs import TenantBudget
from core import keys
from core.cost import scripts
from core.jobs import iso
from core.metrics import COST
from core.pipelined import ScriptCall

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "month", "total")
DAY_TTL_S = 40 * 24 * 3600  # a day's spend is kept 40 days, a month's 400
MONTH_TTL_S = 400 * 24 * 3600
DIRECTORY_TTL_S = 1.0
Verdict = Literal["none", "granted", "wait", "exceeded"]


@dataclass(frozen=True, slots=True)
class Budget:
    usd: float
    period: Period
    source: str = "env"
    set_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "usd": self.usd,
            "period": self.period,
            "source": self.source,
            "set_at": self.set_at,
        }


@dataclass(slots=True)
class Hold:
    """A reservation's answer; ``id`` is what :meth:`Ledger.settle` gives back from, and
    ``granted_nano`` what it holds (the worst case, or more for a lease of several calls)."""

    verdict: Verdict
    id: str = ""
    worst_nano: int = 0
    spent_nano: int = 0
    held_nano: int = 0
    limit_nano: int = 0
    granted_nano: int = 0


@dataclass(frozen=True, slots=True)
class Charge:
    """One call to settle: its true cost (None: the model has no price) and tokens."""

    tenant: str
    job_id: str
    model: str
    cost_nano: int | None
    input_tokens: int = 0
    output_tokens: int = 0
    hold_id: str = ""
    made: bool = True  # False: the call was never made, only give the reservation back
    hold_nano: int | None = None  # how much of the reservation to give back (None: all)


_ids: tuple[int, dict[Period, str]] = (-1, {})


def period_ids(now: float) -> dict[Period, str]:
    """This UTC day's, month's and all time's period ids (worked out once a second)."""
    global _ids
    second = int(now)
    if _ids[0] != second:
        day = datetime.fromtimestamp(second, tz=UTC)
        ids: dict[Period, str] = {"day": f"day:{day:%Y-%m-%d}", "month": f"month:{day:%Y-%m}",
                                  "total": "total"}  # fmt: skip
        _ids = (second, ids)
    return _ids[1]


def period_bounds(period: Period, now: float) -> tuple[float | None, float | None]:
    """When ``period`` began and when it ends (epoch s); None for all time."""
    if period == "total":
        return None, None
    day = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.timestamp(), day.timestamp() + 86400
    start = day.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.timestamp(), end.timestamp()


def field_model(model: str) -> str:
    """A model name as a hash field prefix (``|`` separates the field's parts)."""
    return model.replace("|", "/")


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _budget(text: str) -> Budget | None:
    try:
        data = json.loads(text)
        period = data["period"]
        if period not in PERIODS:
            return None
        return Budget(float(data["usd"]), period, data.get("source", "env"), data.get("set_at"))
    except (ValueError, KeyError, TypeError):
        return None


class Ledger:
    """Budgets, spend and reservations. Takes a redis-py client with ``decode_responses``."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._reserve = client.register_script(scripts.RESERVE)
        self._settle = client.register_script(scripts.SETTLE)

    # ---- budgets ------------------------------------------------------------------------

    def budgets(self) -> dict[str, Budget]:
        raw: dict[str | bytes, str | bytes] = self.redis.hgetall(keys.BUDGETS)  # type: ignore[assignment]
        out = {_text(tenant): _budget(_text(text)) for tenant, text in raw.items()}
        return {tenant: budget for tenant, budget in out.items() if budget is not None}

    def budget(self, tenant: str) -> Budget | None:
        text = self.redis.hget(keys.BUDGETS, tenant)
        return _budget(_text(text)) if text else None

    def set_budget(self, tenant: str, budget: TenantBudget, source: str = "cli") -> Budget:
        entry = Budget(budget.usd, budget.period, source, iso(time.time()))
        self.redis.hset(keys.BUDGETS, tenant, json.dumps(entry.to_json()))
        return entry

    def remove_budget(self, tenant: str) -> bool:
        return bool(self.redis.hdel(keys.BUDGETS, tenant))

    def seed(self, budgets: Mapping[str, TenantBudget]) -> None:
        """Write ``COURIER_BUDGETS``, keeping what was set at run time."""
        current = self.budgets()
        for tenant, budget in budgets.items():
            have = current.get(tenant)
            if have is None or (
                have.source == "env" and (have.usd, have.period) != (budget.usd, budget.period)
            ):
                self.set_budget(tenant, budget, source="env")

    # ---- calls --------------------------------------------------------------------------

    def _keys(self, tenant: str, now: float) -> list[str]:
        ids = period_ids(now)
        return [keys.spend(tenant, ids[p]) for p in PERIODS]

    def reserve(
        self,
        tenant: str,
        model: str,
        worst_nano: int,
        hold_s: float,
        now: float | None = None,
        wanted_nano: int = 0,
        share: float = 1.0,
        give_back: tuple[str, int] | None = None,
    ) -> Hold:
        """Reserve a call's worst case; ``hold_s``: when an unsettled reservation lapses (and
        is charged in full). A worker's lease asks for ``wanted_nano`` (several calls' worth)
        and gets at most ``share`` of what is left, at least the worst case; ``give_back``
        returns the unused part of its previous lease in the same step."""
        now = time.time() if now is None else now
        hold_id = uuid.uuid4().hex
        answer = self._reserve(
            keys=[
                keys.BUDGETS,
                keys.budget_held(tenant),
                keys.budget_held_until(tenant),
                *self._keys(tenant, now),
                keys.metrics(COST),
            ],
            args=[
                tenant,
                hold_id,
                worst_nano,
                int(now * 1000),
                int((now + hold_s) * 1000),
                field_model(model),
                DAY_TTL_S,
                MONTH_TTL_S,
                max(wanted_nano, worst_nano),
                share,
                give_back[0] if give_back else "",
                give_back[1] if give_back else "",
            ],
        )
        verdict: Verdict = answer[0]
        if verdict == "none":
            return Hold("none")
        spent, held, limit, granted = (_int(v) for v in answer[1:5])
        hold_id = hold_id if verdict == "granted" else ""
        return Hold(verdict, hold_id, worst_nano, spent, held, limit, granted)

    def settle(self, charge: Charge, now: float | None = None) -> Any:
        """Record one call (and give its reservation back)."""
        return self.settle_call(charge, now).run()

    def settle_call(self, charge: Charge, now: float | None = None) -> ScriptCall:
        """:meth:`settle` as a script call, to send with the job's ending in one round trip
        (:func:`core.pipelined.run_together`)."""
        now = time.time() if now is None else now
        return ScriptCall(
            self._settle,
            [
                keys.budget_held(charge.tenant),
                keys.budget_held_until(charge.tenant),
                *self._keys(charge.tenant, now),
                keys.metrics(COST),
                keys.job(charge.job_id) if charge.job_id else keys.job("-"),
            ],
            [
                charge.hold_id,
                "" if charge.cost_nano is None else max(0, charge.cost_nano),
                field_model(charge.model),
                max(0, charge.input_tokens),
                max(0, charge.output_tokens),
                int(now * 1000),
                DAY_TTL_S,
                MONTH_TTL_S,
                charge.tenant,
                "1" if charge.made else "0",
                "" if charge.hold_nano is None else charge.hold_nano,
            ],
        )

    # ---- reading ------------------------------------------------------------------------

    def spent_nano(self, tenant: str, period: Period, now: float | None = None) -> tuple[int, int]:
        """(spent in ``period``, held by calls in flight), one round trip."""
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.spend(tenant, period_ids(now)[period]), "usd")
        pipe.hget(keys.budget_held(tenant), "total")
        spent, held = pipe.execute()
        return _int(spent), _int(held)

    def spend(self, tenant: str, period: Period, now: float | None = None) -> dict[str, str]:
        """The period's spend hash (see :func:`core.keys.spend`)."""
        now = time.time() if now is None else now
        raw: dict[str, str] = self.redis.hgetall(  # type: ignore[assignment]
            keys.spend(tenant, period_ids(now)[period])
        )
        return raw


class BudgetDirectory:
    """Which tenants have a budget, as this process last read it (at most
    :data:`DIRECTORY_TTL_S` ago): jobs of tenants without one skip the reservation's round
    trip. The reservation itself reads the budget's current amount."""

    def __init__(self, ledger: Ledger, ttl_s: float = DIRECTORY_TTL_S) -> None:
        self.ledger = ledger
        self.ttl_s = ttl_s
        self._budgets: dict[str, Budget] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def stale(self) -> bool:
        """Whether the next :meth:`get` reads Redis (async callers make it in a thread)."""
        return time.monotonic() - self._read_at > self.ttl_s

    def get(self, tenant: str) -> Budget | None:
        if self.stale():
            with self._lock:
                if self.stale():
                    self._budgets = self.ledger.budgets()
                    self._read_at = time.monotonic()
        return self._budgets.get(tenant)

    def forget(self) -> None:
        """Read again on the next lookup."""
        self._read_at = float("-inf")


def _text(value: object) -> str:
    """A Redis answer as text, whether or not the client decodes (the API's metrics
    collector in multiprocess mode reads with a client that does not)."""
    return value.decode() if isinstance(value, bytes) else str(value)
