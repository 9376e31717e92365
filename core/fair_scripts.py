"""The intake's take in fair order (README, *Fair share*): one Lua script, one round trip.

Producers queue ``courier.run_job`` messages on kombu's lists of ``jobs.<priority>`` as
ever. Each take first *sorts* up to a batch of newly arrived messages of each priority
into one list per tenant (the tenant read from the job record), then *starts* one job:
from the highest priority with sorted messages, the tenant with the lowest virtual time.

Start-time fair queuing: a start advances its tenant's virtual time by cost / weight (the
cost is the job's estimated tokens when its model has a tokens-per-minute limit, else 1),
and the priority's clock moves to the started tenant's virtual time. A tenant that becomes
active starts at max(its own virtual time, the clock): idle time is not banked, and a
tenant that empties its list and refills it at once keeps its place. A start charged in
estimated tokens is trued up to the tokens used when the job answers (FAIR_SETTLE below).
A message whose job cannot be claimed (cancelled, ended, a stale copy after aging) costs its
tenant nothing, nor does a job back from a rate limit's waiting line (counted when it first
started).

The message leaves Redis only in the script that claims its job (as with the plain take
it replaced): the lease keeps the job from then on.
"""

from __future__ import annotations

from core.event_scripts import EVENTS
from core.scripts import CLAIM_FUNCTION

# KEYS: running, scheduled, queued:high, queued:normal, queued:low, set-aside messages,
#       metrics fair_started, metrics fair_cost,
#       then for each priority consumed, highest first: its 4 broker lists in delivery order
# ARGV: 1 token, 2 now_ms, 3 lease_deadline_ms, 4 starts counter key, 5 job key prefix,
#       6 a message already taken off a broker list ('' = none), 7 that message's priority,
#       8 fair key prefix ('courier:fair:'), 9 sort batch per priority,
#       10 weights as JSON ('' = 1 each), 11 Lua patterns of models with a tpm limit, one a
#       line, 12 default max_tokens, 13.. the priorities consumed (one per group of 4 lists)
# → {} when nothing waits; else {task id, argsrepr, job id, claim()'s answer...}, or
#   {task id, '', ''} when a message that names no job was set aside (then nothing started)
FAIR_TAKE = (
    EVENTS
    + CLAIM_FUNCTION
    + """
local NOW, JOBS, FAIR = tonumber(ARGV[2]), ARGV[5], ARGV[8]
local BATCH = tonumber(ARGV[9])
local WEIGHTS = {}
if ARGV[10] ~= '' then WEIGHTS = cjson.decode(ARGV[10]) end
local LIMITED = {}
for pattern in string.gmatch(ARGV[11], '[^\\n]+') do table.insert(LIMITED, pattern) end
local QUEUED = {high = KEYS[3], normal = KEYS[4], low = KEYS[5]}

local function parse(payload)
  local ok, message = pcall(cjson.decode, payload)
  local headers = ok and type(message) == 'table' and message.headers
  if type(headers) ~= 'table' then headers = {} end
  local task_id = type(headers.id) == 'string' and headers.id or ''
  local job_id = headers.task == 'courier.run_job' and type(headers.argsrepr) == 'string'
    and string.match(headers.argsrepr, "^[%[%(]'([%w_%-]+)',?[%]%)]$")
  return task_id, headers.argsrepr, job_id
end

-- Puts a message into its tenant's list; a tenant becoming active joins at the clock.
local aside = false  -- the task id of a message set aside now, reported instead of a start
local function sort(priority, payload)
  local task_id, _, job_id = parse(payload)
  if not job_id then
    aside = aside or task_id
    redis.call('LPUSH', KEYS[6], payload)
    redis.call('LTRIM', KEYS[6], 0, 999)
    return
  end
  local tenant = redis.call('HGET', JOBS .. job_id, 'tenant')
  if not tenant then return end  -- its job is gone: nothing to run
  local base = FAIR .. priority .. ':'
  redis.call('ZADD', base .. 'queued:' .. tenant,
             redis.call('ZSCORE', QUEUED[priority], job_id) or NOW, job_id)
  redis.call('HINCRBY', base .. 'state', 'held', 1)
  if redis.call('LPUSH', base .. 'messages:' .. tenant, payload) == 1 then
    local state = redis.call('HMGET', base .. 'state', 'clock', 'vt:' .. tenant)
    local vt = math.max(tonumber(state[1]) or 0, tonumber(state[2]) or 0)
    redis.call('ZADD', base .. 'tenants', vt, tenant)
  end
end

-- The job's cost: its estimated tokens when its model has a tokens-per-minute limit (and
-- true), else 1. Estimated: chars/4 of the request, plus for chat its max_tokens, or the
-- tenant's recent answers on this model (FAIR_SETTLE's average) when they ran shorter.
local function cost_of(job, tenant)
  if #LIMITED == 0 then return 1, false end
  local model = redis.call('HGET', job, 'model') or ''
  for _, pattern in ipairs(LIMITED) do
    if string.find(model, pattern) then
      local request = redis.call('HGET', job, 'request') or ''
      local output = 0
      if string.find(request, '"messages"', 1, true) then
        output = tonumber(string.match(request, '"max_tokens":%s*(%d+)'))
          or tonumber(string.match(request, '"max_completion_tokens":%s*(%d+)'))
          or tonumber(ARGV[12])
        local seen = tonumber(redis.call('HGET', FAIR .. 'output', tenant .. '|' .. model) or '')
        if seen then output = math.min(output, math.ceil(seen)) end
      end
      return math.max(1, math.ceil(#request / 4) + output), true
    end
  end
  return 1, false
end

local groups = {}
for g = 13, #ARGV do table.insert(groups, {ARGV[g], 9 + (g - 13) * 4}) end
if ARGV[6] ~= '' then sort(ARGV[7], ARGV[6]) end
for _, group in ipairs(groups) do
  local moved = 0
  for i = group[2], group[2] + 3 do
    while moved < BATCH do
      local payload = redis.call('RPOP', KEYS[i])
      if not payload then break end
      sort(group[1], payload)
      moved = moved + 1
    end
  end
end
if aside then return {aside, '', ''} end

for _, group in ipairs(groups) do
  local priority = group[1]
  local base = FAIR .. priority .. ':'
  local top = redis.call('ZRANGE', base .. 'tenants', 0, 0, 'WITHSCORES')
  if top[1] then
    local tenant, vt = top[1], tonumber(top[2])
    local list = base .. 'messages:' .. tenant
    local payload = redis.call('RPOP', list)
    local left = redis.call('LLEN', list)
    redis.call('HINCRBY', base .. 'state', 'held', -1)
    local task_id, argsrepr, job_id = parse(payload)
    redis.call('ZREM', base .. 'queued:' .. tenant, job_id)
    -- back from a rate limit's waiting line: its tokens were counted when it first started
    local again = redis.call('HGET', JOBS .. job_id, 'waiting_for') == 'rate_limit'
    local out = claim(JOBS .. job_id, job_id, ARGV[1], NOW, ARGV[3], ARGV[4],
                      KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    local after = vt
    if out[1] == 'claimed' and not again then
      local cost, tokens = cost_of(JOBS .. job_id, tenant)
      after = vt + cost / (tonumber(WEIGHTS[tenant]) or 1)
      redis.call('HSET', base .. 'state', 'clock', vt, 'vt:' .. tenant, after)
      local label = tenant .. '|' .. priority
      redis.call('HINCRBY', KEYS[7], label, 1)
      redis.call('HINCRBY', KEYS[8], label, cost)
      if tokens then  -- an estimate: FAIR_SETTLE trues it up when the job has answered
        local charge = priority .. ' ' .. cost
        redis.call('HSET', JOBS .. job_id, 'fair_charge', charge)
        table.insert(out, 'fair_charge')
        table.insert(out, charge)
      end
    end
    if left > 0 then
      redis.call('ZADD', base .. 'tenants', after, tenant)
    else
      redis.call('ZREM', base .. 'tenants', tenant)
    end
    table.insert(out, 1, job_id)
    table.insert(out, 1, argsrepr)
    table.insert(out, 1, task_id)
    return out
  end
end
return {}
"""
)

# The true-up of a start charged in tokens (the job's field fair_charge, '<priority> <cost>',
# set by FAIR_TAKE): once the job has answered, its tenant's virtual time moves by
# (tokens used - tokens charged) / weight, in the tenants' order too when it is waiting
# there. So a tenant that asks for max_tokens it does not use is not kept back for them,
# and one whose answers run longer than estimated pays for the difference. Once per job
# (the field is removed), so a retried ending does not count twice.
# It also keeps the tenant's average output on the job's model (a moving average, field
# '<tenant>|<model>' of courier:fair:output), which FAIR_TAKE charges instead of a larger
# max_tokens: a job in flight then holds its tenant back by about what it will use.
# KEYS: job, fair state of the charged priority, fair tenants of that priority, output averages
# ARGV: tokens the job used, its tenant's weight, its output tokens
# → the change of virtual time, or false
FAIR_SETTLE = """
local charge = redis.call('HGET', KEYS[1], 'fair_charge')
if not charge then return false end
redis.call('HDEL', KEYS[1], 'fair_charge')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
local charged = tonumber(string.match(charge, ' (%d+)$'))
if not tenant or not charged then return false end
local field = tenant .. '|' .. (redis.call('HGET', KEYS[1], 'model') or '')
local seen = tonumber(redis.call('HGET', KEYS[4], field) or '')
local output = tonumber(ARGV[3])
redis.call('HSET', KEYS[4], field, seen and (0.8 * seen + 0.2 * output) or output)
local delta = (tonumber(ARGV[1]) - charged) / tonumber(ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[2], 'vt:' .. tenant, delta)
if redis.call('ZSCORE', KEYS[3], tenant) then redis.call('ZINCRBY', KEYS[3], delta, tenant) end
return tostring(delta)
"""
