"""The answer cache's Lua (:mod:`core.cache.answers`)."""

from __future__ import annotations

# A submission that asked for the cache, answered from it: the job is created already
# succeeded, in one round trip. An entry is "<stored at ms>|<result JSON, cached: true>".
# KEYS: cache entry, job, tenant_jobs, idem, callbacks_scheduled, metrics submitted,
#       metrics finished, metrics cache
# ARGV: id, retention_s, now_ms, use_idem, max age ms, callback due ms ('' = no callback),
#       job key prefix, submitted field, finished field, model, field, value, ...
# → {'hit', field, value, ...} (the new job), {'replay', id} (the Idempotency-Key's job), or
#   false on a miss (nothing stored: the caller creates the job as usual)
CREATE_CACHED = """
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', ARGV[7] .. existing) == 1 then
    return {'replay', existing}
  end
end
local entry = redis.call('GET', KEYS[1])
local at, result
if entry then at, result = string.match(entry, '^(%d+)|(.*)$') end
if not at or tonumber(ARGV[3]) - tonumber(at) > tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[8], ARGV[10] .. '|miss', 1)
  return false
end
local now_s = tostring(tonumber(ARGV[3]) / 1000)
redis.call('HSET', KEYS[2], unpack(ARGV, 11))
redis.call('HSET', KEYS[2], 'status', 'succeeded', 'result', result, 'cost_nano', '0',
           'attempts', '0', 'created_at', now_s, 'started_at', now_s, 'finished_at', now_s)
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]) * 1000)
redis.call('EXPIRE', KEYS[3], ARGV[2])
if ARGV[4] == '1' then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[2]) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1]) end
redis.call('HINCRBY', KEYS[6], ARGV[8], 1)
redis.call('HINCRBY', KEYS[7], ARGV[9], 1)
redis.call('HINCRBY', KEYS[8], ARGV[10] .. '|hit', 1)
local out = redis.call('HGETALL', KEYS[2])
table.insert(out, 1, 'hit')
return out
"""

# Keep a successful answer, within the tenant's byte cap (its soonest-expiring entries go
# first; at most 100 per call).
# KEYS: cache entry, tenant's index (zset digest → expires ms), tenant's sizes (hash)
# ARGV: value, ttl_s, now_ms, max tenant bytes, digest, entry key prefix, index ttl_s
CACHE_PUT = """
local now = tonumber(ARGV[3])
local function forget(digest)
  local size = redis.call('HGET', KEYS[3], digest)
  if size then
    redis.call('HDEL', KEYS[3], digest)
    redis.call('HINCRBY', KEYS[3], 'total', -tonumber(size))
  end
  redis.call('ZREM', KEYS[2], digest)
end
for _, digest in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
  forget(digest)
end
forget(ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]) * 1000, ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], #ARGV[1])
local total = redis.call('HINCRBY', KEYS[3], 'total', #ARGV[1])
local evicted = 0
while total > tonumber(ARGV[4]) and evicted < 100 do
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not first then break end
  forget(first)
  redis.call('DEL', ARGV[6] .. first)
  evicted = evicted + 1
  total = tonumber(redis.call('HGET', KEYS[3], 'total') or '0')
end
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return evicted
"""
