"""The shared backend: every decision is one Lua script run atomically by Redis.

Per limit key (``name``), under :data:`workers.keys.LIMIT`:

========================  =====================================================
``…:requests``            hash: the algorithm's state for the RPM budget
``…:tokens``              hash: the same for the TPM budget
``…:inflight``            zset: reservation id → expiry; expired ids are dropped by
                          the next script, so a dead worker's slot comes back
``…:waiters:{priority}``  zset: waiter id → when it is due back
``…:meta``                hash: configured limits, learned lower limits (and until
                          when), latency average, the algorithm's name
``…:cooldown``            string: the end of the shared cool-down after a 429 (epoch s)
========================  =====================================================

plus :data:`workers.keys.LIMIT_NAMES`, the set of names, for :func:`snapshot`. Times are Redis
server time (``TIME``), so hosts need not agree on their clocks; tests may pass ``clock``.
The scripts are the Lua twins of :mod:`.memory`; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from workers import keys
from workers.ratelimit.backends.memory import describe
from workers.ratelimit.model import (
    PRIORITIES,
    RESOURCES,
    Algorithm,
    Ask,
    Policy,
    Rule,
    Settlement,
    Verdict,
)

PRELUDE = """
local PERIOD = tonumber(ARGV[1])
local NOW
if ARGV[2] ~= '' then NOW = tonumber(ARGV[2]) else
  local t = redis.call('TIME'); NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local cfg = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local mif = tonumber(ARGV[5])
local keep = tonumber(ARGV[7])
local function num(x) return string.format('%.17g', x) end
local function caps_now(meta, now)
  local m = redis.call('HMGET', meta, 'learned_requests', 'learned_requests_until',
    'learned_tokens', 'learned_tokens_until')
  local caps = {}
  for i = 1, 2 do
    local c, l, u = cfg[i], tonumber(m[2 * i - 1]), tonumber(m[2 * i])
    if c > 0 and l and u and u > now then c = math.min(c, l) end
    caps[i] = c
  end
  return caps
end
"""

RESERVE = """
local cost = {1, tonumber(ARGV[8])}
local prio = tonumber(ARGV[9])
local waiter, rid = ARGV[10], ARGV[11]
local ttl, share, grace = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local minwait, deflat = tonumber(ARGV[15]), tonumber(ARGV[16])
local forget = tonumber(ARGV[19])
local prompt = tonumber(ARGV[18]) or cost[2]
local output = cost[2] - prompt
local oavg = tonumber(redis.call('HGET', KEYS[8], 'output_avg'))
if oavg then output = math.min(output, oavg) end
local line = {1, prompt + output}
redis.call('SADD', KEYS[9], ARGV[6])
redis.call('HSET', KEYS[8], 'rpm', cfg[1], 'tpm', cfg[2], 'max_in_flight', mif,
  'algorithm', ARGV[17], 'period', ARGV[1])
redis.call('EXPIRE', KEYS[8], keep)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', NOW)
for i = 4, 6 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. num(NOW - forget)) end
local caps = caps_now(KEYS[8], NOW)
local lane = KEYS[4 + prio]
local lo = num(NOW - grace)  -- waiters due before this are late: they keep their place only
local mine = tonumber(redis.call('ZSCORE', lane, waiter))
local total, ahead, due_higher = 0, 0, 0
for q = 0, 2 do
  local n = redis.call('ZCOUNT', KEYS[4 + q], lo, '+inf')
  total = total + n
  if q < prio then
    ahead = ahead + n
    due_higher = due_higher + redis.call('ZCOUNT', KEYS[4 + q], lo, NOW)
  end
end
local others = total
if mine and mine >= NOW - grace then
  others = total - 1
  ahead = ahead + redis.call('ZRANK', lane, waiter) - redis.call('ZCOUNT', lane, '-inf', '(' .. lo)
elseif not mine then
  ahead = ahead + redis.call('ZCOUNT', lane, lo, '+inf')
end
local due_same = 0
if not mine or mine > NOW then due_same = redis.call('ZCOUNT', lane, lo, NOW) end
local cd = tonumber(redis.call('GET', KEYS[7])) or 0
local nif = redis.call('ZCARD', KEYS[3])
local reason = ''
if cd > NOW then reason = 'cooldown'
elseif due_higher > 0 then reason = 'priority'
elseif due_same > 0 then reason = 'queue'
elseif mif > 0 and nif >= mif then reason = 'in_flight'
else
  local room = redis.call('HMGET', KEYS[8], 'room', 'room_until')
  if room[1] and tonumber(room[2]) > NOW and nif >= tonumber(room[1]) then reason = 'room' end
end
local names = {'requests', 'tokens'}
local sts, floors = {}, {}
for i = 1, 2 do
  floors[i] = 0
  if prio > 0 and others > 0 then floors[i] = share * caps[i] end
  if caps[i] > 0 then
    sts[i] = alg_load(KEYS[i], caps[i], NOW)
    local need = math.min(cost[i], caps[i] - floors[i]) + floors[i]
    if reason == '' and alg_available(sts[i], NOW, caps[i]) < need then reason = names[i] end
  end
end
if reason == '' then
  for i = 1, 2 do
    if sts[i] then
      alg_add(sts[i], NOW, caps[i], -cost[i])
      alg_save(KEYS[i], sts[i], keep)
    end
  end
  redis.call('ZADD', KEYS[3], NOW + ttl, rid)
  redis.call('EXPIRE', KEYS[3], keep)
  redis.call('ZREM', lane, waiter)
  return {1, '0', 'granted'}
end
local wait = 0
for i = 1, 2 do
  if sts[i] then
    local unit = math.min(cost[i], caps[i] - floors[i])
    local need = ahead * math.min(line[i], unit) + unit + floors[i]
    local first = alg_wait(sts[i], NOW, caps[i], math.min(need, caps[i]))
    wait = math.max(wait, first + math.max(0, need - caps[i]) * PERIOD / caps[i])
  end
end
local lat = tonumber(redis.call('HGET', KEYS[8], 'latency')) or deflat
-- no output seen yet (see the memory backend): ask again once the calls in flight answered
if reason == 'tokens' and not oavg and nif > 0 then wait = math.min(wait, lat) end
if mif > 0 and nif >= mif then wait = math.max(wait, lat * (ahead + 1) / mif) end
if reason == 'room' then wait = math.max(wait, lat) end
wait = math.max(wait, cd - NOW, minwait)
redis.call('ZADD', lane, NOW + wait, waiter)
redis.call('EXPIRE', lane, keep)
return {0, num(wait), reason}
"""

SETTLE = """
local rid = ARGV[8]
local give = {tonumber(ARGV[9]), tonumber(ARGV[10])}
local rem = {tonumber(ARGV[11]), tonumber(ARGV[12])}
local lim = {tonumber(ARGV[13]), tonumber(ARGV[14])}
local cds, lat = tonumber(ARGV[15]), tonumber(ARGV[16])
local share, learn_ttl, maxcd = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
local granted_at = tonumber(redis.call('ZSCORE', KEYS[3], rid))
if granted_at then granted_at = granted_at - tonumber(ARGV[21]) end
redis.call('ZREM', KEYS[3], rid)
local before = caps_now(KEYS[8], NOW)
local fields = {'learned_requests', 'learned_tokens'}
for i = 1, 2 do
  if lim[i] and cfg[i] > 0 then
    if lim[i] < cfg[i] then
      redis.call('HSET', KEYS[8], fields[i], lim[i], fields[i] .. '_until', NOW + learn_ttl)
    else
      redis.call('HDEL', KEYS[8], fields[i], fields[i] .. '_until')
    end
  end
end
local caps = caps_now(KEYS[8], NOW)
local kept = 0
for q = 4, 6 do if redis.call('ZCARD', KEYS[q]) > 0 then kept = share end end
local others = redis.call('ZCOUNT', KEYS[3], '(' .. num(NOW), '+inf')
local calltok = tonumber(ARGV[22]) or 1
local units = {1, calltok}
local elapsed = lat or tonumber(redis.call('HGET', KEYS[8], 'latency')) or 0
local calls = nil
for i = 1, 2 do
  if rem[i] then
    local n = rem[i] / units[i]
    if not calls or n < calls then calls = n end
    rem[i] = rem[i] - others * units[i] + caps[i] / PERIOD * elapsed
  end
end
local untilt = 0
if cds and cds > 0 then
  untilt = NOW + math.min(cds, maxcd)
  local cur = tonumber(redis.call('GET', KEYS[7])) or 0
  if untilt > cur then
    redis.call('SET', KEYS[7], num(untilt), 'PX', math.ceil((untilt - NOW) * 1000))
  end
end
for i = 1, 2 do
  if caps[i] > 0 then
    local st = alg_load(KEYS[i], caps[i], NOW)
    if caps[i] < before[i] then
      local used = before[i] - alg_available(st, NOW, before[i])
      alg_correct(st, NOW, caps[i], caps[i] - used)
    end
    if give[i] ~= 0 then alg_add(st, NOW, caps[i], give[i]) end
    if rem[i] then alg_correct(st, NOW, caps[i], rem[i] + kept * caps[i]) end
    if untilt > NOW then alg_hold(st, NOW, caps[i], untilt, share * caps[i]) end
    alg_save(KEYS[i], st, keep)
  end
end
local room_since = tonumber(redis.call('HGET', KEYS[8], 'room_since')) or 0
if untilt > NOW then
  redis.call('HSET', KEYS[8], 'room', 1, 'room_since', num(NOW), 'room_until',
    num(untilt + PERIOD))
elseif calls and granted_at and granted_at >= room_since then
  redis.call('HSET', KEYS[8], 'room', math.max(1, math.floor(calls)), 'room_until',
    num(NOW + PERIOD))
end
if lat then
  local old = tonumber(redis.call('HGET', KEYS[8], 'latency'))
  if old then lat = 0.8 * old + 0.2 * lat end
  redis.call('HSET', KEYS[8], 'latency', num(lat))
end
local out = tonumber(ARGV[20])
if out then
  local old = tonumber(redis.call('HGET', KEYS[8], 'output_avg'))
  if old then out = 0.8 * old + 0.2 * out end
  redis.call('HSET', KEYS[8], 'output_avg', num(out))
end
return 1
"""


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
