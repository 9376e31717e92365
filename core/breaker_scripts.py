"""The Lua of the locks (the sweeper's, a callback's delivery) and of the circuit breaker
per provider:model (:mod:`workers.run.breaker`); re-exported by :mod:`core.scripts`."""

from __future__ import annotations

# ---- locks and the circuit breaker ------------------------------------------------------

# KEYS: lock   ARGV: holder, ttl_ms → 1 when ``holder`` has (or keeps) the lock
ACQUIRE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock   ARGV: holder → 1 when ``holder`` held the lock and gave it up
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The streak breaker (COURIER_BREAKER=streak, the only one before 2026-12-07).
# KEYS: breaker  ARGV: threshold, open_until → 1 when this failure opened the circuit
RECORD_FAILURE = """
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], 3600)
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', ARGV[2])
  return 1
end
return 0
"""

# The rate breaker (workers.run.breaker): closed → open when failures reach ``rate`` of the
# calls started in the last ``window_s`` (10 buckets; ``min_calls`` at least) → half-open after
# ``cooldown`` s: ``probes`` let through, closed when all succeed, open when one fails. Redis'
# clock. KEYS: breaker, breakers (model → state), transitions; ARGV[1..3]: model, "model|", ttl
BREAKER_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local B, ttl = KEYS[1], tonumber(ARGV[3])
local function moved(state)
  redis.call('HINCRBY', KEYS[3], ARGV[2] .. state, 1)
  if state == 'closed' then redis.call('HDEL', KEYS[2], ARGV[1])
  else redis.call('HSET', KEYS[2], ARGV[1], state) end
end
local function ms(s) return math.max(0, math.ceil(s * 1000)) end
"""

# ARGV[4..]: calls started (less those that turned out not to count: may be < 0), failures,
#            probe ('' | ok | fail | release), window_s, min_calls, rate, cooldown_s, probes
# → {state, ms, changed}: 0 closed | 1 open (ms: left) | 2 half-open; changed 1: opened, 2: closed
BREAKER_RECORD = (
    BREAKER_COMMON
    + """
local state, open_until_ = unpack(redis.call('HMGET', B, 'state', 'open_until'))
local probe, cooldown = ARGV[6], tonumber(ARGV[10])
local function open()
  redis.call('DEL', B); redis.call('HSET', B, 'state', 'open', 'open_until', now + cooldown)
  redis.call('EXPIRE', B, ttl); moved('open'); return {1, ms(cooldown), 1}
end
if state == 'half_open' and probe == 'fail' then return open() end
if state == 'half_open' and probe == 'release' then
  redis.call('HSET', B, 'probes', math.max(0, redis.call('HINCRBY', B, 'probes', -1)))
elseif state == 'half_open' and probe == 'ok' then
  if redis.call('HINCRBY', B, 'probe_ok', 1) >= tonumber(ARGV[11]) then
    redis.call('DEL', B); moved('closed'); return {0, 0, 2}
  end
end
if state == 'open' then return {1, ms(tonumber(open_until_) - now), 0} end
if state == 'half_open' then return {2, 0, 0} end  -- else: a call from before it opened
local calls, fails = tonumber(ARGV[4]), tonumber(ARGV[5])
if calls == 0 and fails == 0 then return {0, 0, 0} end
local bucket = math.floor(now * 10 / tonumber(ARGV[7])); local slot = bucket % 10
if tonumber(redis.call('HGET', B, 't' .. slot)) ~= bucket then
  redis.call('HSET', B, 't' .. slot, bucket, 'c' .. slot, 0, 'f' .. slot, 0)
end
redis.call('HINCRBY', B, 'c' .. slot, calls); redis.call('HINCRBY', B, 'f' .. slot, fails)
redis.call('EXPIRE', B, ttl)
if fails == 0 then return {0, 0, 0} end
local c, f = 0, 0
for i = 0, 9 do
  local ti, ci, fi = unpack(redis.call('HMGET', B, 't' .. i, 'c' .. i, 'f' .. i))
  if ti and tonumber(ti) > bucket - 10 then c, f = c + tonumber(ci), f + tonumber(fi) end
end
c = math.max(c, f)  -- failures of calls started before the window
if c >= tonumber(ARGV[8]) and f >= tonumber(ARGV[9]) * c then return open() end
return {0, 0, 0}
"""
)

# ARGV[4..]: probes let through at once, probe_timeout_s (unanswered this long: given up)
# → {state, ms}: 0 closed | 1 open (ms: left) | 2 half-open with its probes out (ms: until
#   they are given up) | 3 half-open and this call is a probe
BREAKER_ADMIT = (
    BREAKER_COMMON
    + """
local state, open_until_, probes, deadline =
  unpack(redis.call('HMGET', B, 'state', 'open_until', 'probes', 'probe_deadline'))
if state ~= 'open' and state ~= 'half_open' then return {0, 0} end
local left = (tonumber(open_until_) or 0) - now
if state == 'open' and left > 0 then return {1, ms(left)} end
if state == 'open' or now > tonumber(deadline) then
  if state == 'open' then moved('half_open') end
  probes, deadline = 0, now + tonumber(ARGV[5])
  redis.call('HSET', B, 'state', 'half_open', 'probes', 0, 'probe_ok', 0,
    'probe_deadline', deadline); redis.call('EXPIRE', B, ttl)
end
if tonumber(probes) >= tonumber(ARGV[4]) then return {2, ms(tonumber(deadline) - now)} end
redis.call('HINCRBY', B, 'probes', 1); return {3, 0}
"""
)
