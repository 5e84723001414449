-- Replace the state with a PostgreSQL snapshot unless the hash is already newer; staged
-- deltas stay (the caller folds those after the snapshot's version).
-- KEYS[1]: the hash. ARGV: version, expire-at, n, then n field/value pairs.
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
