"""The Lua of a job's events (:mod:`core.events`): the functions the status-changing
scripts of :mod:`core.scripts` call, atomically with the change they tell of, and the two
scripts that only add events.
"""

from __future__ import annotations

from core import events, keys

# ---- job events (core.events) ------------------------------------------------------------
# emit(job key, field, value, ...) adds an event to the job's stream (fields start with
# 'e', the event name), keeps the stream as long as the record, publishes it on the job's
# live channel; → its entry id. add(...) is the same but leaves the TTL as it is (output
# events: a status event of the same run has set it already). announce(job key, model or
# '') emits job.status when the status, attempt, waiting reason or model differs from the
# last one announced (kept in the record's 'ev_status'); the model defaults to the one the
# route is at. The terminal event is emitted by FINISH itself.
EVENTS = f"""
local JOB_PREFIX, EV_PREFIX, LIVE_PREFIX = '{keys.JOB_PREFIX}', '{keys.JOB_EVENT_LOG_PREFIX}',
  '{keys.JOB_LIVE_PREFIX}'
local function now_ms()
  local t = redis.call('TIME')
  return tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function add(job, ...)
  local id = string.sub(job, #JOB_PREFIX + 1)
  local seq = redis.call('HINCRBY', job, 'ev_seq', 1)
  local entry = redis.call('XADD', EV_PREFIX .. id, 'MAXLEN', '~', {events.MAX_EVENTS_PER_JOB},
                           seq .. '-0', ...)
  redis.call('PUBLISH', LIVE_PREFIX .. id, cjson.encode({{entry, ...}}))
  return entry
end
local function emit(job, ...)
  local entry = add(job, ...)
  local ttl = redis.call('PTTL', job)
  if ttl > 0 then redis.call('PEXPIRE', EV_PREFIX .. string.sub(job, #JOB_PREFIX + 1), ttl) end
  return entry
end
local function route_model(job)
  local f = redis.call('HMGET', job, 'model', 'fallback_models', 'route_index')
  local index = tonumber(f[3] or '') or 0
  if index > 0 and f[2] then
    local ok, fallbacks = pcall(cjson.decode, f[2])
    if ok and type(fallbacks) == 'table' and type(fallbacks[index]) == 'string' then
      return fallbacks[index]
    end
  end
  return f[1] or ''
end
local function announce(job, model)
  local f = redis.call('HMGET', job, 'status', 'attempts', 'waiting_for', 'ev_status')
  if not f[1] then return end
  if not model or model == '' then model = route_model(job) end
  local attempt, waiting = f[2] or '0', f[3] or ''
  local state = f[1] .. '|' .. attempt .. '|' .. waiting .. '|' .. model
  if state == f[4] then return end
  redis.call('HSET', job, 'ev_status', state)
  emit(job, 'e', '{events.STATUS}', 'status', f[1], 'attempt', attempt, 'waiting_for', waiting,
       'model', model, 'at', now_ms())
end
"""


# The model of the call a run is about to make, when it is not the one its claim announced
# (a fallback taken before the first call). KEYS: job   ARGV: token, model → 1, 0 lease lost
ANNOUNCE_MODEL = (
    EVENTS
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running'
   or redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
announce(KEYS[1], ARGV[2])
return 1
"""
)

# Output of the call in progress, only while the writer holds the lease (a cancelled job
# takes no more). KEYS: job   ARGV: token, then events, each as 4 values:
# 'output.delta', attempt, model, text | 'output.reset', attempt, reason, ''
# → 1 written, 0 lease lost (nothing written)
EMIT_OUTPUT = (
    EVENTS
    + f"""
local f = redis.call('HMGET', KEYS[1], 'status', 'lease')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 4 do
  if ARGV[i] == '{events.DELTA}' then
    add(KEYS[1], 'e', ARGV[i], 'attempt', ARGV[i + 1], 'model', ARGV[i + 2], 'text', ARGV[i + 3])
  else
    add(KEYS[1], 'e', ARGV[i], 'attempt', ARGV[i + 1], 'reason', ARGV[i + 2])
  end
end
return 1
"""
)
