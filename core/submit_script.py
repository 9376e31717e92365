"""One submission in one Redis call: the tenant's rate, an Idempotency-Key replay, the budget
spent, the cap on unfinished jobs, the job stored, counted and — when the broker is the job
store's Redis — its Celery message queued (``POST /v1/jobs``, :mod:`producers.api.submission`).

Every refusal comes before the first write, so a refused submission stores nothing; and the
job and its message are written in one atomic step, so no job is ever stored unqueued (nor a
message queued for a job that is not stored) whatever fails around the call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from core import keys
from core import metrics as wm
from core.coalesce import Coalescer
from core.event_scripts import EVENTS
from core.ratelimit import bucket
from core.records import Record
from core.scripts import CREATE
from core.store import JobStore
from core.task_message import RunJobMessages

_CREATE_BODY = CREATE.removeprefix(EVENTS)
_PACK = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_FIELDS_AT = 8  # where CREATE's field/value pairs start in its ARGV
EXTRA_ARGS = 8  # the arguments below that SUBMIT adds before them

# KEYS: CREATE's six (job, tenant_jobs, idem, expiries, queued(priority), tenant unfinished),
#       then the tenant's rate bucket, its spend hash this budget period, the submitted-jobs
#       counters, the broker list the message goes on
# ARGV: one JSON array (one argument, not dozens: redis-py encodes each argument in Python)
#       of: CREATE's first seven (id, retention_s, created_ms, use_idem, expires_ms, job key
#       prefix, max unfinished ('' = no cap)), then rate per s ('' = no rate), burst, budget
#       in nano-USD ('' = no budget), the job's worst case in nano-USD, the counter's field
#       ('' = not counted), the message ('' = the caller queues it), the task-sent event's
#       channel ('' = none) and payload, then CREATE's fields as an array [field, value, ...]
# → {'created'}; {'replay', field, value, ...} (the job the Idempotency-Key made);
#   {'rate_limited', seconds until a token}; {'budget_exceeded', nano-USD spent};
#   {'quota_exceeded', unfinished count}
SUBMIT = (
    EVENTS
    + "local ARGV = cjson.decode(ARGV[1])\n"
    + "local PERIOD = 1\n"
    + bucket.LUA
    + f"""
local rate, burst = ARGV[8], tonumber(ARGV[9])
if rate ~= '' then
  PERIOD = burst / tonumber(rate)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local st = alg_load(KEYS[7], burst, now)
  local wait = alg_wait(st, now, burst, 1)
  if wait > 0 then return {{'rate_limited', tostring(wait)}} end
  alg_add(st, now, burst, -1)
  alg_save(KEYS[7], st, math.ceil((burst - st.level) * PERIOD / burst) + 1)
end
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', ARGV[6] .. existing) == 1 then
    local out = redis.call('HGETALL', ARGV[6] .. existing)
    table.insert(out, 1, 'replay')
    return out
  end
end
if ARGV[10] ~= '' then
  local spent = tonumber(redis.call('HGET', KEYS[8], 'usd') or '0') or 0
  if spent + tonumber(ARGV[11]) > tonumber(ARGV[10]) then
    return {{'budget_exceeded', tostring(spent)}}
  end
end
local create_args = {{}}
for i = 1, {_FIELDS_AT - 1} do create_args[i] = ARGV[i] end
for _, v in ipairs(ARGV[{_FIELDS_AT + EXTRA_ARGS}]) do
  create_args[#create_args + 1] = v
end
local function create(ARGV)
{_CREATE_BODY}
end
local refused = create(create_args)
if refused then return refused end
if ARGV[12] ~= '' then redis.call('HINCRBY', KEYS[9], ARGV[12], 1) end
if ARGV[13] ~= '' then redis.call('LPUSH', KEYS[10], ARGV[13]) end
if ARGV[14] ~= '' then redis.call('PUBLISH', ARGV[14], ARGV[15]) end
return {{'created'}}
"""
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What the script checks besides the unfinished-jobs cap (None: not checked)."""

    rate: float | None = None
    burst: int = 1
    spend_key: str = ""  # the tenant's spend hash this period, when it has a budget
    budget_nano: int | None = None
    worst_nano: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["created", "replay", "rate_limited", "budget_exceeded", "quota_exceeded"]
    record: Record  # the new job (created) or the first one (replay); else empty
    value: float = 0.0  # seconds to wait, nano-USD spent or jobs unfinished, by ``kind``


class Submitter:
    """Runs SUBMIT on the API's async client, with :class:`JobStore`'s records and keys.
    With ``messages`` (the broker is the job store's Redis) it queues each job it stores;
    without, the caller publishes through kombu."""

    def __init__(self, redis: Coalescer, store: JobStore, messages: RunJobMessages | None) -> None:
        self.redis = redis
        self.store = store
        self.messages = messages
        self._script = redis.client.register_script(SUBMIT)

    @property
    def queues(self) -> bool:
        return self.messages is not None

    async def submit(
        self,
        tenant: str,
        fields: dict[str, Any],
        counter_field: str,
        idempotency_key: str | None,
        max_unfinished: int | None,
        limits: Limits,
        queue: bool = True,
    ) -> Outcome:
        """Store (and queue, see above; ``queue`` False: never) a job, or say why not, in
        one round trip. ``counter_field``: the job's series of the submitted-jobs counter
        ('' = not counted)."""
        job_id, create_keys, create_args = self.store.create_call(
            tenant, fields, idempotency_key, max_unfinished
        )
        message = None
        if self.messages is not None and queue:
            message = self.messages.build(job_id, str(fields["priority"]))
        head, flat = create_args[: _FIELDS_AT - 1], create_args[_FIELDS_AT - 1 :]
        extra: list[Any] = [
            "" if limits.rate is None else repr(limits.rate),
            limits.burst,
            "" if limits.budget_nano is None else limits.budget_nano,
            limits.worst_nano,
            counter_field,
            message.envelope if message else "",
            message.event_channel if message else "",
            message.event if message else "",
        ]
        script_keys = [
            *create_keys,
            keys.tenant_rate(tenant),
            limits.spend_key or keys.spend(tenant, "total"),
            keys.metrics(wm.SUBMITTED),
            message.list_name if message else keys.queued("none"),
        ]
        packed = _PACK([*(str(arg) for arg in (*head, *extra)), flat])
        answer: list[str] = await self.redis.script(self._script, script_keys, [packed])
        kind = answer[0]
        if kind == "created":
            record = dict(zip(flat[::2], flat[1::2], strict=True))
            return Outcome("created", record)
        if kind == "replay":
            rest = answer[1:]
            return Outcome("replay", dict(zip(rest[::2], rest[1::2], strict=True)))
        return Outcome(kind, {}, float(answer[1]))  # type: ignore[arg-type]
