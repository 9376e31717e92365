"""When the next delivery attempt happens, and the durable schedule that holds it.

Waits between attempts follow ``COURIER_CALLBACK_RETRY_SCHEDULE`` with ±20 % jitter; a
receiver's ``Retry-After`` may push an attempt later (never earlier than the schedule,
never more than :data:`MAX_RETRY_AFTER_EXTRA_S` past it). The next attempt waits in the
``CALLBACKS_SCHEDULED`` zset (job id → due ms), not in a worker's memory: the sweeper
takes due entries with :func:`due_callbacks` and enqueues them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

import redis

from workers import keys

JITTER = 0.2
MAX_RETRY_AFTER_EXTRA_S = 3600.0
REDO_S = 120.0  # a due entry taken by the sweeper comes back this much later unless handled

# KEYS: callbacks_scheduled   ARGV: now_ms, limit, redo_ms, job key prefix
# → ids due now. Each stays scheduled at now+redo until its delivery reschedules or removes
#   it, so a crash between this and the enqueue (or during the attempt) loses nothing.
DUE_CALLBACKS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[4] .. id) == 1 then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), id)
    table.insert(out, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def next_delay(
    schedule: Sequence[float],
    failures: int,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``failures`` failed attempts in this round,
    or None when the schedule is used up (the callback has failed)."""
    if failures < 1 or failures > len(schedule):
        return None
    base = schedule[failures - 1]
    delay = base * (rand or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = min(max(delay, retry_after), delay + MAX_RETRY_AFTER_EXTRA_S)
    return delay


def schedule_at(client: redis.Redis, job_id: str, due_s: float) -> None:
    """Put (or move) the job's next attempt in the schedule."""
    client.zadd(keys.CALLBACKS_SCHEDULED, {job_id: int(due_s * 1000)})


def unschedule(client: redis.Redis, job_id: str) -> None:
    client.zrem(keys.CALLBACKS_SCHEDULED, job_id)


class CallbackSchedule:
    """The sweeper's side: takes due callbacks atomically (with a redo score)."""

    def __init__(self, client: redis.Redis, redo_s: float = REDO_S) -> None:
        self.redis = client
        self.redo_s = redo_s
        self._due = client.register_script(DUE_CALLBACKS)

    def due(self, limit: int = 1000) -> list[str]:
        ids: list[str] = self._due(
            keys=[keys.CALLBACKS_SCHEDULED],
            args=[int(time.time() * 1000), limit, int(self.redo_s * 1000), keys.JOB_PREFIX],
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
