"""Every Lua script about jobs, but the rate limiter's (:mod:`core.ratelimit`, beside their
Python twins), the ledger's (:mod:`core.cost.scripts`), the cache's (:mod:`core.cache`),
the job events' own (:mod:`core.event_scripts`: the functions every status change below
calls, and the two scripts that only add events), the locks' and the circuit breaker's
(:mod:`core.breaker_scripts`), and the intake's take in fair order between tenants
(:mod:`core.fair_scripts`, built on :data:`CLAIM_FUNCTION` below), all reachable from here.

Scripts that change a job record make it atomic (one-way status, leases, schedules):

Statuses move only forward: queued → running → (succeeded | failed | cancelled | expired),
with running → queued allowed only to the lease holder (a retry later) or to the
sweeper once a lease has lapsed (its worker died). Times are milliseconds.
"""

from __future__ import annotations

from core.breaker_scripts import (
    ACQUIRE_OR_RENEW,
    BREAKER_ADMIT,
    BREAKER_COMMON,
    BREAKER_RECORD,
    RECORD_FAILURE,
    RELEASE,
)
from core.conversation_scripts import CONVERSATION_END
from core.conversation_scripts import FUNCTIONS as CONVERSATION_FUNCTIONS
from core.event_scripts import ANNOUNCE_MODEL, EMIT_OUTPUT
from core.event_scripts import EVENTS as _EVENTS
from core.ratelimit import bucket

# re-exported, and every script below
__all__ = ["ACQUIRE_OR_RENEW", "ANNOUNCE_MODEL", "BREAKER_ADMIT", "BREAKER_COMMON",
           "BREAKER_RECORD", "EMIT_OUTPUT", "RECORD_FAILURE", "RELEASE"]  # fmt: skip

# KEYS: job, tenant_jobs, idem, expiries, queued(priority), tenant unfinished (zset)
# ARGV: id, retention_s, created_ms, use_idem, expires_ms ('' for none), job key prefix,
#       max unfinished jobs of the tenant ('' = no limit), field, value, ...
# → nil if created, else the id of the job that Idempotency-Key already made, or
#   {'quota_exceeded', unfinished count} (nothing stored) when the tenant is at its limit
CREATE = (
    _EVENTS
    + """
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', ARGV[6] .. existing) == 1 then return existing end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) * 1000)
if ARGV[7] ~= '' then
  local unfinished = redis.call('ZCARD', KEYS[6])
  if unfinished >= tonumber(ARGV[7]) then return {'quota_exceeded', unfinished} end
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[6], ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) * 1000)
redis.call('EXPIRE', KEYS[2], ARGV[2])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2]) end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1]) end
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
announce(KEYS[1], '')
return false
"""
)

# claim(job key, id, token, now_ms, lease_deadline_ms, starts counter key for this second,
#       running, scheduled, queued:high, queued:normal, queued:low)
# → {'claimed', field, value, ...} when claimed, else {status-or-reason}. A claim counts the
# first provider call of its run in 'attempts' (saves the worker a BEGIN_ATTEMPT round trip);
# a run handed back before making that call gives it back (JobRunner._later).
CLAIM_FUNCTION = """
local function claim(job, id, token, now, deadline, starts, running, scheduled, qh, qn, ql)
  local st = redis.call('HGET', job, 'status')
  if not st then return {'missing'} end
  if st ~= 'queued' then return {st} end
  local nb = tonumber(redis.call('HGET', job, 'not_before') or '0') or 0
  if nb > now then return {'scheduled'} end
  local exp = tonumber(redis.call('HGET', job, 'expires_at') or '')
  if exp and exp * 1000 <= now then return {'expired'} end
  redis.call('HSET', job, 'status', 'running', 'lease', token, 'waiting_for', '')
  if (redis.call('HGET', job, 'started_at') or '') == '' then
    redis.call('HSET', job, 'started_at', tostring(now / 1000))
  end
  redis.call('ZADD', running, deadline, id)
  redis.call('ZREM', scheduled, id)
  redis.call('ZREM', qh, id)
  redis.call('ZREM', qn, id)
  redis.call('ZREM', ql, id)
  redis.call('INCR', starts)
  redis.call('EXPIRE', starts, 120)
  redis.call('HINCRBY', job, 'attempts', 1)
  announce(job, '')
  local out = redis.call('HGETALL', job)
  table.insert(out, 1, 'claimed')
  return out
end
"""

# KEYS: job, running, scheduled, queued:high, queued:normal, queued:low
# ARGV: id, token, now_ms, lease_deadline_ms, starts counter key → as claim() above
CLAIM = (
    _EVENTS
    + CLAIM_FUNCTION
    + """
return claim(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5],
             KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
"""
)

# KEYS: job   ARGV: token, now_ms, model of the call
# → attempts after increment; -1 lease lost; -2 expired
BEGIN_ATTEMPT = (
    _EVENTS
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
   or redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return -1 end
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '')
if exp and exp * 1000 <= tonumber(ARGV[2]) then return -2 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
announce(KEYS[1], ARGV[3] or '')
return attempts
"""
)

# KEYS: job, running, scheduled, expiries, callbacks_scheduled, queued:high|normal|low,
#       tenant unfinished (zset; the job leaves it)
# ARGV: id, token ('' = any holder), allowed statuses ',a,b,', new status, retention_s,
#       channel, callback_due_ms ('' = no callback), field, value, ...
# → {1, previous status, released child id, its priority, ...} when the job ended now (or
# this token had ended it so before: a retry after the answer was lost), {0, status} when it
# could not. Its waiting children (core.conversation_scripts) are released on success (their
# ids returned, to be enqueued at once), else failed parent_failed.
FINISH = (
    _EVENTS
    + CONVERSATION_FUNCTIONS
    + CONVERSATION_END
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {0, 'missing'} end
if ARGV[2] ~= '' and st == ARGV[4] and redis.call('HGET', KEYS[1], 'ended_by') == ARGV[2] then
  return {1, st}
end
if not string.find(ARGV[3], ',' .. st .. ',', 1, true) then return {0, st} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then
  return {0, 'lease_lost'}
end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'lease', '', 'ended_by', ARGV[2], 'waiting_for', '',
           unpack(ARGV, 8))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
for i = 6, 9 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[1], 'ev_status', ARGV[4])
emit(KEYS[1], 'e', 'job.' .. ARGV[4], 'at', now_ms())
redis.call('PUBLISH', ARGV[6], ARGV[1])
local released = conversation_end(CHILD_SAFETY_MS)
return {1, st, unpack(released)}
"""
)

# The write before a WAIT (core.replication): WAIT counts the replicas holding every write made
# before this client's last one, so the write must come from the client that waits; and it is
# made only if the jobs are there, as the caller expects them, on the server that answers now
# (a failover between the caller's writes and this one may have lost them). The write marks
# each job 'enqueued' (this runs only after its message was queued): a replayed submission of
# a queued job without the mark puts its message on the queue again (producers/api).
# KEYS: job...   ARGV: status every job must have ('' = any)
# → 0 when the jobs were marked, else the position of the first job missing or not so
CONFIRM = """
for i = 1, #KEYS do
  local st = redis.call('HGET', KEYS[i], 'status')
  if not st or (ARGV[1] ~= '' and st ~= ARGV[1]) then return i end
end
for i = 1, #KEYS do redis.call('HSET', KEYS[i], 'enqueued', '1') end
return 0
"""

# KEYS: job, running, scheduled   ARGV: id, token, due_ms, waiting_for, field, value, ...
# → 1 when handed back to the queue for later, 0 when the lease was lost
REQUEUE = (
    _EVENTS
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
   or redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'lease', '', 'not_before', ARGV[3],
           'waiting_for', ARGV[4])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
announce(KEYS[1], '')
return 1
"""
)

# KEYS: running, job...   ARGV: deadline_ms, id, token, id, token, ...  → ids whose lease is lost
RENEW = """
local lost = {}
for i = 2, #KEYS do
  local id, token = ARGV[i * 2 - 2], ARGV[i * 2 - 1]
  if redis.call('HGET', KEYS[i], 'status') == 'running'
     and redis.call('HGET', KEYS[i], 'lease') == token then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
  else
    table.insert(lost, id)
  end
end
return lost
"""

# KEYS: running, scheduled   ARGV: now_ms, limit, job key prefix → ids handed back to the queue
RECOVER = (
    _EVENTS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[3] .. id
  if redis.call('HGET', k, 'status') == 'running' then
    redis.call('HSET', k, 'status', 'queued', 'lease', '', 'not_before', '0',
               'waiting_for', 'recovery')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    announce(k, '')
    table.insert(out, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return out
"""
)

# take_due(zset, now_ms, limit, redo_ms, keep) → the ids due now for which keep(id) holds,
# each rescheduled at now+redo until whoever handles it reschedules or removes it, so a crash
# in between loses nothing; the others leave the zset.
TAKE_DUE = """
local function take_due(zset, now, limit, redo, keep)
  local ids = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, limit)
  local out = {}
  for _, id in ipairs(ids) do
    if keep(id) then
      redis.call('ZADD', zset, tonumber(now) + tonumber(redo), id)
      table.insert(out, id)
    else
      redis.call('ZREM', zset, id)
    end
  end
  return out
end
"""

# KEYS: scheduled   ARGV: now_ms, limit, redo_ms, job key prefix, queued key prefix
# → {id, priority, ...} due now; each stays scheduled at now+redo until a worker claims it.
DUE = (
    TAKE_DUE
    + """
local out = {}
local due = take_due(KEYS[1], ARGV[1], ARGV[2], ARGV[3], function(id)
  return redis.call('HGET', ARGV[4] .. id, 'status') == 'queued'
end)
for _, id in ipairs(due) do
  local priority = redis.call('HGET', ARGV[4] .. id, 'priority') or 'normal'
  redis.call('ZADD', ARGV[5] .. priority, 'NX', ARGV[1], id)
  table.insert(out, id)
  table.insert(out, priority)
end
return out
"""
)

# KEYS: callbacks_scheduled   ARGV: now_ms, limit, redo_ms, job key prefix
# → callback ids due now (of jobs that still exist), each rescheduled at now+redo.
DUE_CALLBACKS = (
    TAKE_DUE
    + """
return take_due(KEYS[1], ARGV[1], ARGV[2], ARGV[3], function(id)
  return redis.call('EXISTS', ARGV[4] .. id) == 1
end)
"""
)

# KEYS: queued:<from>, queued:<to>   ARGV: now_ms, older_than_ms, limit, job key prefix
# → ids moved up one queue because they waited longer than the aging bound
AGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]),
                       'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('HGET', ARGV[4] .. id, 'status') == 'queued' then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    table.insert(out, id)
  end
end
return out
"""

# A tenant's submission rate (producers/api/quotas.py).
# KEYS: bucket   ARGV: rate per s, burst, tokens wanted
# → {1, '0'} taken, or {0, seconds until that many are due} (nothing taken). The bucket is the
# rate limiter's (core.ratelimit.bucket: capacity ``burst``, refilled over burst/rate seconds).
# A batch larger than the burst is taken from a full bucket, leaving it in debt: later
# submissions wait until the rate has paid it back, so the long-run rate holds.
SUBMIT_TOKENS = (
    "local PERIOD = tonumber(ARGV[2]) / tonumber(ARGV[1])\n"
    + bucket.LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst, want = tonumber(ARGV[2]), tonumber(ARGV[3])
local st = alg_load(KEYS[1], burst, now)
local wait = alg_wait(st, now, burst, math.min(want, burst))
if wait > 0 then return {0, tostring(wait)} end
alg_add(st, now, burst, -want)
alg_save(KEYS[1], st, math.ceil((burst - st.level) * PERIOD / burst) + 1)
return {1, '0'}
"""
)
