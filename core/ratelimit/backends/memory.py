"""The in-process backend: the reference version of the Redis scripts, step for step.

Used by unit tests (with an injected clock) and usable by a single process. Not shared
across processes, not persistent.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from config.celery import PRIORITIES
from core.ratelimit.backends.memory_fair import NOT_FAIR, FairLine
from core.ratelimit.model import (
    RESOURCES,
    Algorithm,
    Ask,
    Policy,
    Rule,
    Settlement,
    Verdict,
)


@dataclass
class _Key:
    rule: Rule
    states: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)  # reservation → expiry
    waiters: list[dict[str, float]] = field(default_factory=lambda: [{}, {}, {}])  # id → due
    cooldown_until: float = 0.0
    learned: dict[str, tuple[int, float]] = field(default_factory=dict)  # → (limit, until)
    latency: float | None = None
    output_avg: float | None = None
    room: float | None = None  # calls the provider last said it had room for: an in-flight cap
    room_until: float = 0.0
    room_since: float = 0.0  # a 429's time: only answers to calls granted after it may reopen
    fair: FairLine = field(default_factory=FairLine)  # the fair order between tenants


class MemoryBackend:
    def __init__(
        self,
        algorithm: Algorithm,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithm = algorithm
        self.policy = policy or Policy()
        self.clock = clock
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    # ---- helpers mirroring the Lua ------------------------------------------

    def _key(self, rule: Rule) -> _Key:
        key = self._keys.get(rule.name)
        if key is None:
            key = self._keys[rule.name] = _Key(rule)
        key.rule = rule
        return key

    def _caps(self, key: _Key, now: float) -> list[float]:
        caps: list[float] = []
        for resource, configured in zip(RESOURCES, key.rule.caps(), strict=True):
            learned = key.learned.get(resource)
            if configured > 0 and learned is not None and learned[1] > now:
                caps.append(float(min(configured, learned[0])))
            else:
                caps.append(float(max(configured, 0)))
        return caps

    def _state(self, key: _Key, resource: str, cap: float, now: float) -> Any:
        if resource not in key.states:
            key.states[resource] = self.algorithm.new(cap, now)
        return key.states[resource]

    def _cleanup(self, key: _Key, now: float) -> None:
        key.in_flight = {r: exp for r, exp in key.in_flight.items() if exp > now}
        horizon = now - self.policy.forget_s
        key.waiters = [
            {w: due for w, due in lane.items() if due >= horizon} for lane in key.waiters
        ]

    def _live(self, key: _Key, now: float) -> list[dict[str, float]]:
        """Waiters not yet late: due in the future or for less than ``grace_s``. A late one
        keeps its place in line but no longer holds anyone up."""
        lo = now - self.policy.grace_s
        return [{w: due for w, due in lane.items() if due >= lo} for lane in key.waiters]

    # ---- the protocol ---------------------------------------------------------

    def reserve(self, rule: Rule, ask: Ask) -> Verdict:
        with self._lock:
            return self._reserve(rule, ask)

    def _reserve(self, rule: Rule, ask: Ask) -> Verdict:
        alg, pol = self.algorithm, self.policy
        now = self.clock()
        key = self._key(rule)
        self._cleanup(key, now)
        caps = self._caps(key, now)
        prio = ask.priority
        lane = key.waiters[prio]
        live = self._live(key, now)
        mine = lane.get(ask.waiter)
        total = sum(len(w) for w in live)
        others = total - (1 if ask.waiter in live[prio] else 0)
        ahead = sum(len(live[q]) for q in range(prio))
        if mine is None:
            ahead += len(live[prio])
        else:
            ahead += sum(1 for w, due in live[prio].items() if (due, w) < (mine, ask.waiter))
        due_higher = any(due <= now for q in range(prio) for due in live[q].values())
        due_same = (mine is None or mine > now) and any(due <= now for due in live[prio].values())

        fair = NOT_FAIR
        if ask.tenant:
            fair = key.fair.place(
                prio, ask.tenant, ask.waiter, ask.weight, now, pol.grace_s, pol.forget_s
            )
        reason = ""
        if key.cooldown_until > now:
            reason = "cooldown"
        elif due_higher:
            reason = "priority"
        elif fair.behind:
            reason = "fair"
        elif due_same and not fair.head:
            reason = "queue"
        elif rule.max_in_flight > 0 and len(key.in_flight) >= rule.max_in_flight:
            reason = "in_flight"
        elif key.room is not None and key.room_until > now and len(key.in_flight) >= key.room:
            reason = "room"
        costs = (1.0, float(ask.tokens))
        prompt = float(ask.tokens if ask.input_tokens is None else ask.input_tokens)
        output = costs[1] - prompt
        if key.output_avg is not None:
            output = min(output, key.output_avg)
        unknown = key.output_avg is None and bool(key.in_flight)
        if unknown:
            # No output seen yet, but the calls in flight will tell: count each waiter ahead
            # at its prompt alone, so this one is told the earliest it could go (not a place
            # paced at every whole max_tokens), and asks again then, knowing more.
            output = 0.0
        line = (1.0, prompt + output)  # what each waiter ahead will use, net
        fair_unit = line[1] if caps[1] > 0 else 1.0  # this call in the fair order
        floors: list[float] = []
        for i, resource in enumerate(RESOURCES):
            floor = pol.high_share * caps[i] if prio > 0 and others > 0 else 0.0
            floors.append(floor)
            if caps[i] > 0:
                state = self._state(key, resource, caps[i], now)
                need = min(costs[i], caps[i] - floor) + floor
                if not reason and alg.available(state, now, caps[i]) < need:
                    reason = resource

        if not reason:
            for i, resource in enumerate(RESOURCES):
                if caps[i] > 0:
                    alg.add(key.states[resource], now, caps[i], -costs[i])
            key.in_flight[ask.reservation] = now + pol.in_flight_ttl_s
            lane.pop(ask.waiter, None)
            if ask.tenant:
                key.fair.granted(prio, ask.tenant, ask.waiter, fair, fair_unit, ask.weight)
            return Verdict(True)

        latency = key.latency if key.latency is not None else pol.default_latency_s
        # Calls in flight reserved their whole max_tokens; assumed like this one, each gives
        # back its reservation less its net cost when it answers, about ``latency`` from now.
        refunds = (0.0, len(key.in_flight) * (costs[1] - line[1]))
        wait = 0.0
        for i, resource in enumerate(RESOURCES):
            if caps[i] > 0:
                unit = min(costs[i], caps[i] - floors[i])
                need = ahead * min(line[i], unit) + unit + floors[i]
                state, cap = key.states[resource], caps[i]
                resource_wait = _time_to_hold(alg, state, now, cap, need)
                if refunds[i] > 0:
                    # Granted then, each waiter ahead takes its whole reservation; before any
                    # output is known, the earliest bound: its prompt alone.
                    each = line[i] if unknown else unit
                    at_once = ahead * min(each, unit) + unit + floors[i] - refunds[i]
                    after_refunds = _time_to_hold(alg, state, now, cap, at_once)
                    resource_wait = min(resource_wait, max(latency, after_refunds))
                wait = max(wait, resource_wait)
        if rule.max_in_flight > 0 and len(key.in_flight) >= rule.max_in_flight:
            wait = max(wait, latency * (ahead + 1) / rule.max_in_flight)
        if reason == "room":
            wait = max(wait, latency)
        if (fair.head and reason in RESOURCES) or reason == "fair":
            # its turn in the fair order: after the whole calls that bring the tenants behind
            # it level (none for the head), then its own tenant's waiters ahead of it, each
            # with the other waiting tenants' calls beside it (its share of the rate)
            r = 1 if caps[1] > 0 else 0
            if caps[r] > 0:
                own = min(costs[r], caps[r] - floors[r]) + floors[r]
                queued = fair.own_ahead * min(line[r], own) * fair.share
                state = self._state(key, RESOURCES[r], caps[r], now)
                turn = _time_to_hold(alg, state, now, caps[r], fair.before + queued + own)
                wait = turn if reason == "fair" else min(wait, turn)
        wait = max(wait, key.cooldown_until - now, pol.min_wait_s)
        lane[ask.waiter] = now + wait
        if ask.tenant:
            until = now + wait + pol.grace_s
            key.fair.refused(
                prio, ask.tenant, ask.waiter, fair, fair_unit, ask.weight, now + wait, until
            )
        return Verdict(False, wait, reason)

    def settle(self, rule: Rule, settlement: Settlement) -> None:
        with self._lock:
            self._settle(rule, settlement)

    def _settle(self, rule: Rule, s: Settlement) -> None:
        alg, pol = self.algorithm, self.policy
        now = self.clock()
        key = self._key(rule)
        expiry = key.in_flight.pop(s.reservation, None)
        granted_at = None if expiry is None else expiry - pol.in_flight_ttl_s
        before = self._caps(key, now)
        for resource, limit, configured in zip(
            RESOURCES, (s.limit_requests, s.limit_tokens), rule.caps(), strict=True
        ):
            if limit is None or configured <= 0:
                continue
            if limit < configured:
                key.learned[resource] = (limit, now + pol.learn_ttl_s)
            else:
                key.learned.pop(resource, None)
        caps = self._caps(key, now)
        gives = (float(s.give_requests), s.give_tokens)
        waiting = any(key.waiters)  # then high's share is kept on top of what normal may use
        key.in_flight = {r: exp for r, exp in key.in_flight.items() if exp > now}
        others = len(key.in_flight)  # sent after this answer's count was taken
        units = (1.0, s.call_tokens or 1.0)
        lat = s.latency_s if s.latency_s is not None else (key.latency or 0.0)
        remaining: list[float | None] = []
        for i, r in enumerate((s.remaining_requests, s.remaining_tokens)):
            # the provider's room now: what it said, less our calls since, plus its refill since
            room = None if r is None else r - others * units[i] + caps[i] / alg.period * lat
            remaining.append(room)
        cooldown_until = 0.0
        if s.cooldown_s is not None and s.cooldown_s > 0:
            cooldown_until = now + min(s.cooldown_s, pol.max_cooldown_s)
            key.cooldown_until = max(key.cooldown_until, cooldown_until)
        for i, resource in enumerate(RESOURCES):
            if caps[i] <= 0:
                continue
            state = self._state(key, resource, caps[i], now)
            if caps[i] < before[i]:  # a lower limit learned: keep what is used, used
                used = before[i] - alg.available(state, now, before[i])
                alg.correct(state, now, caps[i], caps[i] - used)
            if gives[i]:
                alg.add(state, now, caps[i], gives[i])
            room = remaining[i]
            if room is not None:  # what normal work may use (+ high's share while kept)
                alg.correct(
                    state, now, caps[i], room + (pol.high_share * caps[i] if waiting else 0.0)
                )
            if cooldown_until > now:
                alg.hold(state, now, caps[i], cooldown_until, pol.high_share * caps[i])
        calls = [  # calls the provider has room for (no refill assumed: it may count a window)
            float(r) / units[i]
            for i, r in enumerate((s.remaining_requests, s.remaining_tokens))
            if r is not None
        ]
        if cooldown_until > now:  # one call at a time once the cool-down ends
            key.room, key.room_since = 1.0, now
            key.room_until = cooldown_until + alg.period
        elif calls and granted_at is not None and granted_at >= key.room_since:
            key.room, key.room_until = max(1.0, math.floor(min(calls))), now + alg.period
        if s.latency_s is not None:
            old = key.latency
            key.latency = s.latency_s if old is None else 0.8 * old + 0.2 * s.latency_s
        if s.output_tokens is not None:
            out = key.output_avg
            key.output_avg = s.output_tokens if out is None else 0.8 * out + 0.2 * s.output_tokens

    def snapshot(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self.clock()
            out = []
            for name in sorted(self._keys if names is None else set(names) & set(self._keys)):
                key = self._keys[name]
                self._cleanup(key, now)
                caps = self._caps(key, now)
                remaining: list[float | None] = []
                for i, resource in enumerate(RESOURCES):
                    if caps[i] <= 0:
                        remaining.append(None)
                        continue
                    state = self._state(key, resource, caps[i], now)
                    remaining.append(self.algorithm.available(state, now, caps[i]))
                out.append(
                    describe(
                        key.rule,
                        caps,
                        remaining,
                        len(key.in_flight),
                        [len(w) for w in self._live(key, now)],
                        max(0.0, key.cooldown_until - now),
                        key.room if key.room_until > now else None,
                    )
                )
            return out


def describe(
    rule: Rule,
    caps: list[float],
    remaining: list[float | None],
    in_flight: int,
    waiters: list[int],
    cooldown_s: float,
    room: float | None = None,
) -> dict[str, Any]:
    """One limit key's state, as :func:`core.ratelimit.limiter_state` reports it."""
    pattern, _, key_hash = rule.name.rpartition("|")
    return {
        "key": rule.name,
        "pattern": pattern,
        "api_key": key_hash,
        "rpm": rule.rpm or None,
        "tpm": rule.tpm or None,
        "max_in_flight": rule.max_in_flight or None,
        "limit_requests": int(caps[0]) or None,
        "limit_tokens": int(caps[1]) or None,
        "remaining_requests": None if remaining[0] is None else int(remaining[0]),
        "remaining_tokens": None if remaining[1] is None else int(remaining[1]),
        "in_flight": in_flight,
        "waiters": dict(zip(PRIORITIES, waiters, strict=True)),
        "cooldown_s": round(cooldown_s, 3),
        "room_in_flight": None if room is None else int(room),  # in-flight cap from headers
    }


def _time_to_hold(alg: Algorithm, state: Any, now: float, cap: float, units: float) -> float:
    """Seconds until the bucket has held ``units`` in all (more than ``cap`` takes refills)."""
    first = alg.wait(state, now, cap, min(units, cap))
    return first + max(0.0, units - cap) * alg.period / cap
