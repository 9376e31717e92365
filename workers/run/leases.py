"""Budget leases: a worker process reserves several calls' worst cases of a tenant's budget
in one round trip and hands them out to its calls, so that a call of a tenant with a budget
costs no round trip of its own before it is made (one Redis round trip per call cost a
worker ~8 % of its CPU per job; README, Cost, budgets and cache).

A lease is an ordinary reservation of the ledger (:mod:`core.cost.ledger`) for up to
:data:`CALLS_PER_LEASE` worst cases, and never more than :data:`SHARE` of what the budget
has left, so that near the end of a budget the leases shrink to one call and every worker
still gets its turn. Each call takes its worst case from the lease and its settle gives that
slice back (its true cost charged instead), so the budget holds exactly as with one
reservation per call: what is spent plus what is held never passes it.

What a lease has not handed out goes back with the next reservation of the tenant, or after
:data:`IDLE_S` without a call (a background loop), so waiting jobs of other workers see it
soon. A lease hands out calls for :data:`FRESH_S` only, and only calls whose timeout ends
before the lease lapses; a worker that dies with a lease leaves it to lapse, and a lapsed
reservation is charged in full.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis

from core.cost.ledger import Charge, Hold, Ledger

log = logging.getLogger("courier.budget")

CALLS_PER_LEASE = 256
SHARE = 0.25
FRESH_S = 2.0
IDLE_S = 0.5


@dataclass(slots=True)
class Lease:
    id: str
    left: int  # nano-dollars not handed out yet
    fresh_until: float  # monotonic: hands out calls until then
    lapses_at: float  # wall clock: the ledger charges it in full then
    used_at: float  # monotonic


class BudgetLeases:
    def __init__(
        self,
        ledger: Ledger,
        calls_per_lease: int = CALLS_PER_LEASE,
        share: float = SHARE,
        fresh_s: float = FRESH_S,
        idle_s: float = IDLE_S,
    ) -> None:
        self.ledger = ledger
        self.calls_per_lease = calls_per_lease
        self.share = share
        self.fresh_s = fresh_s
        self.idle_s = idle_s
        self._leases: dict[str, Lease] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._loop: threading.Thread | None = None

    def take(self, tenant: str, model: str, worst: int, hold_s: float) -> Hold:
        """A call's worst case, from the tenant's lease when it has room, else from a new
        lease (the only round trip); ``hold_s``: the call's timeout and margin."""
        lock = self._locks.get(tenant) or self._locks.setdefault(tenant, threading.Lock())
        with lock:
            now, wall = time.monotonic(), time.time()
            lease = self._leases.get(tenant)
            if (
                lease is not None
                and lease.left >= worst
                and now < lease.fresh_until
                and wall + hold_s < lease.lapses_at
            ):
                lease.left -= worst
                lease.used_at = now
                return Hold("granted", lease.id, worst, granted_nano=worst)
            give_back = None
            if lease is not None:
                del self._leases[tenant]
                give_back = (lease.id, lease.left) if lease.left > 0 else None
            lapses_in = self.fresh_s + hold_s
            hold = self.ledger.reserve(
                tenant,
                model,
                worst,
                lapses_in,
                now=wall,
                wanted_nano=worst * self.calls_per_lease,
                share=self.share,
                give_back=give_back,
            )
            if hold.verdict == "granted":
                self._leases[tenant] = Lease(
                    hold.id, hold.granted_nano - worst, now + self.fresh_s, wall + lapses_in, now
                )
                self._start_loop()
            return hold

    def give_back_idle(self) -> int:
        """Return what idle or stale leases have not handed out; how many were returned."""
        now = time.monotonic()
        returned = 0
        for tenant in list(self._leases):
            lock = self._locks[tenant]
            with lock:
                lease = self._leases.get(tenant)
                if lease is None or (now - lease.used_at < self.idle_s and now < lease.fresh_until):
                    continue
                del self._leases[tenant]
            if lease.left > 0:
                self.ledger.settle(
                    Charge(tenant, "", "", 0, hold_id=lease.id, made=False, hold_nano=lease.left)
                )
                returned += 1
        return returned

    def _start_loop(self) -> None:
        if self._loop is None:
            self._loop = threading.Thread(target=self._run, name="budget-leases", daemon=True)
            self._loop.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.idle_s / 2)
            try:
                self.give_back_idle()
            except redis.RedisError as exc:  # the leases lapse instead (charged in full)
                log.warning("unused budget leases not given back: %s", exc)
