"""The Lua scripts behind the Redis counters (see `storage.usage.counters` for the protocol).

Each runs atomically on one hash (one `{customer}` slot, so they are Redis Cluster safe).
`_p` counts the staged deltas (`pend:<version>` fields) so the fast path can tell, without
listing the hash, that it must leave ordering to the general path.
"""

# Fast path. KEYS[1]: the hash. ARGV: version, expire-at, metric count, then per metric
# name, count, total, max ('' = none), latest key ('' = none), latest value.
# Returns 1 applied, 2 already applied, 0 not applicable here (use the general path).
FAST = """
local function cmp(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then return na and -1 or 1 end
  local x = na and string.sub(a, 2) or a
  local y = nb and string.sub(b, 2) or b
  local r = 0
  if #x ~= #y then r = (#x < #y) and -1 or 1
  elseif x ~= y then r = (x < y) and -1 or 1 end
  if na then r = -r end
  return r
end
local key = KEYS[1]
local version = tonumber(ARGV[1])
local current = redis.call('HGET', key, '_v')
if current then
  current = tonumber(current)
  if current >= version then return 2 end
  if current ~= version - 1 then return 0 end
elseif version ~= 1 or redis.call('EXISTS', key) == 1 then
  return 0
end
if tonumber(redis.call('HGET', key, '_p') or '0') > 0 then return 0 end
local count = tonumber(ARGV[3])
for i = 0, count - 1 do
  local b = 4 + i * 6
  local m = ARGV[b]
  if redis.call('HEXISTS', key, 'j:' .. m) == 1 then return 0 end
  local total = redis.call('HGET', key, 's:' .. m) or '0'
  if #total > 15 or #ARGV[b + 2] > 15 then return 0 end
end
for i = 0, count - 1 do
  local b = 4 + i * 6
  local m = ARGV[b]
  redis.call('HINCRBY', key, 'n:' .. m, ARGV[b + 1])
  redis.call('HINCRBY', key, 's:' .. m, ARGV[b + 2])
  if ARGV[b + 3] ~= '' then
    local old = redis.call('HGET', key, 'x:' .. m)
    if not old or cmp(ARGV[b + 3], old) > 0 then redis.call('HSET', key, 'x:' .. m, ARGV[b + 3]) end
  end
  if ARGV[b + 4] ~= '' then
    local old = redis.call('HGET', key, 't:' .. m)
    if not old or ARGV[b + 4] > old then
      redis.call('HSET', key, 't:' .. m, ARGV[b + 4], 'l:' .. m, ARGV[b + 5])
    end
  end
end
redis.call('HSET', key, '_v', version)
redis.call('EXPIREAT', key, ARGV[2])
return 1
"""

# Stage a delta under its version (idempotent). ARGV: version, payload, expire-at.
STAGE = """
local current = redis.call('HGET', KEYS[1], '_v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
if redis.call('HSETNX', KEYS[1], 'pend:' .. ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], '_p', 1)
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"""

# Compare-and-set after a fold. ARGV: expected version ('' = none), new version, n, then n
# field/value pairs, then the fields to delete.
CAS = """
local current = redis.call('HGET', KEYS[1], '_v') or ''
if current ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local staged = 0
while i <= #ARGV do
  if string.sub(ARGV[i], 1, 5) == 'pend:' then
    staged = staged + redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
  i = i + 1
end
if staged > 0 then redis.call('HINCRBY', KEYS[1], '_p', -staged) end
redis.call('HSET', KEYS[1], '_v', ARGV[2])
return 1
"""

# Replace the state with a PostgreSQL snapshot unless the hash is already newer; staged
# deltas stay (the caller folds those after the snapshot's version).
# ARGV: version, expire-at, n, then n field/value pairs.
LOAD = """
local current = redis.call('HGET', KEYS[1], '_v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
local fields = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(fields) do
  if string.sub(f, 1, 5) ~= 'pend:' and f ~= '_p' then redis.call('HDEL', KEYS[1], f) end
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], '_v', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"""
