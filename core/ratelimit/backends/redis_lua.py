"""The Lua of :mod:`.redis`: the limiter's two scripts, each run atomically by Redis.

Both start with ``PRELUDE`` (ARGV decoding, the clock, the caps in force) and the algorithm's
own functions; see :mod:`.redis` for the keys and :mod:`.memory` for the same rules in Python.
"""

PRELUDE = """
local PERIOD = tonumber(ARGV[1])
local NOW
if ARGV[2] ~= '' then NOW = tonumber(ARGV[2]) else
  local t = redis.call('TIME'); NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local cfg = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local mif = tonumber(ARGV[5])
local keep = tonumber(ARGV[7])
local function num(x) return string.format('%.17g', x) end
local function caps_now(meta, now)
  local m = redis.call('HMGET', meta, 'learned_requests', 'learned_requests_until',
    'learned_tokens', 'learned_tokens_until')
  local caps = {}
  for i = 1, 2 do
    local c, l, u = cfg[i], tonumber(m[2 * i - 1]), tonumber(m[2 * i])
    if c > 0 and l and u and u > now then c = math.min(c, l) end
    caps[i] = c
  end
  return caps
end
"""

RESERVE = """
local cost = {1, tonumber(ARGV[8])}
local prio = tonumber(ARGV[9])
local waiter, rid = ARGV[10], ARGV[11]
local ttl, share, grace = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local minwait, deflat = tonumber(ARGV[15]), tonumber(ARGV[16])
local forget = tonumber(ARGV[19])
local prompt = tonumber(ARGV[18]) or cost[2]
local output = cost[2] - prompt
local oavg = tonumber(redis.call('HGET', KEYS[8], 'output_avg'))
if oavg then output = math.min(output, oavg) end
local line = {1, prompt + output}
redis.call('SADD', KEYS[9], ARGV[6])
redis.call('HSET', KEYS[8], 'rpm', cfg[1], 'tpm', cfg[2], 'max_in_flight', mif,
  'algorithm', ARGV[17], 'period', ARGV[1])
redis.call('EXPIRE', KEYS[8], keep)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', NOW)
for i = 4, 6 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. num(NOW - forget)) end
local caps = caps_now(KEYS[8], NOW)
local lane = KEYS[4 + prio]
local lo = num(NOW - grace)  -- waiters due before this are late: they keep their place only
local mine = tonumber(redis.call('ZSCORE', lane, waiter))
local total, ahead, due_higher = 0, 0, 0
for q = 0, 2 do
  local n = redis.call('ZCOUNT', KEYS[4 + q], lo, '+inf')
  total = total + n
  if q < prio then
    ahead = ahead + n
    due_higher = due_higher + redis.call('ZCOUNT', KEYS[4 + q], lo, NOW)
  end
end
local others = total
if mine and mine >= NOW - grace then
  others = total - 1
  ahead = ahead + redis.call('ZRANK', lane, waiter) - redis.call('ZCOUNT', lane, '-inf', '(' .. lo)
elseif not mine then
  ahead = ahead + redis.call('ZCOUNT', lane, lo, '+inf')
end
local due_same = 0
if not mine or mine > NOW then due_same = redis.call('ZCOUNT', lane, lo, NOW) end
-- the fair order between tenants in this priority's line (.memory_fair.FairLine.place)
local tenant, weight = ARGV[20] or '', tonumber(ARGV[21]) or 1
local fvt, fwait = KEYS[10 + prio], KEYS[13 + prio]
local tline = ARGV[22] .. prio .. ':' .. tenant
local myvt, behind, head, before, own_ahead, fshare = 0, false, false, 0, 0, 1
if tenant ~= '' then
  redis.call('ZREMRANGEBYSCORE', fwait, '-inf', '(' .. num(NOW))
  redis.call('ZREMRANGEBYSCORE', tline, '-inf', '(' .. num(NOW - forget))
  local waiting = redis.call('ZRANGE', fwait, 0, -1)
  myvt = tonumber(redis.call('HGET', fvt, tenant)) or 0
  local others, low, am_waiting, weights = {}, nil, false, weight
  for _, u in ipairs(waiting) do
    if u == tenant then am_waiting = true else
      local got = redis.call('HMGET', fvt, u, 'w:' .. u, 'c:' .. u)
      local v, w = tonumber(got[1]) or 0, tonumber(got[2]) or 1
      table.insert(others, {v, w, tonumber(got[3]) or 1})
      weights = weights + w
      if not low or v < low then low = v end
    end
  end
  if low and not am_waiting then myvt = math.max(myvt, low) end
  for _, o in ipairs(others) do
    if o[1] < myvt then
      behind = true  -- it waits for the whole calls that bring that tenant level with it
      before = before + math.ceil((myvt - o[1]) * o[2] / o[3] - 1e-9) * o[3]
    end
  end
  head = #others > 0 and not behind
  local flo = num(NOW - grace)
  local due = redis.call('ZSCORE', tline, waiter)
  if due then own_ahead = redis.call('ZCOUNT', tline, flo, '(' .. due)
  else own_ahead = redis.call('ZCOUNT', tline, flo, '+inf') end
  fshare = weights / weight
end
local cd = tonumber(redis.call('GET', KEYS[7])) or 0
local nif = redis.call('ZCARD', KEYS[3])
-- no output seen yet, calls in flight (see the memory backend): each waiter at its prompt alone
local unknown = not oavg and nif > 0
if unknown then line[2] = prompt end
local unit = 1  -- this call in the fair order: its net tokens where a tpm limit applies
if caps[2] > 0 then unit = line[2] end
local reason = ''
if cd > NOW then reason = 'cooldown'
elseif due_higher > 0 then reason = 'priority'
elseif behind then reason = 'fair'
elseif due_same > 0 and not head then reason = 'queue'
elseif mif > 0 and nif >= mif then reason = 'in_flight'
else
  local room = redis.call('HMGET', KEYS[8], 'room', 'room_until')
  if room[1] and tonumber(room[2]) > NOW and nif >= tonumber(room[1]) then reason = 'room' end
end
local names = {'requests', 'tokens'}
local sts, floors = {}, {}
for i = 1, 2 do
  floors[i] = 0
  if prio > 0 and others > 0 then floors[i] = share * caps[i] end
  if caps[i] > 0 then
    sts[i] = alg_load(KEYS[i], caps[i], NOW)
    local need = math.min(cost[i], caps[i] - floors[i]) + floors[i]
    if reason == '' and alg_available(sts[i], NOW, caps[i]) < need then reason = names[i] end
  end
end
if reason == '' then
  for i = 1, 2 do
    if sts[i] then
      alg_add(sts[i], NOW, caps[i], -cost[i])
      alg_save(KEYS[i], sts[i], keep)
    end
  end
  redis.call('ZADD', KEYS[3], NOW + ttl, rid)
  redis.call('EXPIRE', KEYS[3], keep)
  redis.call('ZREM', lane, waiter)
  if tenant ~= '' then
    redis.call('HSET', fvt, tenant, num(myvt + unit / weight), 'c:' .. tenant, num(unit))
    redis.call('ZREM', tline, waiter)
    redis.call('EXPIRE', fvt, keep)
  end
  return {1, '0', 'granted'}
end
local lat = tonumber(redis.call('HGET', KEYS[8], 'latency')) or deflat
local function time_to_hold(st, cap, units)
  local first = alg_wait(st, NOW, cap, math.min(units, cap))
  return first + math.max(0, units - cap) * PERIOD / cap
end
-- refunds the calls in flight give back when they answer (see the memory backend)
local refunds = {0, nif * (cost[2] - line[2])}
local wait = 0
for i = 1, 2 do
  if sts[i] then
    local unit = math.min(cost[i], caps[i] - floors[i])
    local need = ahead * math.min(line[i], unit) + unit + floors[i]
    local w = time_to_hold(sts[i], caps[i], need)
    if refunds[i] > 0 then
      local each = unit
      if unknown then each = line[i] end
      local at_once = ahead * math.min(each, unit) + unit + floors[i] - refunds[i]
      w = math.min(w, math.max(lat, time_to_hold(sts[i], caps[i], at_once)))
    end
    wait = math.max(wait, w)
  end
end
if mif > 0 and nif >= mif then wait = math.max(wait, lat * (ahead + 1) / mif) end
if reason == 'room' then wait = math.max(wait, lat) end
if (head and (reason == 'requests' or reason == 'tokens')) or reason == 'fair' then
  -- its turn in the fair order (see the memory backend)
  local r = 1
  if sts[2] then r = 2 end
  if sts[r] then
    local own = math.min(cost[r], caps[r] - floors[r]) + floors[r]
    local queued = own_ahead * math.min(line[r], own) * fshare
    local turn = time_to_hold(sts[r], caps[r], before + queued + own)
    if reason == 'fair' then wait = turn else wait = math.min(wait, turn) end
  end
end
wait = math.max(wait, cd - NOW, minwait)
redis.call('ZADD', lane, NOW + wait, waiter)
redis.call('EXPIRE', lane, keep)
if tenant ~= '' then
  redis.call('HSET', fvt, tenant, num(myvt), 'w:' .. tenant, num(weight), 'c:' .. tenant,
    num(unit))
  redis.call('EXPIRE', fvt, keep)
  local until_ = NOW + wait + grace
  local old = tonumber(redis.call('ZSCORE', fwait, tenant)) or 0
  if until_ > old then redis.call('ZADD', fwait, until_, tenant) end
  redis.call('EXPIRE', fwait, keep)
  redis.call('ZADD', tline, NOW + wait, waiter)
  redis.call('EXPIRE', tline, keep)
end
return {0, num(wait), reason}
"""

SETTLE = """
local rid = ARGV[8]
local give = {tonumber(ARGV[9]), tonumber(ARGV[10])}
local rem = {tonumber(ARGV[11]), tonumber(ARGV[12])}
local lim = {tonumber(ARGV[13]), tonumber(ARGV[14])}
local cds, lat = tonumber(ARGV[15]), tonumber(ARGV[16])
local share, learn_ttl, maxcd = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
local granted_at = tonumber(redis.call('ZSCORE', KEYS[3], rid))
if granted_at then granted_at = granted_at - tonumber(ARGV[21]) end
redis.call('ZREM', KEYS[3], rid)
local before = caps_now(KEYS[8], NOW)
local fields = {'learned_requests', 'learned_tokens'}
for i = 1, 2 do
  if lim[i] and cfg[i] > 0 then
    if lim[i] < cfg[i] then
      redis.call('HSET', KEYS[8], fields[i], lim[i], fields[i] .. '_until', NOW + learn_ttl)
    else
      redis.call('HDEL', KEYS[8], fields[i], fields[i] .. '_until')
    end
  end
end
local caps = caps_now(KEYS[8], NOW)
local kept = 0
for q = 4, 6 do if redis.call('ZCARD', KEYS[q]) > 0 then kept = share end end
local others = redis.call('ZCOUNT', KEYS[3], '(' .. num(NOW), '+inf')
local calltok = tonumber(ARGV[22]) or 1
local units = {1, calltok}
local elapsed = lat or tonumber(redis.call('HGET', KEYS[8], 'latency')) or 0
local calls = nil
for i = 1, 2 do
  if rem[i] then
    local n = rem[i] / units[i]
    if not calls or n < calls then calls = n end
    rem[i] = rem[i] - others * units[i] + caps[i] / PERIOD * elapsed
  end
end
local untilt = 0
if cds and cds > 0 then
  untilt = NOW + math.min(cds, maxcd)
  local cur = tonumber(redis.call('GET', KEYS[7])) or 0
  if untilt > cur then
    redis.call('SET', KEYS[7], num(untilt), 'PX', math.ceil((untilt - NOW) * 1000))
  end
end
for i = 1, 2 do
  if caps[i] > 0 then
    local st = alg_load(KEYS[i], caps[i], NOW)
    if caps[i] < before[i] then
      local used = before[i] - alg_available(st, NOW, before[i])
      alg_correct(st, NOW, caps[i], caps[i] - used)
    end
    if give[i] ~= 0 then alg_add(st, NOW, caps[i], give[i]) end
    if rem[i] then alg_correct(st, NOW, caps[i], rem[i] + kept * caps[i]) end
    if untilt > NOW then alg_hold(st, NOW, caps[i], untilt, share * caps[i]) end
    alg_save(KEYS[i], st, keep)
  end
end
local room_since = tonumber(redis.call('HGET', KEYS[8], 'room_since')) or 0
if untilt > NOW then
  redis.call('HSET', KEYS[8], 'room', 1, 'room_since', num(NOW), 'room_until',
    num(untilt + PERIOD))
elseif calls and granted_at and granted_at >= room_since then
  redis.call('HSET', KEYS[8], 'room', math.max(1, math.floor(calls)), 'room_until',
    num(NOW + PERIOD))
end
if lat then
  local old = tonumber(redis.call('HGET', KEYS[8], 'latency'))
  if old then lat = 0.8 * old + 0.2 * lat end
  redis.call('HSET', KEYS[8], 'latency', num(lat))
end
local out = tonumber(ARGV[20])
if out then
  local old = tonumber(redis.call('HGET', KEYS[8], 'output_avg'))
  if old then out = 0.8 * old + 0.2 * out end
  redis.call('HSET', KEYS[8], 'output_avg', num(out))
end
return 1
"""
