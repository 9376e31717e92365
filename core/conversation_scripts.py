"""The Lua of conversations (:mod:`core.conversations`): a child job waits on its parent,
and the parent's end releases or fails its waiting children in the same script.

A waiting child is ``queued`` with ``waiting_for = 'parent'``, in no queue index and with no
message: it holds no worker slot. It is a member of its parent's children set
(:data:`core.keys.JOB_CHILDREN`) until the parent ends. ``CONVERSATION_END`` is called by
FINISH (:mod:`core.scripts`) on every ending, so the check of the parent's status when a
child registers and the parent's ending cannot interleave.

Retention: a job's record (and its events) lives at least as long as every descendant's;
each registration and each ending of a job pushes its ancestors' TTLs up to its own
(``EXPIRE ... GT``), so a transcript never loses a middle piece.
"""

from __future__ import annotations

from core import keys, metrics
from core.event_scripts import EVENTS

PARENT_FAILED = "parent_failed"

# Functions shared by ATTACH and FINISH (needs EVENTS' emit/announce/now_ms before it).
# keep_ancestors(job key, ttl s): every ancestor's TTL at least ttl.
# fail_waiting(job id, message, retention, channel, K): fail a waiting child and its waiting
#   descendants parent_failed; K = {running, scheduled, expiries, callbacks_scheduled,
#   queued high, normal, low, tenant unfinished}. Their callbacks are due at once.
# release_children(job id, now ms, safety ms, scheduled): a succeeded parent's waiting
#   children go to their queue index (and, as a safety net should the caller die before
#   enqueuing them, to the schedule ``safety`` later); → {id, priority, ...}
FUNCTIONS = f"""
local CHILDREN_PREFIX, QUEUED_PREFIX = '{keys.JOB_CHILDREN_PREFIX}', '{keys.queued("")}'
local FINISHED_METRIC = '{keys.metrics(metrics.FINISHED)}'  -- core.metrics: counted as ended
local MAX_DEPTH = 100000
local CHILD_SAFETY_MS = 30000
local function keep_ancestors(job, ttl)
  local parent = redis.call('HGET', job, 'parent_job_id')
  local steps = 0
  while parent and parent ~= '' and steps < MAX_DEPTH do
    local k = JOB_PREFIX .. parent
    if redis.call('EXPIRE', k, ttl, 'GT') == 0 then
      if redis.call('EXISTS', k) == 0 then return end
    end
    redis.call('EXPIRE', EV_PREFIX .. parent, ttl, 'GT')
    parent = redis.call('HGET', k, 'parent_job_id')
    steps = steps + 1
  end
end
local function waiting_child(k)
  local f = redis.call('HMGET', k, 'status', 'waiting_for')
  return f[1] == 'queued' and f[2] == 'parent'
end
local function fail_waiting(first, message, retention, channel, K)
  local stack = {{{{first, message}}}}
  while #stack > 0 do
    local item = table.remove(stack)
    local id, k = item[1], JOB_PREFIX .. item[1]
    if waiting_child(k) then
      local now = now_ms()
      local err = cjson.encode({{type = '{PARENT_FAILED}', message = item[2], retryable = false}})
      redis.call('HSET', k, 'status', 'failed', 'lease', '', 'waiting_for', '', 'error', err,
                 'finished_at', tostring(tonumber(now) / 1000))
      if (redis.call('HGET', k, 'callback_url') or '') ~= '' then
        -- never delivered while it waited: its callback state is the one stored at creation
        local cb = string.gsub(redis.call('HGET', k, 'callback') or '', '"status":"none"',
                               '"status":"pending"', 1)
        redis.call('HSET', k, 'callback', cb)
        redis.call('ZADD', K[4], now, id)
      end
      for i = 1, #K do
        if i ~= 4 then redis.call('ZREM', K[i], id) end
      end
      redis.call('EXPIRE', k, retention)
      redis.call('HSET', k, 'ev_status', 'failed')
      local labels = redis.call('HMGET', k, 'model', 'priority')
      redis.call('HINCRBY', FINISHED_METRIC, 'failed|' .. (labels[1] or 'unknown') .. '|'
                 .. (labels[2] or 'unknown'), 1)
      emit(k, 'e', 'job.failed', 'at', now)
      redis.call('PUBLISH', channel, id)
      local children = CHILDREN_PREFIX .. id
      for _, kid in ipairs(redis.call('SMEMBERS', children)) do
        table.insert(stack, {{kid, 'its parent job ' .. id .. ' failed (parent_failed)'}})
      end
      redis.call('DEL', children)
    end
  end
end
local function release_children(id, now, safety, scheduled)
  local children = CHILDREN_PREFIX .. id
  local out = {{}}
  for _, kid in ipairs(redis.call('SMEMBERS', children)) do
    local k = JOB_PREFIX .. kid
    if waiting_child(k) then
      redis.call('HSET', k, 'waiting_for', '')
      announce(k, '')
      local priority = redis.call('HGET', k, 'priority') or 'normal'
      redis.call('ZADD', QUEUED_PREFIX .. priority, now, kid)
      redis.call('ZADD', scheduled, tonumber(now) + safety, kid)
      table.insert(out, kid)
      table.insert(out, priority)
    end
  end
  redis.call('DEL', children)
  return out
end
"""

# FINISH's addition (KEYS and ARGV as FINISH's; the job has just ended with status ARGV[4]):
# → the released children {id, priority, ...} (none unless it succeeded)
CONVERSATION_END = """
local function conversation_end(safety)  -- ms
  keep_ancestors(KEYS[1], tonumber(ARGV[5]))
  if ARGV[4] == 'succeeded' then
    return release_children(ARGV[1], now_ms(), safety, KEYS[3])
  end
  local children = CHILDREN_PREFIX .. ARGV[1]
  local kids = redis.call('SMEMBERS', children)
  redis.call('DEL', children)
  local K = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]}
  for _, kid in ipairs(kids) do
    fail_waiting(kid, 'its parent job ' .. ARGV[1] .. ' ' .. ARGV[4] .. ' (parent_failed)',
                 ARGV[5], ARGV[6], K)
  end
  return {}
end
"""

# A new child job (created queued, waiting_for 'parent', by CREATE) meets its parent.
# KEYS: child, parent, running, scheduled, expiries, callbacks_scheduled, queued:high|normal|low,
#       tenant unfinished
# ARGV: child id, parent id, retention_s, channel
# → 'ready' (the parent has succeeded: enqueue the child now), 'waiting' (registered on the
#   parent, out of the queue index), 'failed' (the parent failed, was cancelled, expired or
#   is gone: the child failed parent_failed), or 'gone' (the child is no longer waiting)
ATTACH = (
    EVENTS
    + FUNCTIONS
    + """
if not waiting_child(KEYS[1]) then return 'gone' end
keep_ancestors(KEYS[1], tonumber(ARGV[3]))
local st = redis.call('HGET', KEYS[2], 'status')
if st == 'succeeded' then
  redis.call('HSET', KEYS[1], 'waiting_for', '')
  announce(KEYS[1], '')
  return 'ready'
end
if st == 'queued' or st == 'running' then
  local children = CHILDREN_PREFIX .. ARGV[2]
  redis.call('SADD', children, ARGV[1])
  redis.call('EXPIRE', children, ARGV[3])
  for i = 7, 9 do redis.call('ZREM', KEYS[i], ARGV[1]) end
  announce(KEYS[1], '')
  return 'waiting'
end
local K = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}
fail_waiting(ARGV[1], 'its parent job ' .. ARGV[2] .. ' ' .. (st or 'is no longer kept')
             .. ' (parent_failed)', ARGV[3], ARGV[4], K)
return 'failed'
"""
)

# A job's line of ancestors, nearest first, walked by parent_job_id links in one call.
# ARGV: job id, the most jobs to read
# → {id, tenant, status, kind, request, result, ...} per job from the named one up to the root
#   (a job that is gone ends the list with {id, '', '', '', '', ''})
CHAIN = (
    """
local out = {}
local id = ARGV[1]
local steps = 0
while id and id ~= '' and steps < tonumber(ARGV[2]) do
  local f = redis.call('HMGET', '"""
    + keys.JOB_PREFIX
    + """' .. id, 'tenant', 'status', 'kind',
                       'request', 'result', 'parent_job_id')
  table.insert(out, id)
  for i = 1, 5 do table.insert(out, f[i] or '') end
  if not f[1] then break end
  id = f[6]
  steps = steps + 1
end
return out
"""
)
