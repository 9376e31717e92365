"""The shared backend: every decision is one Lua script run atomically by Redis.

Per limit key (``name``), under :data:`core.keys.LIMIT`:

========================  =====================================================
``…:requests``            hash: the algorithm's state for the RPM budget
``…:tokens``              hash: the same for the TPM budget
``…:inflight``            zset: reservation id → expiry; expired ids are dropped by
                          the next script, so a dead worker's slot comes back
``…:waiters:{priority}``  zset: waiter id → when it is due back
``…:meta``                hash: configured limits, learned lower limits (and until
                          when), latency average, the algorithm's name
``…:cooldown``            string: the end of the shared cool-down after a 429 (epoch s)
``…:fair:{priority}``     hash: tenant → its virtual time in the line (net cost ÷ weight)
``…:fair-waiting:{p…}``   zset: tenant → until when it counts as waiting in that line
``…:fair-line:{p}:{t…}``  zset: that tenant's own waiters → when due (keys built in the script)
========================  =====================================================

plus :data:`core.keys.LIMIT_NAMES`, the set of names, for :func:`snapshot`. Times are Redis
server time (``TIME``), so hosts need not agree on their clocks; tests may pass ``clock``.
The scripts (:mod:`.redis_lua`) are the Lua twins of :mod:`.memory`; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from config.celery import PRIORITIES
from core import keys
from core.ratelimit.backends.memory import describe
from core.ratelimit.backends.redis_lua import PRELUDE, RESERVE, SETTLE
from core.ratelimit.model import (
    RESOURCES,
    Algorithm,
    Ask,
    Policy,
    Rule,
    Settlement,
    Verdict,
)


def key_list(name: str) -> list[str]:
    """The KEYS of both scripts, in the order they use them."""
    return [
        keys.limit(name, "requests"),
        keys.limit(name, "tokens"),
        keys.limit(name, "inflight"),
        *(keys.limit(name, f"waiters:{p}") for p in PRIORITIES),
        keys.limit_cooldown(name),
        keys.limit(name, "meta"),
        keys.LIMIT_NAMES,
        *(keys.limit(name, f"fair:{p}") for p in PRIORITIES),
        *(keys.limit(name, f"fair-waiting:{p}") for p in PRIORITIES),
    ]


def _opt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class RedisBackend:
    def __init__(
        self,
        client: redis.Redis,
        algorithm: Algorithm,
        policy: Policy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = client
        self.algorithm = algorithm
        self.policy = policy or Policy()
        self.clock = clock
        self._reserve = client.register_script(PRELUDE + algorithm.lua + RESERVE)
        self._settle = client.register_script(PRELUDE + algorithm.lua + SETTLE)

    def _common(self, rule: Rule) -> list[Any]:
        now = "" if self.clock is None else repr(self.clock())
        return [
            repr(self.algorithm.period),
            now,
            rule.rpm,
            rule.tpm,
            rule.max_in_flight,
            rule.name,
            int(self.policy.keep_s),
        ]

    def reserve(self, rule: Rule, ask: Ask) -> Verdict:
        pol = self.policy
        args = [
            *self._common(rule),
            ask.tokens,
            ask.priority,
            ask.waiter,
            ask.reservation,
            pol.in_flight_ttl_s,
            pol.high_share,
            pol.grace_s,
            pol.min_wait_s,
            pol.default_latency_s,
            self.algorithm.name,
            _opt(ask.input_tokens),
            pol.forget_s,
            ask.tenant,
            repr(float(ask.weight)),
            keys.limit(rule.name, "fair-line:"),
        ]
        granted, wait, reason = self._reserve(keys=key_list(rule.name), args=args)
        return Verdict(bool(int(granted)), float(wait), _text(reason))

    def settle(self, rule: Rule, settlement: Settlement) -> None:
        s, pol = settlement, self.policy
        args = [
            *self._common(rule),
            s.reservation,
            s.give_requests,
            repr(float(s.give_tokens)),
            _opt(s.remaining_requests),
            _opt(s.remaining_tokens),
            _opt(s.limit_requests),
            _opt(s.limit_tokens),
            _opt(s.cooldown_s),
            _opt(s.latency_s),
            pol.high_share,
            pol.learn_ttl_s,
            pol.max_cooldown_s,
            _opt(s.output_tokens),
            pol.in_flight_ttl_s,
            _opt(s.call_tokens),
        ]
        self._settle(keys=key_list(rule.name), args=args)

    def snapshot(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        algorithms = {self.algorithm.name: self.algorithm}
        return snapshot(self.redis, algorithms, self.policy, self.clock, names)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def snapshot(
    client: redis.Redis,
    algorithms: dict[str, Algorithm],
    policy: Policy | None = None,
    clock: Callable[[], float] | None = None,
    names: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Every limit key's state (see :func:`.memory.describe`), or only ``names``'."""
    pol = policy or Policy()
    if clock is None:
        seconds, micros = client.time()
        now = float(seconds) + float(micros) / 1e6
    else:
        now = clock()
    if names is None:
        names = (_text(n) for n in client.smembers(keys.LIMIT_NAMES))  # type: ignore[union-attr]
    out: list[dict[str, Any]] = []
    for name in sorted(names):
        ks = key_list(name)
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(ks[7])
        pipe.hgetall(ks[0])
        pipe.hgetall(ks[1])
        pipe.zcount(ks[2], f"({now!r}", "+inf")
        for lane in ks[3:6]:
            pipe.zcount(lane, repr(now - pol.grace_s), "+inf")
        pipe.get(ks[6])
        meta, *raw_states, in_flight, high, normal, low, cooldown = pipe.execute()
        meta = _hash(meta)
        if not meta:
            client.srem(keys.LIMIT_NAMES, name)  # expired while idle
            continue
        rule = Rule(
            name,
            int(meta.get("rpm", 0)),
            int(meta.get("tpm", 0)),
            int(meta.get("max_in_flight", 0)),
        )
        known = algorithms.get(meta.get("algorithm", ""))
        if known is None:
            continue  # another algorithm's key: read by whoever knows it
        algorithm = known
        if "period" in meta and float(meta["period"]) != known.period:
            algorithm = type(known)(period=float(meta["period"]))  # type: ignore[call-arg]
        caps: list[float] = []
        remaining: list[float | None] = []
        for i, (resource, configured) in enumerate(zip(RESOURCES, rule.caps(), strict=True)):
            cap = float(configured)
            until = float(meta.get(f"learned_{resource}_until", 0))
            if configured > 0 and until > now:
                cap = min(cap, float(meta[f"learned_{resource}"]))
            caps.append(cap)
            state_raw = _hash(raw_states[i])
            if cap <= 0:
                remaining.append(None)
                continue
            state = algorithm.load(state_raw) if state_raw else algorithm.new(cap, now)
            remaining.append(algorithm.available(state, now, cap))
        cooldown_s = max(0.0, float(_text(cooldown)) - now) if cooldown else 0.0
        waiters = [high, normal, low]
        room = float(meta["room"]) if float(meta.get("room_until", 0)) > now else None
        out.append(describe(rule, caps, remaining, int(in_flight), waiters, cooldown_s, room))
    return out
