"""The ledger's Lua (:mod:`core.cost.ledger`): reserve a call's worst case against a tenant's
budget, settle it to the true cost. Amounts are integer nano-dollars.

A tenant's spend is kept per period in three hashes (this UTC day, this UTC month, all time)
that every call adds to, so usage is known for every period whatever the budget's period.
Reservations not yet settled ("held") are one total per tenant, whatever the period: a call in
flight lands in the period in which it settles.
"""

from __future__ import annotations

# charge(day, month, total, metrics, tenant, model, cost ('' = unpriced), in, out, now, ttls)
# adds one call (or a lapsed reservation) to the three spend hashes and the cost metric.
_CHARGE = """
local function charge(day, month, total, metrics, tenant, model, cost, tin, tout, now,
                      day_ttl, month_ttl)
  for _, key in ipairs({day, month, total}) do
    if cost ~= '' then
      redis.call('HINCRBY', key, 'usd', cost)
      redis.call('HINCRBY', key, model .. '|usd', cost)
    end
    if tonumber(tin) > 0 then redis.call('HINCRBY', key, model .. '|in', tin) end
    if tonumber(tout) > 0 then redis.call('HINCRBY', key, model .. '|out', tout) end
  end
  -- the period's first record sets when it lapses (and, for all time, when it began)
  if redis.call('HINCRBY', day, 'calls', 1) == 1 then redis.call('EXPIRE', day, day_ttl) end
  if redis.call('HINCRBY', month, 'calls', 1) == 1 then
    redis.call('EXPIRE', month, month_ttl)
  end
  if redis.call('HINCRBY', total, 'calls', 1) == 1 then redis.call('HSET', total, 'since', now) end
  if cost ~= '' and tonumber(cost) > 0 then
    redis.call('HINCRBY', metrics, tenant .. '|' .. model, cost)
  end
end

-- give back ``amount`` of reservation ``id`` (all of it when amount is nil): → what was given
-- back and the reservation's model, or nil when there is no such reservation (it lapsed)
local function release(held, until_key, id, amount)
  local entry = redis.call('HGET', held, id)
  if not entry then
    redis.call('ZREM', until_key, id)
    return nil
  end
  local left, model = string.match(entry, '^(%d+)|(.*)$')
  left = tonumber(left)
  local give = left
  if amount then give = math.min(left, tonumber(amount)) end
  redis.call('HINCRBY', held, 'total', -give)
  if left - give <= 0 then
    redis.call('HDEL', held, id)
    redis.call('ZREM', until_key, id)
  else
    redis.call('HSET', held, id, string.format('%d', left - give) .. '|' .. model)
  end
  return give, model
end
"""

# KEYS: budgets, held, held-until, spend day, spend month, spend total, cost metrics
# ARGV: tenant, reservation id, worst nano, now_ms, lapses at (ms), model, day ttl, month ttl,
#       wanted nano (a lease for several calls; at least the worst case), share of the room
#       a lease may take, reservation to give back first ('' = none), amount to give back
# → {'none'} without a budget, else {verdict, spent, held, limit, granted}: 'granted' (held
#   now: the worst case, or up to ``wanted`` for a lease, never more than the share of what
#   is left), 'wait' (fits once calls in flight settle), 'exceeded' (cannot fit this period).
# A reservation whose worker never settled it (it died mid-call) lapses after its call's
# timeout and is charged in full: the provider may have billed it, and a budget is never
# overshot for want of a settle.
RESERVE = (
    _CHARGE
    + """
if ARGV[11] ~= '' then release(KEYS[2], KEYS[3], ARGV[11], ARGV[12]) end
local conf = redis.call('HGET', KEYS[1], ARGV[1])
if not conf then return {'none'} end
local ok, budget = pcall(cjson.decode, conf)
if not ok or type(budget) ~= 'table' or not tonumber(budget.usd) then return {'none'} end
local limit = math.floor(tonumber(budget.usd) * 1000000000 + 0.5)
local spend = KEYS[6]
if budget.period == 'day' then spend = KEYS[4] elseif budget.period == 'month' then
  spend = KEYS[5] end

local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(lapsed) do
  local amount, model = release(KEYS[2], KEYS[3], id, nil)
  if amount then
    charge(KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[1], model, string.format('%d', amount),
           0, 0, ARGV[4], ARGV[7], ARGV[8])
  end
end

local spent = tonumber(redis.call('HGET', spend, 'usd') or '0')
local held = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
local worst = tonumber(ARGV[3])
if spent + worst > limit then return {'exceeded', spent, held, limit, 0} end
local room = limit - spent - held
if room < worst then return {'wait', spent, held, limit, 0} end
local grant = math.min(tonumber(ARGV[9]), math.max(worst, math.floor(room * tonumber(ARGV[10]))))
redis.call('HSET', KEYS[2], ARGV[2], string.format('%d', grant) .. '|' .. ARGV[6])
redis.call('HINCRBY', KEYS[2], 'total', grant)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
return {'granted', spent, held + grant, limit, grant}
"""
)

# KEYS: held, held-until, spend day, spend month, spend total, cost metrics, job
# ARGV: reservation id ('' = none), cost nano ('' = unpriced), model, input tokens,
#       output tokens, now_ms, day ttl, month ttl, tenant, '1' to record the call ('0': only
#       give back), the amount of the reservation to give back ('' = all of it)
# → 1 when a reservation was given back, 0 when there was none (or it had lapsed)
SETTLE = (
    _CHARGE
    + """
local released = 0
local amount = nil
if ARGV[11] ~= '' then amount = ARGV[11] end
if ARGV[1] ~= '' and release(KEYS[1], KEYS[2], ARGV[1], amount) then released = 1 end
if ARGV[10] ~= '1' then return released end
charge(KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[9], ARGV[3], ARGV[2], ARGV[4], ARGV[5],
       ARGV[6], ARGV[7], ARGV[8])
if redis.call('EXISTS', KEYS[7]) == 1 then
  if ARGV[2] ~= '' then
    redis.call('HINCRBY', KEYS[7], 'cost_nano', ARGV[2])
  else
    redis.call('HSET', KEYS[7], 'cost_unpriced', '1')
  end
  if redis.call('HSETNX', KEYS[7], 'cost_model:' .. ARGV[3], '1') == 1 then
    for i = 3, 5 do redis.call('HINCRBY', KEYS[i], ARGV[3] .. '|jobs', 1) end
  end
end
return released
"""
)
