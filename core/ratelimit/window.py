"""Sliding-window counter: at most ``cap`` units in any ``period``, estimated from two windows.

The state is ``(start, prev, curr)``: units counted in the window that began at ``start`` and in
the one before it. The units in the sliding window ending now are estimated as
``prev * (1 - (now - start) / period) + curr`` (the previous window assumed uniform), the
approximation Cloudflare and others use to get a sliding window in O(1) space. Refunds come
out of ``curr`` only (units counted in an earlier window stay counted). A hold can only mark
the current window full; the shared cool-down key keeps everything out until it ends.

Compared with :mod:`.bucket`: no refill after a burst until the window slides, which fits a
provider that counts a true sliding window; but an early-window burst is forgotten linearly,
so it is not exact either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LUA = """
local function alg_load(key, cap, now)
  local v = redis.call('HMGET', key, 'start', 'prev', 'curr')
  if not v[1] then return {start = now, prev = 0, curr = 0} end
  return {start = tonumber(v[1]), prev = tonumber(v[2]), curr = tonumber(v[3])}
end
local function alg_save(key, st, keep)
  redis.call('HSET', key, 'start', st.start, 'prev', st.prev, 'curr', st.curr)
  redis.call('EXPIRE', key, keep)
end
local function alg_roll(st, now)
  if now < st.start + PERIOD then return end
  local k = math.floor((now - st.start) / PERIOD)
  if k == 1 then st.prev = st.curr else st.prev = 0 end
  st.curr = 0
  st.start = st.start + k * PERIOD
end
local function alg_used(st, now)
  return st.prev * math.max(0, 1 - (now - st.start) / PERIOD) + st.curr
end
local function alg_available(st, now, cap)
  alg_roll(st, now)
  return cap - alg_used(st, now)
end
local function alg_add(st, now, cap, delta)
  alg_roll(st, now)
  st.curr = math.max(0, st.curr - delta)
end
local function alg_correct(st, now, cap, remaining)
  local avail = alg_available(st, now, cap)
  if avail > remaining then st.curr = st.curr + (avail - remaining) end
end
local function alg_hold(st, now, cap, untilt, level)
  alg_correct(st, now, cap, 0)
end
local function alg_wait(st, now, cap, need)
  local target = cap - need
  if alg_available(st, now, cap) >= need then return 0 end
  if target < 0 then return st.start + 2 * PERIOD - now end
  if st.curr <= target and st.prev > 0 then
    return math.max(0, st.start + PERIOD * (1 - (target - st.curr) / st.prev) - now)
  end
  return math.max(0, st.start + PERIOD * (2 - target / st.curr) - now)
end
"""


@dataclass(slots=True)
class WindowState:
    start: float
    prev: float
    curr: float


class SlidingWindow:
    """The sliding-window counter (see the module docstring)."""

    name = "window"
    lua = LUA

    def __init__(self, period: float = 60.0) -> None:
        self.period = period

    def new(self, cap: float, now: float) -> WindowState:
        return WindowState(now, 0.0, 0.0)

    def _roll(self, state: WindowState, now: float) -> None:
        if now < state.start + self.period:
            return
        k = math.floor((now - state.start) / self.period)
        state.prev = state.curr if k == 1 else 0.0
        state.curr = 0.0
        state.start += k * self.period

    def _used(self, state: WindowState, now: float) -> float:
        return state.prev * max(0.0, 1 - (now - state.start) / self.period) + state.curr

    def available(self, state: WindowState, now: float, cap: float) -> float:
        self._roll(state, now)
        return cap - self._used(state, now)

    def add(self, state: WindowState, now: float, cap: float, delta: float) -> None:
        self._roll(state, now)
        state.curr = max(0.0, state.curr - delta)

    def correct(self, state: WindowState, now: float, cap: float, remaining: float) -> None:
        avail = self.available(state, now, cap)
        if avail > remaining:
            state.curr += avail - remaining

    def hold(self, state: WindowState, now: float, cap: float, until: float, level: float) -> None:
        self.correct(state, now, cap, 0.0)

    def wait(self, state: WindowState, now: float, cap: float, need: float) -> float:
        target = cap - need
        if self.available(state, now, cap) >= need:
            return 0.0
        if target < 0:
            return state.start + 2 * self.period - now
        if state.curr <= target and state.prev > 0:
            t = state.start + self.period * (1 - (target - state.curr) / state.prev)
            return max(0.0, t - now)
        return max(0.0, state.start + self.period * (2 - target / state.curr) - now)

    def dump(self, state: WindowState) -> dict[str, float]:
        return {"start": state.start, "prev": state.prev, "curr": state.curr}

    def load(self, raw: dict[str, str]) -> WindowState:
        return WindowState(float(raw["start"]), float(raw["prev"]), float(raw["curr"]))
