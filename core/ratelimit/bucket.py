"""Token bucket: ``cap`` units per ``period``, refilled continuously, holding at most ``cap``.

The state is ``(level, ts)``: the bucket held ``level`` units at time ``ts`` and gains
``cap / period`` per second after it, so ``available(now) = min(cap, level + (now - ts) * rate)``.
``level`` may be negative (debt: a call charged more than it reserved) and ``ts`` may lie in
the future (a hold after a 429: the same formula then gives the units still missing).

Why a bucket: it is one hash of two numbers per resource, O(1) per decision in Lua, it allows
the first minute's burst the provider allows, and ``wait`` is exact (``deficit / rate``), which
is what lets a refused job be told when to come back instead of polling. (GCRA is the same
arithmetic stored as one timestamp; the sliding-window counter is in :mod:`.window`.)
"""

from __future__ import annotations

from dataclasses import dataclass

LUA = """
local function alg_load(key, cap, now)
  local v = redis.call('HMGET', key, 'level', 'ts')
  if not v[1] then return {level = cap, ts = now} end
  return {level = tonumber(v[1]), ts = tonumber(v[2])}
end
local function alg_save(key, st, keep)
  redis.call('HSET', key, 'level', st.level, 'ts', st.ts)
  redis.call('EXPIRE', key, keep)
end
local function alg_available(st, now, cap)
  return math.min(cap, st.level + (now - st.ts) * cap / PERIOD)
end
local function alg_settle_at(st, now, cap)
  if now >= st.ts then st.level = alg_available(st, now, cap); st.ts = now end
end
local function alg_add(st, now, cap, delta)
  alg_settle_at(st, now, cap)
  st.level = math.min(cap, st.level + delta)
end
local function alg_correct(st, now, cap, remaining)
  local avail = alg_available(st, now, cap)
  if avail > remaining then
    alg_settle_at(st, now, cap)
    st.level = st.level - (avail - remaining)
  end
end
local function alg_hold(st, now, cap, untilt, level)
  alg_settle_at(st, now, cap)
  if st.ts > untilt then return end
  local projected = math.min(cap, st.level + (untilt - st.ts) * cap / PERIOD)
  if projected > level then st.level = level; st.ts = untilt end
end
local function alg_wait(st, now, cap, need)
  local avail = alg_available(st, now, cap)
  if avail >= need then return 0 end
  return (need - avail) * PERIOD / cap
end
"""


@dataclass(slots=True)
class BucketState:
    level: float
    ts: float


class TokenBucket:
    """The default algorithm (see the module docstring)."""

    name = "bucket"
    lua = LUA

    def __init__(self, period: float = 60.0) -> None:
        self.period = period

    def new(self, cap: float, now: float) -> BucketState:
        return BucketState(float(cap), now)

    def available(self, state: BucketState, now: float, cap: float) -> float:
        return min(cap, state.level + (now - state.ts) * cap / self.period)

    def _settle_at(self, state: BucketState, now: float, cap: float) -> None:
        if now >= state.ts:
            state.level, state.ts = self.available(state, now, cap), now

    def add(self, state: BucketState, now: float, cap: float, delta: float) -> None:
        self._settle_at(state, now, cap)
        state.level = min(cap, state.level + delta)

    def correct(self, state: BucketState, now: float, cap: float, remaining: float) -> None:
        avail = self.available(state, now, cap)
        if avail > remaining:
            self._settle_at(state, now, cap)
            state.level -= avail - remaining

    def hold(self, state: BucketState, now: float, cap: float, until: float, level: float) -> None:
        self._settle_at(state, now, cap)
        if state.ts > until:
            return
        projected = min(cap, state.level + (until - state.ts) * cap / self.period)
        if projected > level:
            state.level, state.ts = level, until

    def wait(self, state: BucketState, now: float, cap: float, need: float) -> float:
        avail = self.available(state, now, cap)
        return 0.0 if avail >= need else (need - avail) * self.period / cap

    def dump(self, state: BucketState) -> dict[str, float]:
        return {"level": state.level, "ts": state.ts}

    def load(self, raw: dict[str, str]) -> BucketState:
        return BucketState(float(raw["level"]), float(raw["ts"]))
