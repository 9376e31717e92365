"""The audit log's write (:mod:`producers.api.auditlog`): a batch of entries in one call.

Each entry goes to its tenant's stream with the same fields, in the same order, as an
``XADD`` from redis-py would write them; the batch travels as one JSON argument, so the API
encodes one string per batch instead of some twenty arguments per entry. Each stream is
trimmed (newest ``max entries``, nothing older than the retention; both approximate) and its
TTL renewed once per batch.
"""

from __future__ import annotations

# KEYS: the streams the batch writes to
# ARGV: JSON [[stream index (1-based), value, value, ...], ...], max entries, oldest id to
#       keep (ms), retention ms, then the field names the values go with, in order
APPEND = """
for _, entry in ipairs(cjson.decode(ARGV[1])) do
  local args = {}
  for i = 5, #ARGV do
    args[#args + 1] = ARGV[i]
    args[#args + 1] = entry[i - 3]
  end
  redis.call('XADD', KEYS[entry[1]], 'MAXLEN', '~', ARGV[2], '*', unpack(args))
end
for i = 1, #KEYS do
  redis.call('XTRIM', KEYS[i], 'MINID', '~', ARGV[3])
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
return #KEYS
"""
