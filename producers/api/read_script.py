"""``GET /v1/jobs/{id}`` in one Redis call: the record and, for a job waiting in a queue, its
standing (:mod:`producers.api.queue_position`), without the ~70 arguments and answers a
pipeline of the same reads would encode and parse in Python."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.celery import PRIORITIES
from core import keys
from core.coalesce import Coalescer
from core.records import Record
from producers.api.queue_position import WINDOW_S, eta, fair_place

# KEYS: job, queued:high, queued:normal, queued:low
# ARGV: id, starts counter key prefix, now (whole seconds), window (s)
# → {} no such job; {record} not waiting in a queue; {record, {rank, jobs in the queues
#   above, started, queue index (0 = high)}}: its rank in arrival order, and the jobs
#   started in the window before now
READ = """
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then return {} end
local f = redis.call('HMGET', KEYS[1], 'status', 'waiting_for')
if f[1] ~= 'queued' or (f[2] and f[2] ~= '') then return {record} end
local ahead, now = 0, tonumber(ARGV[3])
for i = 2, #KEYS do
  local rank = redis.call('ZRANK', KEYS[i], ARGV[1])
  if rank then
    local started = 0
    for s = 1, tonumber(ARGV[4]) do
      started = started + (tonumber(redis.call('GET', ARGV[2] .. (now - s))) or 0)
    end
    return {record, {rank, ahead, started, i - 2}}
  end
  ahead = ahead + redis.call('ZCARD', KEYS[i])
end
return {record}
"""


class JobReader:
    def __init__(self, redis: Coalescer) -> None:
        self.redis = redis
        self._script = redis.client.register_script(READ)

    async def read(
        self, job_id: str, now: float, tenant: str, weights: Mapping[str, float]
    ) -> tuple[Record | None, dict[str, Any] | None]:
        """(the record or None, its ``queue`` standing or None; only for ``tenant``'s job,
        whose place within its priority follows the fair order between tenants)."""
        answer = await self.redis.script(
            self._script,
            [keys.job(job_id), *(keys.queued(name) for name in PRIORITIES)],
            [job_id, keys.STARTS_PREFIX, int(now), WINDOW_S],
        )
        if not answer:
            return None, None
        flat = answer[0]
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        if len(answer) < 2 or record.get("tenant") != tenant:
            return record, None
        rank, above, started, index = (int(v) for v in answer[1])
        within = await fair_place(self.redis, job_id, tenant, weights, PRIORITIES[index], rank)
        return record, {
            "position": within + 1,
            "ahead": within + above,
            "estimated_start_at": eta(now, within + above, started / WINDOW_S),
        }
