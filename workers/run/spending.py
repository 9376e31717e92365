"""Cost, budgets and the answer cache on the job's path: the runner asks
:meth:`Spending.reserve` before each provider call, beside the rate limiter's reservation
(the worst case comes out of the worker's lease, :mod:`workers.run.leases`), and hands
:meth:`Spending.after`'s settle (and a successful answer for the cache) to the store with the
job's ending, in one round trip, or settles at once when the run goes on
(:mod:`core.cost.ledger` has the rules).

What a call is charged:

* an answer: its ``usage`` at its model's price (cached input at the cached price);
* an error that carries the ``usage`` of an answer Courier could not use: that usage;
* a timeout: its worst case — the provider may have finished and billed the call;
* any other error (a refusal, a 5xx, a connection that never reached the provider): nothing.

A model without a price is charged nothing and makes the job's ``cost_usd`` null; its tokens
still count in the tenant's usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.cache import AnswerCache
from core.cost.bound import Bound, bound, capped
from core.cost.ledger import BudgetDirectory, Charge, Hold, Ledger
from core.cost.prices import Price, PriceTable, usd
from core.errors import BudgetExceeded, CourierError, ProviderTimeout
from core.pipelined import ScriptCall
from core.records import Record
from core.results import ProviderResult
from workers.run.leases import BudgetLeases

# An unsettled reservation lapses (charged in full) this long after its call's timeout: time
# for a live worker to settle, even one retrying against a Redis that was briefly away.
HOLD_MARGIN_S = 120.0


@dataclass(slots=True)
class Reserved:
    """What a call may do: ``verdict`` ``none`` (no budget: go), ``granted`` (go, holding
    ``hold``), ``wait`` or ``exceeded``; ``request`` is what to send (output limit set)."""

    verdict: str
    request: dict[str, Any]
    hold: Hold | None = None
    price: Price | None = None
    bound: Bound | None = None
    reason: str = ""

    @property
    def go(self) -> bool:
        return self.verdict in ("none", "granted")


@dataclass
class Spending:
    ledger: Ledger
    prices: PriceTable
    directory: BudgetDirectory
    cache: AnswerCache | None = None
    hold_margin_s: float = HOLD_MARGIN_S
    leases: BudgetLeases | None = None

    def __post_init__(self) -> None:
        if self.leases is None:
            self.leases = BudgetLeases(self.ledger)

    def reserve(
        self, record: Record, model: str, request: dict[str, Any], timeout_s: float
    ) -> Reserved:
        tenant = record.get("tenant", "")
        budget = self.directory.get(tenant)
        if budget is None:
            return Reserved("none", request)
        price = self.prices.price(model)
        if price is None:
            return Reserved(
                "exceeded",
                request,
                reason=f"model {model!r} has no price, and tenant {tenant!r} has a budget: "
                "set one in COURIER_PRICES",
            )
        sent = capped(request)
        limits = bound(sent)
        worst = price.worst_nano(limits.input_tokens, limits.output_tokens)
        assert self.leases is not None
        hold = self.leases.take(tenant, model, worst, timeout_s + self.hold_margin_s)
        reason = ""
        if hold.verdict == "exceeded":
            reason = (
                f"the call's worst-case cost ${usd(worst):.6f} does not fit tenant {tenant!r}'s "
                f"{budget.period} budget of ${usd(hold.limit_nano):.2f} "
                f"(${usd(hold.spent_nano):.6f} spent)"
            )
        return Reserved(hold.verdict, sent, hold, price, limits, reason)

    def over_budget(
        self, record: Record, reserved: Reserved, unused_attempt: int
    ) -> tuple[float, dict[str, Any], BudgetExceeded | None]:
        """A call that does not fit: (wait, fields of the hand-back, None) while calls in
        flight may give back enough, else (0, fields of the ending, ``budget_exceeded``): never
        retried. ``unused_attempt``: the attempt the claim counted for this call, given back."""
        if reserved.verdict == "wait":
            waits = int(record.get("budget_waits") or 0)
            return self.budget_wait_s(record), {"budget_waits": waits + 1}, None
        fields = {"attempts": unused_attempt - 1} if unused_attempt else {}
        return 0.0, fields, BudgetExceeded(reserved.reason or "the tenant's budget is spent")

    def release(self, record: Record, model: str, reserved: Reserved | None) -> None:
        """Give back a reservation whose call was never made."""
        hold = reserved.hold if reserved is not None else None
        if hold is not None and hold.id:
            tenant = record.get("tenant", "")
            self.ledger.settle(
                Charge(tenant, "", model, 0, hold_id=hold.id, made=False, hold_nano=hold.worst_nano)
            )

    def after(
        self,
        record: Record,
        model: str,
        reserved: Reserved | None,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> list[ScriptCall]:
        """What to record once a call is over, to run with what follows it: its settle, and
        a successful answer for the cache."""
        calls = [self.charge(record, model, reserved, result, error)]
        if result is not None:
            calls.append(self.keep_answer(record, result))
        return [call for call in calls if call is not None]

    def charge(
        self,
        record: Record,
        model: str,
        reserved: Reserved | None,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> ScriptCall | None:
        """The settle of one call made (None when there is nothing to record); it gives back
        the call's worst case, taken from its reservation (a slice of a lease)."""
        hold = reserved.hold if reserved is not None else None
        hold_id, hold_nano = (hold.id, hold.worst_nano) if hold and hold.id else ("", None)
        price = (reserved.price if reserved is not None else None) or self.prices.price(model)
        usage = result.usage if result is not None else (error.usage if error else None)
        made, cost, tokens_in, tokens_out = True, None, 0, 0
        if usage is not None and (usage.input_tokens or usage.output_tokens):
            cost = price.cost_nano(usage) if price is not None else None
            tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        elif isinstance(error, ProviderTimeout) and price is not None:
            limits = (reserved.bound if reserved is not None else None) or bound(
                capped(_request(record))
            )
            cost = price.worst_nano(limits.input_tokens, limits.output_tokens)
        elif hold_id:
            made, cost = False, 0
        else:
            return None
        tenant, job_id = record.get("tenant", ""), record.get("id", "") if made else ""
        charge = Charge(
            tenant, job_id, model, cost, tokens_in, tokens_out, hold_id, made, hold_nano
        )
        return self.ledger.settle_call(charge)

    def keep_answer(self, record: Record, result: ProviderResult) -> ScriptCall | None:
        """The cache's store of a successful answer, when the job asked for the cache."""
        digest, ttl = record.get("cache_key"), record.get("cache_ttl_s")
        if self.cache is None or not digest or not ttl:
            return None
        return self.cache.put_call(record.get("tenant", ""), digest, int(ttl), result.to_record())

    def budget_wait_s(self, record: Record) -> float:
        """How long a job told to wait for the budget waits: 0.25 s doubling per wait of the
        job (kept in its record), up to 5 s."""
        waits = int(record.get("budget_waits") or 0)
        return float(min(5.0, 0.25 * 2**waits))


def _request(record: Record) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(record.get("request") or "{}")
    return request
