-- Fast path: merge one batch's integer delta into the counter hash when the hash is at the
-- version just before it (see storage/usage/counters.py for the protocol).
-- KEYS[1]: the hash. ARGV: version, expire-at, metric count, then per metric
-- name, count, total, max ('' = none), latest key ('' = none), latest value.
-- Returns 1 applied, 2 already applied, 0 not applicable here (use the general path).
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
