-- Compare-and-set after a fold computed in Python.
-- KEYS[1]: the hash. ARGV: expected version ('' = none), new version, n, then n field/value
-- pairs, then the fields to delete.
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
