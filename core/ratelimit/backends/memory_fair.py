"""The fair order between tenants in a limit key's waiting line, for :mod:`.memory` (its Lua
twin is in :data:`.redis_lua.RESERVE`; the rules: :mod:`core.ratelimit`, *Fair order*).

Per priority: each tenant's virtual time (the net units granted to it ÷ its weight), its
weight and the units of its latest call, until when it counts as waiting (its latest
refusal's wait plus the grace), and its own line of waiters (waiter → when due).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FairPlace:
    """Where an asking tenant stands among the tenants waiting in its priority's line."""

    vt: float = 0.0  # its virtual time (raised to the lowest waiting one's if it was idle)
    behind: bool = False  # another waiting tenant has a lower virtual time: it goes first
    head: bool = False  # others wait, none lower: it goes first
    before: float = 0.0  # units the tenants behind it take first (whole calls)
    own_ahead: int = 0  # its own tenant's waiters due before it
    share: float = 1.0  # the waiting tenants' weights ÷ its own: its part of the rate


NOT_FAIR = FairPlace()


@dataclass
class _Lane:
    vt: dict[str, float] = field(default_factory=dict)
    weight: dict[str, float] = field(default_factory=dict)
    unit: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, float] = field(default_factory=dict)  # tenant → until
    lines: dict[str, dict[str, float]] = field(default_factory=dict)  # tenant → waiter → due


@dataclass
class FairLine:
    lanes: list[_Lane] = field(default_factory=lambda: [_Lane(), _Lane(), _Lane()])

    def place(
        self, prio: int, tenant: str, waiter: str, weight: float, now: float, grace: float,
        forget: float,
    ) -> FairPlace:  # fmt: skip
        lane = self.lanes[prio]
        lane.waiting = {t: until for t, until in lane.waiting.items() if until >= now}
        line = lane.lines.setdefault(tenant, {})
        for w in [w for w, due in line.items() if due < now - forget]:
            del line[w]
        others = [
            (lane.vt.get(t, 0.0), lane.weight.get(t, 1.0), lane.unit.get(t, 1.0))
            for t in lane.waiting
            if t != tenant
        ]
        vt = lane.vt.get(tenant, 0.0)
        if others and tenant not in lane.waiting:
            vt = max(vt, min(v for v, _, _ in others))  # idle time is not banked
        before = sum(math.ceil((vt - v) * w / c - 1e-9) * c for v, w, c in others if v < vt)
        behind = any(v < vt for v, _, _ in others)
        live = {w: due for w, due in line.items() if due >= now - grace}
        mine = line.get(waiter)
        own_ahead = len(live) if mine is None else sum(1 for w, due in live.items() if due < mine)
        share = (weight + sum(w for _, w, _ in others)) / weight
        return FairPlace(vt, behind, bool(others) and not behind, before, own_ahead, share)

    def granted(self, prio: int, tenant: str, waiter: str, place: FairPlace, unit: float,
                weight: float) -> None:  # fmt: skip
        lane = self.lanes[prio]
        lane.vt[tenant] = place.vt + unit / weight
        lane.unit[tenant] = unit
        lane.lines.get(tenant, {}).pop(waiter, None)

    def refused(self, prio: int, tenant: str, waiter: str, place: FairPlace, unit: float,
                weight: float, due: float, until: float) -> None:  # fmt: skip
        lane = self.lanes[prio]
        lane.vt[tenant] = place.vt
        lane.weight[tenant] = weight
        lane.unit[tenant] = unit
        lane.waiting[tenant] = max(lane.waiting.get(tenant, 0.0), until)
        lane.lines.setdefault(tenant, {})[waiter] = due
